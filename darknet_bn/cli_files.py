"""The command-line side of Darknet's files: ``darknet-bn layers`` and ``darknet-bn bench --cfg``.

- ``darknet-bn layers CFG [--weights W] [--flavor F] [--fork K] [--batch B]``: the layer table in the
  spirit of Darknet's printout (index, type, filters, size/stride, input -> output), each layer's own
  ``batch_normalize`` flag, the inner layers of recurrent layers as sub-rows with theirs, BN layers
  marked, and with weights the mean |scales| and mean rolling_variance of each BN layer. The header says
  whose rules read the cfg and why; every key those rules ignore is listed (``ignored:`` lines).
- ``darknet-bn bench --cfg CFG [--batch B] [--fork K]``: times darknet_bn's passes on every BN layer of the
  network (each distinct shape once, with :func:`darknet_bn.bench.run`), per layer and in total.

Whose rules read the cfg: ``--fork`` if given, else ``--flavor``'s fork if given, else the fork detected
from the cfg (:func:`darknet_bn.darknet.detect_fork`).

A missing file, a bad cfg or a weights file that does not match prints one line on stderr and returns
exit code 2. The functions here are wired into ``darknet_bn.cli`` (see :func:`add_layers_parser`,
:func:`add_bench_cfg_arguments`, :func:`cmd_bench_cfg`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .darknet import (FORKS, BNLayer, DarknetCfgError, DarknetCfgWarning, DarknetLayer, DarknetWeightsError, Network,
                      load_network)

__all__ = ["add_layers_parser", "cmd_layers", "format_layers", "add_bench_cfg_arguments", "cmd_bench_cfg",
           "bench_cfg", "format_bench_cfg", "CfgBench", "load_or_error"]

PROG = "darknet-bn"


def _error(message: str) -> int:
    """One line on stderr, exit code 2."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def load_or_error(cfg: str, weights: str | None, batch: int | None, flavor: str | None,
                  allow_trailing: bool = False, fork: str | None = None) -> Network | int:
    """:func:`~darknet_bn.darknet.load_network`, or the exit code 2 after one line on stderr when a file
    is missing or unreadable, the cfg is bad or the weights do not match. The ignored keys are not
    emitted as Python warnings here (the commands print them as lines)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DarknetCfgWarning)
            return load_network(cfg, weights, batch=batch, flavor=flavor, fork=fork, allow_trailing=allow_trailing)
    except (DarknetCfgError, DarknetWeightsError) as e:
        return _error(str(e))
    except OSError as e:
        name = e.filename if e.filename is not None else cfg
        return _error(f"cannot read {name}: {e.strerror or e}")


# ------------------------------------------------------------------------------------------------
# darknet-bn layers

def _size(layer: DarknetLayer) -> str:
    t = layer.type
    if t == "convolutional":
        s = f"{layer.size:2d} x{layer.size:2d}/{layer.stride:2d}"
        if layer.stride_x is not None and layer.stride_x != layer.stride_y:
            s = f"{layer.size:2d} x{layer.size:2d}/{layer.stride_x}x{layer.stride_y}"
        if layer.dilation and layer.dilation > 1:
            s += f"({layer.dilation})"
        return s
    if t in ("maxpool", "local_avgpool"):
        e = layer.extras
        st = f"{e['stride_x']:2d}" if e["stride_x"] == e["stride_y"] else f"{e['stride_x']}x{e['stride_y']}"
        return f"{e['size']:2d} x{e['size']:2d}/{st}"
    if t in ("upsample", "reorg", "reorg_old"):
        return f"     {layer.extras['stride']:2d}x"
    return ""


def _filters(layer: DarknetLayer) -> str:
    if layer.type == "convolutional":
        return f"{layer.n}" if layer.groups == 1 else f"{layer.n}/{layer.groups}"
    if layer.type in ("route", "shortcut", "scale_channels", "sam", "contrastive"):
        return " ".join(str(i) for i in layer.input_layers)
    return ""


def _io(layer: DarknetLayer) -> str:
    image = (layer.w and layer.h and layer.c) or (layer.out_w and layer.out_h and layer.out_c)
    if layer.type in ("connected", "rnn", "gru", "lstm") or not image:
        return f"{layer.inputs:>16d} -> {layer.outputs:<16d}"
    return (f"{layer.w:4d} x{layer.h:4d} x{layer.c:4d} -> {layer.out_w:4d} x{layer.out_h:4d} x{layer.out_c:4d}")


def format_layers(net: Network) -> str:
    """The network's layer table as text (see ``darknet-bn layers``): per layer its index, type, filters,
    size/stride, input -> output, ``bnf`` (its own ``batch_normalize`` flag, as Darknet stores it) and
    ``BN`` (``bn`` where a batch normalization runs: a ``[batchnorm]``, a convolutional or connected layer
    with the flag). The inner layers of recurrent layers follow as sub-rows (``.input_layer``, ``.uf``...)
    with their own flag and mark."""
    with_w = net.header is not None
    head = (f"{'layer':>5}  {'type':<15} {'filters':>9}  {'size/strd':<13} {'input':>16}    {'output':<16} "
            f"{'bnf':>3} BN")
    if with_w:
        head += f"  {'mean|scales|':>12} {'mean(rolling_var)':>17}"
    lines = [head]
    bn_of: dict = {}
    for bn in net.bn_layers:
        bn_of[(bn.index, bn.part)] = bn

    def row(label: str, kind: str, layer: DarknetLayer, key: tuple) -> str:
        bn = bn_of.get(key)
        line = (f"{label:>5}  {kind:<15} {_filters(layer):>9}  {_size(layer):<13} {_io(layer)} "
                f"{layer.batch_normalize:>3} {'bn' if bn else '':<2}")
        if with_w and bn is not None:
            sc = np.abs(np.asarray(bn.scales, dtype=np.float64))
            rv = np.asarray(bn.rolling_variance, dtype=np.float64)
            line += f"  {sc.mean():12.4g} {rv.mean():17.4g}"
        return line.rstrip()

    for layer in net.layers:
        lines.append(row(f"{layer.index}", layer.type, layer, (layer.index, None)))
        for pname, part in layer.parts.items():
            lines.append(row("", f" .{pname}", part, (layer.index, pname)))
    return "\n".join(lines)


def format_ignored(net: Network) -> list:
    """One line per key the network's fork ignores (file:line: section key=value: why)."""
    return [f"ignored: {k.message}" for k in net.cfg.ignored]


