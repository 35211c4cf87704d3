"""``darknet-bn bench``: darknet_bn's training forward, inference forward and backward timed on a table
of shapes (or ``--shape``), interleaved with the peers of ``--compare``, against a triad bandwidth
measured in the same run (:mod:`darknet_bn.bench`); with ``--activation NAME``, also the training
passes with the activation fused (rows ``train+NAME``, ``backward+NAME``); with ``--cfg``, on every BN
layer of a network (:mod:`darknet_bn.cli.bench_cfg`)."""

from __future__ import annotations

import argparse
import time

from .. import bench
from .bench_cfg import add_bench_cfg_arguments, cmd_bench_cfg
from .common import (
    Progress,
    add_flavor_option,
    add_json_option,
    add_plot_option,
    add_threads_option,
    bench_options,
    usage_error,
)

__all__ = ["add_bench_parser", "cmd_bench"]


def cmd_bench(args: argparse.Namespace) -> int:
    """``darknet-bn bench``: 0, or 2 on a bad option (``--cfg``: :func:`~darknet_bn.cli.bench_cfg.cmd_bench_cfg`)."""
    if args.cfg is not None:
        if args.activation is not None:
            return usage_error(args, "--activation: not with --cfg (a network's layers keep their own activations)")
        return cmd_bench_cfg(args)

    try:
        shapes = [bench.parse_shape(s) for s in args.shape] if args.shape else list(bench.DEFAULT_SHAPES)
    except ValueError as e:
        return usage_error(args, str(e))
    try:
        peers, notes, threads = bench_options(args)
    except ValueError as e:
        return usage_error(args, str(e))
    act_passes: tuple = ()
    if args.activation is not None:
        try:
            act_passes = bench.act_passes(args.activation)
        except ValueError as e:
            return usage_error(args, f"--activation: {e}")
        if args.compare is None and bench.SEPARATE_PEER not in peers:
            peers.append(bench.SEPARATE_PEER)  # the separate-passes peer the +ACT rows are measured against
    if args.large:
        shapes += [s for s in bench.LARGE_SHAPES if s not in shapes]
    passes = bench.PASSES + (bench.RENORM_PASSES if args.renorm else ()) + act_passes
    total = sum(len(passes) * (args.repeat or bench.default_rounds(s)) for s in shapes)
    # the default budget is the default run's per row: --renorm / --activation rows do not thin the others
    default_budget = bench.DEFAULT_BUDGET_S * len(passes) / len(bench.PASSES)
    budget = None if args.repeat else (args.budget or default_budget)
    info = bench.machine_info(threads, peers)
    bar = Progress(total, "bench")
    start = time.perf_counter()
    try:
        results = bench.run(
            shapes, peers, rounds=args.repeat, flavor=args.flavor, progress=bar.update, passes=passes, budget_s=budget
        )
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    info["elapsed_s"] = elapsed
    print(f"darknet-bn bench: {bench.describe_cpu(info)}")
    print(
        f"flavor {args.flavor}, {threads} thread(s) for every implementation, {info['isa']}, "
        f"triad bandwidth {min(r.triad_gbs for r in results):.1f}-{max(r.triad_gbs for r in results):.1f} GB/s, "
        f"{elapsed:.0f} s"
    )
    if peers:
        print("peers: " + "; ".join(f"{p} ({v})" for p, v in info["peers"].items()))
    print(
        "medians of interleaved rounds; spread = quartiles; backward = layer.backward(layer.delta), in place, "
        "after a training forward"
    )
    if args.renorm:
        print("+renorm rows: darknet_bn with batch renormalization (rmax 3, dmax 5) against the peers' plain BN")
    if act_passes:
        print(
            f"+{args.activation} rows: the training forward with {args.activation} fused, and the backward after it "
            f"from the activation output's delta (in place, the delta restored before each sample), against "
            f"BN then {args.activation} (torch: autograd through both; jax: both in one jitted function, its vjp; "
            f"darknet: our BN passes with activate_array / gradient_array as passes of their own; plain: the "
            f"same on the plain kernels)"
        )
    for n in notes:
        print("note:", n)
    print(bench.format_table(results, peers))
    if args.json:
        bench.write_json(args.json, results, info)
    if args.plot:
        bench.plot(args.plot, results, peers)
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``darknet-bn bench`` (and its ``--cfg`` options; ``func=cmd_bench``, ``parser`` set)."""
    b = subparsers.add_parser(
        "bench",
        help="time the passes against the memory roofline and peers",
        description="Time darknet_bn's training forward, inference forward and backward on a "
        "table of shapes (or --shape), interleaved with the peers of --compare, "
        "against a triad bandwidth measured in the same run; with --activation NAME, also the "
        "training passes with the activation fused.",
    )
    b.add_argument(
        "--shape", action="append", metavar="BxCxHxW", help="a shape to run (repeatable); default: the built-in table"
    )
    add_threads_option(b, help="threads for darknet_bn and every peer (default: OMP_NUM_THREADS or the cores)")
    b.add_argument("--repeat", type=int, metavar="R", help="rounds per shape and pass (default: 5-15 by size)")
    add_flavor_option(b, "torch", help="the layer's flavor (default: torch)")
    b.add_argument(
        "--compare",
        default=None,
        metavar="PEERS",
        help="comma-separated peers among plain, numpy, torch, torch-out, ort, openvino, jax, darknet "
        "(default: every installed one of torch, torch-out, ort, openvino, jax, and darknet with "
        "--activation; '' for none). darknet (Darknet-style separate activation passes on our "
        "kernels) times only the --activation rows; plain, torch and jax time them too",
    )
    b.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="S",
        help="seconds the whole run aims at, setup included (default 40: under a minute; with --renorm "
        "or --activation 20 more for each: their rows get the default run's rounds); each row gets 3 "
        "rounds or more, 5-15 at most by size; ignored with --repeat",
    )
    b.add_argument("--large", action="store_true", help="add 64x64x112x112 (205 MB per tensor) to the shapes")
    b.add_argument(
        "--renorm",
        action="store_true",
        help="add rows for the training forward and backward with batch renormalization",
    )
    b.add_argument(
        "--activation",
        default=None,
        metavar="NAME",
        help="add rows train+NAME and backward+NAME: the training forward with the activation fused and "
        "the backward after it, each also timing our plain pass in the same rounds, with a summary of "
        "what the activation costs and of forward + backward against BN then the activation (darknet: "
        "Darknet-style separate passes; torch; jax). NAME: one of darknet_bn.ACTIVATIONS, e.g. leaky "
        "(Darknet's, slope 0.1), swish, mish. Not in the default run, which keeps its rows and time "
        "(two more rows per shape: the default --budget grows by half)",
    )
    add_json_option(b, help="write the results as JSON")
    add_plot_option(b, help="draw the ratios and roofline fractions (needs matplotlib)")
    b.set_defaults(func=cmd_bench, parser=b)
    add_bench_cfg_arguments(b)  # bench --cfg CFG [--weights W] [--batch B] [--fork K]: every BN layer of a network
    return b
