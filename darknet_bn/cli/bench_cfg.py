"""``darknet-bn bench --cfg CFG [--weights W] [--batch B] [--fork K]``: darknet_bn's passes timed on every
BN layer of a Darknet network (:func:`darknet_bn.bench.bench_cfg`), per layer and in total.

Whose rules read the cfg: ``--fork`` if given, else ``--flavor``'s fork if given, else the fork detected
from the cfg. A missing file, a bad cfg or a weights file that does not match prints one line on stderr
and returns exit code 2.
"""

from __future__ import annotations

import argparse
import json

from .. import bench
from ..darknet import FORKS
from .common import Progress, bench_options, error, load_or_error
from .layers import format_ignored, summary

__all__ = ["add_bench_cfg_arguments", "cmd_bench_cfg"]


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
    bench_parser.add_argument(
        "--cfg",
        metavar="CFG",
        help="time every BN layer of this Darknet .cfg's network "
        "instead of the shape table (its rules: --fork, else --flavor's fork when given, "
        "else detected from the cfg)",
    )
    bench_parser.add_argument(
        "--fork",
        default=None,
        choices=FORKS,
        help="with --cfg: whose rules read the cfg (default: --flavor's fork when given, else detected from the cfg)",
    )
    bench_parser.add_argument("--weights", metavar="W", help="with --cfg: a .weights file checked against the cfg")
    bench_parser.add_argument("--batch", type=int, default=1, metavar="B", help="with --cfg: batch size (default 1)")


def cmd_bench_cfg(args: argparse.Namespace) -> int:
    """``darknet-bn bench --cfg``: reads ``cfg, weights, batch, flavor, threads, repeat, compare, json,
    plot`` (and ``shape``, ``renorm`` when present) from ``args``; 2 on bad arguments, a missing file, a
    bad cfg or mismatched weights."""
    if getattr(args, "shape", None):
        return error("--shape and --cfg exclude each other")
    if args.batch is not None and args.batch < 1:
        return error(f"--batch: expected a count >= 1, got {args.batch}")
    try:
        peers, notes, threads = bench_options(args)
    except ValueError as e:
        return error(str(e))
    flavor = _flavor_given(args)
    net = load_or_error(args.cfg, args.weights, args.batch, flavor, fork=getattr(args, "fork", None))
    if isinstance(net, int):
        return net
    flavor = flavor or "torch"
    if not net.bn_layers:
        return error(f"{net.name}: the network has no batch-normalization layer to time")
    if not any(bn.batch * bn.h * bn.w >= 2 for bn in net.bn_layers):
        return error(
            f"{net.name}: every BN layer has batch*h*w = 1 at batch {net.batch}, where a training forward "
            "is undefined; use --batch 2 or more"
        )
    passes = tuple(bench.PASSES) + (tuple(bench.RENORM_PASSES) if getattr(args, "renorm", False) else ())
    shapes = list(dict.fromkeys(bn.shape for bn in net.bn_layers if bn.batch * bn.h * bn.w >= 2))
    total = sum(len(passes) * (args.repeat or bench.default_rounds(s)) for s in shapes)
    bar = Progress(total, "bench --cfg")
    try:
        res = bench.bench_cfg(
            net.cfg,
            batch=net.batch,
            flavor=flavor,
            fork=net.fork,
            repeat=args.repeat,
            peers=peers,
            passes=passes,
            progress=bar.update,
        )
    finally:
        bar.close()
    info = bench.machine_info(threads)
    print(f"darknet-bn bench --cfg: {summary(net)}")
    for line in format_ignored(net):
        print(line)
    print(
        f"flavor {flavor} timed, {threads} thread(s), {info['isa']}, triad bandwidth "
        f"{min(r.triad_gbs for r in res.results):.1f}-{max(r.triad_gbs for r in res.results):.1f} GB/s"
    )
    for n in notes:
        print("note:", n)
    print(bench.format_bench_cfg(res))
    if getattr(args, "json", None):
        data = {
            "machine": info,
            "cfg": net.name,
            "fork": net.fork,
            "rules": net.rules,
            "flavor": flavor,
            "batch": net.batch,
            "layers": [
                {
                    "index": bn.index,
                    "type": bn.type,
                    "part": bn.part,
                    "shape": list(bn.shape),
                    "median_ms": {p: {impl: res.layer_ms(bn, p, impl) for impl in ["ours", *peers]} for p in passes},
                }
                for bn in res.timed
            ],
            "not_timed": [bn.name for bn in res.skipped],
            "total_ms": {p: {impl: res.total_ms(p, impl) for impl in ["ours", *peers]} for p in passes},
            "results": [r.as_dict() for r in res.results],
        }
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if getattr(args, "plot", None):
        bench.plot(args.plot, res.results, peers)
    return 0