def _summary(net: Network) -> str:
    s = (f"{net.name}: {net.rules}; input {net.w}x{net.h}x{net.c}, batch {net.batch}, "
         f"{len(net.layers)} layers, {len(net.bn_layers)} BN layers")
    if net.header is not None:
        hd = net.header
        s += (f"; weights {net.weights_file} (version {hd.major}.{hd.minor}.{hd.revision}, seen {hd.seen}"
              + (", connected weights transposed" if hd.transpose else "") + ")")
    return s


def cmd_layers(args: argparse.Namespace) -> int:
    """``darknet-bn layers``: print the table; 2 on a missing file, a bad cfg or mismatched weights."""
    if args.batch is not None and args.batch < 1:
        return _error(f"--batch: expected a count >= 1, got {args.batch}")
    net = load_or_error(args.cfg, args.weights, args.batch, args.flavor, args.allow_trailing, args.fork)
    if isinstance(net, int):
        return net
    print(_summary(net) + f"; BN flavor {net.flavor.name}")
    print(format_layers(net))
    ignored = format_ignored(net)
    for line in ignored:
        print(line)
    others = [w for w in net.warnings if w not in {k.message for k in net.cfg.ignored}]
    if others:
        if args.warnings:
            for w in others:
                print(f"warning: {w}", file=sys.stderr)
        else:
            print(f"{len(others)} other warning(s) about the cfg (--warnings lists them)", file=sys.stderr)
    return 0


