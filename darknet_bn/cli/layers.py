"""``darknet-bn layers CFG [--weights W] [--flavor F] [--fork K] [--batch B]``: the layer table in the
spirit of Darknet's printout (index, type, filters, size/stride, input -> output), each layer's own
``batch_normalize`` flag, the inner layers of recurrent layers as sub-rows with theirs, BN layers marked,
and with weights the mean |scales| and mean rolling_variance of each BN layer. The header says whose
rules read the cfg and why; every key those rules ignore is listed (``ignored:`` lines).

Whose rules read the cfg: ``--fork`` if given, else ``--flavor``'s fork if given, else the fork detected
from the cfg (:func:`darknet_bn.darknet.detect_fork`). A missing file, a bad cfg or a weights file that
does not match prints one line on stderr and returns exit code 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..darknet import FORKS, DarknetLayer, Network
from .common import add_flavor_option, error, load_or_error

__all__ = ["add_layers_parser", "cmd_layers", "format_layers", "format_ignored", "summary"]


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
    return f"{layer.w:4d} x{layer.h:4d} x{layer.c:4d} -> {layer.out_w:4d} x{layer.out_h:4d} x{layer.out_c:4d}"


def format_layers(net: Network) -> str:
    """The network's layer table as text (see ``darknet-bn layers``): per layer its index, type, filters,
    size/stride, input -> output, ``bnf`` (its own ``batch_normalize`` flag, as Darknet stores it) and
    ``BN`` (``bn`` where a batch normalization runs: a ``[batchnorm]``, a convolutional or connected layer
    with the flag). The inner layers of recurrent layers follow as sub-rows (``.input_layer``, ``.uf``...)
    with their own flag and mark."""
    with_w = net.header is not None
    head = f"{'layer':>5}  {'type':<15} {'filters':>9}  {'size/strd':<13} {'input':>16}    {'output':<16} {'bnf':>3} BN"
    if with_w:
        head += f"  {'mean|scales|':>12} {'mean(rolling_var)':>17}"
    lines = [head]
    bn_of: dict = {}
    for bn in net.bn_layers:
        bn_of[(bn.index, bn.part)] = bn

    def row(label: str, kind: str, layer: DarknetLayer, key: tuple) -> str:
        bn = bn_of.get(key)
        line = (
            f"{label:>5}  {kind:<15} {_filters(layer):>9}  {_size(layer):<13} {_io(layer)} "
            f"{layer.batch_normalize:>3} {'bn' if bn else '':<2}"
        )
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


def summary(net: Network) -> str:
    s = (
        f"{net.name}: {net.rules}; input {net.w}x{net.h}x{net.c}, batch {net.batch}, "
        f"{len(net.layers)} layers, {len(net.bn_layers)} BN layers"
    )
    if net.header is not None:
        hd = net.header
        s += (
            f"; weights {net.weights_file} (version {hd.major}.{hd.minor}.{hd.revision}, seen {hd.seen}"
            + (", connected weights transposed" if hd.transpose else "")
            + ")"
        )
    return s


def cmd_layers(args: argparse.Namespace) -> int:
    """``darknet-bn layers``: print the table; 2 on a missing file, a bad cfg or mismatched weights."""
    if args.batch is not None and args.batch < 1:
        return error(f"--batch: expected a count >= 1, got {args.batch}")
    net = load_or_error(args.cfg, args.weights, args.batch, args.flavor, args.allow_trailing, args.fork)
    if isinstance(net, int):
        return net
    print(summary(net) + f"; BN flavor {net.flavor.name}")
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
    p = subparsers.add_parser(
        "layers",
        help="print a Darknet cfg's layers and BN layers (with weights: their statistics)",
        description="Build the network of a Darknet .cfg by one fork's rules and print its layers as Darknet "
        "does (index, type, filters, size/stride, input -> output), marking the batch-normalization "
        "layers; with --weights, each BN layer's mean |scales| and mean rolling_variance.",
    )
    p.add_argument("cfg", metavar="CFG", help="the .cfg file")
    p.add_argument("--weights", metavar="W", help="a .weights file for the cfg")
    add_flavor_option(
        p,
        None,
        help="the BN layers' flavor; without --fork also whose rules read the cfg (pjreddie: "
        "pjreddie's Darknet; alexeyab, torch: AlexeyAB's). Default: the rules detected from the cfg "
        "(a section, key or value only AlexeyAB's Darknet reads means AlexeyAB's, else pjreddie's) "
        "and that fork's flavor",
    )
    p.add_argument(
        "--fork",
        default=None,
        choices=FORKS,
        help="whose rules read the cfg (wins over --flavor; default: --flavor's fork, else detected)",
    )
    p.add_argument("--batch", type=int, metavar="B", default=1, help="batch size (default: 1)")
    p.add_argument("--allow-trailing", action="store_true", help="accept bytes after the last array of W")
    p.add_argument(
        "--warnings",
        action="store_true",
        help="list the cfg's other warnings (lossy numbers...) on stderr; the ignored keys are always listed",
    )
    p.set_defaults(func=cmd_layers, parser=p)
    return p