def add_layers_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``darknet-bn layers`` on ``subparsers`` (``func=cmd_layers``, ``parser`` set)."""
    from .flavors import FLAVORS

    p = subparsers.add_parser(
        "layers", help="print a Darknet cfg's layers and BN layers (with weights: their statistics)",
        description="Build the network of a Darknet .cfg by one fork's rules and print its layers as Darknet "
                    "does (index, type, filters, size/stride, input -> output), marking the batch-normalization "
                    "layers; with --weights, each BN layer's mean |scales| and mean rolling_variance.")
    p.add_argument("cfg", metavar="CFG", help="the .cfg file")
    p.add_argument("--weights", metavar="W", help="a .weights file for the cfg")
    p.add_argument("--flavor", default=None, choices=sorted(FLAVORS),
                   help="the BN layers' flavor; without --fork also whose rules read the cfg (pjreddie: "
                        "pjreddie's Darknet; alexeyab, torch: AlexeyAB's). Default: the rules detected from the cfg "
                        "(a section, key or value only AlexeyAB's Darknet reads means AlexeyAB's, else pjreddie's) "
                        "and that fork's flavor")
    p.add_argument("--fork", default=None, choices=FORKS,
                   help="whose rules read the cfg (wins over --flavor; default: --flavor's fork, else detected)")
    p.add_argument("--batch", type=int, metavar="B", default=1, help="batch size (default: 1)")
    p.add_argument("--allow-trailing", action="store_true", help="accept bytes after the last array of W")
    p.add_argument("--warnings", action="store_true", help="list the cfg's other warnings (lossy numbers...) on "
                   "stderr; the ignored keys are always listed")
    p.set_defaults(func=cmd_layers, parser=p)
    return p


# ------------------------------------------------------------------------------------------------
# darknet-bn bench --cfg

@dataclass
class CfgBench:
    """What :func:`bench_cfg` measured: the network, the peers, the passes, ``results`` (one
    :class:`darknet_bn.bench.Result` per distinct shape and pass), ``by_shape`` ((shape, pass) ->
    Result), ``timed`` (the BN layers timed) and ``skipped`` (those with batch*h*w = 1, where a training
    forward is undefined)."""

    net: Network
    peers: list
    passes: tuple
    results: list
    by_shape: dict = field(default_factory=dict)
    timed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def layer_ms(self, bn: BNLayer, pass_: str, impl: str = "ours") -> float:
        """Median ms of one pass on this BN layer's shape for an implementation."""
        return self.by_shape[(bn.shape, pass_)].median_ms[impl]

    def total_ms(self, pass_: str, impl: str = "ours") -> float:
        """The pass summed over the timed BN layers (ms per network pass)."""
        return sum(self.layer_ms(bn, pass_, impl) for bn in self.timed)


def bench_cfg(cfg: str, *, batch: int = 1, flavor: str | None = None, weights: str | None = None,
              threads: int | None = None, repeat: int | None = None, peers: Sequence[str] = (),
              passes: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
              fork: str | None = None) -> CfgBench:
    """Time darknet_bn (and ``peers``) on every BN layer of a cfg's network.

    Args:
        cfg: the .cfg (path or text); weights: an optional .weights file (the values do not change the
            timings; it is checked against the cfg).
        batch: images per batch; flavor: the BN flavor timed (``None``: ``"torch"``); given, also whose
            rules read the cfg when ``fork`` is not (``"torch"``, ``"alexeyab"`` -> AlexeyAB's,
            ``"pjreddie"`` -> pjreddie's).
        fork: whose rules read the cfg; with neither ``fork`` nor ``flavor`` they are detected from the
            cfg (:func:`darknet_bn.darknet.detect_fork`).
        threads: darknet_bn's threads (``None``: unchanged); repeat: rounds per shape and pass
            (``None``: bench's default by size); peers: among ``darknet_bn.bench.PEERS``; passes:
            default ``darknet_bn.bench.PASSES``.

    Returns:
        A :class:`CfgBench`. Each distinct (batch, c, h, w) is timed once.

    Raises:
        DarknetCfgError, DarknetWeightsError, OSError: as :func:`~darknet_bn.darknet.load_network`;
        ValueError: a network without BN layers, an unknown peer.
    """
    from . import bench, kernels

    net = load_network(cfg, weights, batch=batch, flavor=flavor, fork=fork)
    flavor = flavor if flavor is not None else "torch"
    if not net.bn_layers:
        raise ValueError(f"{net.name}: the network has no batch-normalization layer to time")
    timed = [bn for bn in net.bn_layers if bn.batch * bn.h * bn.w >= 2]
    if not timed:
        raise ValueError(f"{net.name}: every BN layer has batch*h*w = 1 at batch {net.batch}, where a training "
                         "forward is undefined; use a batch of 2 or more")
    unknown = [p for p in peers if p not in bench.PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(bench.PEERS)}")
    if threads is not None:
        kernels.set_num_threads(threads)
    shapes = list(dict.fromkeys(bn.shape for bn in timed))
    passes = tuple(passes) if passes is not None else tuple(bench.PASSES)
    kw = {} if passes == tuple(bench.PASSES) else {"passes": passes}
    results = bench.run(shapes, list(peers), rounds=repeat, flavor=flavor, progress=progress, **kw)
    out = CfgBench(net, list(peers), passes, results, timed=timed,
                   skipped=[bn for bn in net.bn_layers if bn not in timed])
    out.by_shape = {(tuple(r.shape), r.pass_): r for r in results}
    return out


def format_bench_cfg(res: CfgBench) -> str:
    """Per BN layer: its shape, our median ms per pass, each peer's time / ours over the passes; then
    the totals over the network (ms per network pass)."""
    passes, peers = res.passes, res.peers
    names = {id(bn): bn.name for bn in res.timed}
    wn = max([len("layer")] + [len(v) for v in names.values()])
    head = f"{'layer':<{wn}} {'BxCxHxW':>18}" + "".join(f" {p + ' ms':>13}" for p in passes)
    head += "".join(f" {('x ' + p):>8}" for p in peers)
    lines = [head, "-" * len(head)]
    for bn in res.timed:
        ours = [res.layer_ms(bn, p) for p in passes]
        line = f"{names[id(bn)]:<{wn}} {'x'.join(map(str, bn.shape)):>18}" + "".join(f" {v:13.4f}" for v in ours)
        for peer in peers:
            theirs = sum(res.layer_ms(bn, p, peer) for p in passes)
            line += f" {theirs / sum(ours):8.2f}"
        lines.append(line)
    lines.append("-" * len(head))
    tot = [res.total_ms(p) for p in passes]
    line = f"{'total':<{wn}} {str(len(res.timed)) + ' layers':>18}" + "".join(f" {v:13.3f}" for v in tot)
    for peer in peers:
        line += f" {sum(res.total_ms(p, peer) for p in passes) / sum(tot):8.2f}"
    lines.append(line)
    lines.append("")
    if res.skipped:
        lines.append(f"not timed: {', '.join(bn.name for bn in res.skipped)} (batch*h*w = 1: a training forward is "
                     "undefined; use --batch 2 or more)")
    lines.append(f"ms: medians of interleaved rounds per distinct shape ({len(res.results) // len(passes)} here); "
                 "total = the sum over the BN layers (one network pass)"
                 + ("; x peer = the peer's time / ours over the passes" if peers else ""))
    return "\n".join(lines)


class _DefaultFlavor(str):
    """The bench parser's default ``--flavor`` ("torch"), told apart from an explicit ``--flavor torch``."""


_DEFAULT_FLAVOR = _DefaultFlavor("torch")


def _flavor_given(args: argparse.Namespace) -> str | None:
    f = getattr(args, "flavor", None)
    return None if f is None or f is _DEFAULT_FLAVOR else str(f)


def add_bench_cfg_arguments(bench_parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg CFG``, ``--weights W``, ``--batch B`` and ``--fork K`` to the ``darknet-bn bench``
    parser (its ``--flavor`` default stays ``"torch"``, marked so that ``--cfg`` can tell it was not
    given)."""
    bench_parser.set_defaults(flavor=_DEFAULT_FLAVOR)
    bench_parser.add_argument("--cfg", metavar="CFG", help="time every BN layer of this Darknet .cfg's network "
                              "instead of the shape table (its rules: --fork, else --flavor's fork when given, "
                              "else detected from the cfg)")
    bench_parser.add_argument("--fork", default=None, choices=FORKS,
                              help="with --cfg: whose rules read the cfg (default: --flavor's fork when given, "
                                   "else detected from the cfg)")
    bench_parser.add_argument("--weights", metavar="W", help="with --cfg: a .weights file checked against the cfg")
    bench_parser.add_argument("--batch", type=int, default=1, metavar="B", help="with --cfg: batch size (default 1)")


def cmd_bench_cfg(args: argparse.Namespace) -> int:
    """``darknet-bn bench --cfg``: reads ``cfg, weights, batch, flavor, threads, repeat, compare, json,
    plot`` (and ``shape``, ``renorm`` when present) from ``args``; 2 on bad arguments, a missing file, a
    bad cfg or mismatched weights."""
    from . import bench
    from .cli import _Progress, bench_options

    if getattr(args, "shape", None):
        return _error("--shape and --cfg exclude each other")
    if args.batch is not None and args.batch < 1:
        return _error(f"--batch: expected a count >= 1, got {args.batch}")
    try:
        peers, notes, threads = bench_options(args)
    except ValueError as e:
        return _error(str(e))
    flavor = _flavor_given(args)
    net = load_or_error(args.cfg, args.weights, args.batch, flavor, fork=getattr(args, "fork", None))
    if isinstance(net, int):
        return net
    flavor = flavor or "torch"
    if not net.bn_layers:
        return _error(f"{net.name}: the network has no batch-normalization layer to time")
    if not any(bn.batch * bn.h * bn.w >= 2 for bn in net.bn_layers):
        return _error(f"{net.name}: every BN layer has batch*h*w = 1 at batch {net.batch}, where a training forward "
                      "is undefined; use --batch 2 or more")
    passes = tuple(bench.PASSES) + (tuple(getattr(bench, "RENORM_PASSES", ())) if getattr(args, "renorm", False)
                                    else ())
    shapes = list(dict.fromkeys(bn.shape for bn in net.bn_layers if bn.batch * bn.h * bn.w >= 2))
    total = sum(len(passes) * (args.repeat or bench.default_rounds(s)) for s in shapes)
    bar = _Progress(total, "bench --cfg")
    try:
        res = bench_cfg(net.cfg, batch=net.batch, flavor=flavor, fork=net.fork, repeat=args.repeat, peers=peers,
                        passes=passes, progress=bar.update)
    finally:
        bar.close()
    info = bench.machine_info(threads)
    print(f"darknet-bn bench --cfg: {_summary(net)}")
    for line in format_ignored(net):
        print(line)
    print(f"flavor {flavor} timed, {threads} thread(s), {info['isa']}, triad bandwidth "
          f"{min(r.triad_gbs for r in res.results):.1f}-{max(r.triad_gbs for r in res.results):.1f} GB/s")
    for n in notes:
        print("note:", n)
    print(format_bench_cfg(res))
    if getattr(args, "json", None):
        data = {"machine": info, "cfg": net.name, "fork": net.fork, "rules": net.rules, "flavor": flavor,
                "batch": net.batch,
                "layers": [{"index": bn.index, "type": bn.type, "part": bn.part, "shape": list(bn.shape),
                            "median_ms": {p: {impl: res.layer_ms(bn, p, impl) for impl in ["ours", *peers]}
                                          for p in passes}} for bn in res.timed],
                "not_timed": [bn.name for bn in res.skipped],
                "total_ms": {p: {impl: res.total_ms(p, impl) for impl in ["ours", *peers]} for p in passes},
                "results": [r.as_dict() for r in res.results]}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if getattr(args, "plot", None):
        bench.plot(args.plot, res.results, peers)
    return 0

