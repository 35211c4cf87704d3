"""The ``darknet-bn`` command line (also ``python -m darknet_bn``).

Exit codes: 0 success, 1 a failed check, 2 bad arguments or a missing optional package.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Sequence

import numpy as np


class _Progress:
    """A progress bar on stderr: tqdm when installed, else a one-line counter."""

    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        except ImportError:
            self._bar = None
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif sys.stderr.isatty():
            print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif sys.stderr.isatty():
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what this build can do, and check one training step against a float64 numpy computation."""
    import darknet_bn
    from darknet_bn import kernels

    print(f"darknet_bn {darknet_bn.__version__} on Python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}")
    print(f"OpenMP: {'yes' if kernels.has_openmp() else 'no'}, threads: {kernels.get_num_threads()}, "
          f"instruction set: {kernels.get_isa()}")
    shape = (8, 16, 13, 13)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 + 100
    layer = darknet_bn.make_batchnorm_layer(8, 13, 13, 16, flavor="torch")
    y = layer.forward(x)
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=(0, 2, 3), keepdims=True), x64.var(axis=(0, 2, 3), keepdims=True)
    err = float(np.abs(y - (x64 - m) / np.sqrt(v + 1e-5)).max())
    ok = err < 1e-4
    print(f"self-check, training forward {shape}: max |error| vs float64 = {err:.2e} ({'ok' if ok else 'FAILED'})")
    return 0 if ok else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    import time

    from darknet_bn import bench

    if args.cfg is not None:
        from darknet_bn.cli_files import cmd_bench_cfg
        return cmd_bench_cfg(args)

    try:
        shapes = [bench.parse_shape(s) for s in args.shape] if args.shape else list(bench.DEFAULT_SHAPES)
    except ValueError as e:
        return _usage_error(args, str(e))
    try:
        peers, notes, threads = bench_options(args)
    except ValueError as e:
        return _usage_error(args, str(e))
    if args.large:
        shapes += [s for s in bench.LARGE_SHAPES if s not in shapes]
    passes = bench.PASSES + (bench.RENORM_PASSES if args.renorm else ())
    total = sum(len(passes) * (args.repeat or bench.default_rounds(s)) for s in shapes)
    budget = None if args.repeat else (args.budget or bench.DEFAULT_BUDGET_S)
    info = bench.machine_info(threads, peers)
    bar = _Progress(total, "bench")
    start = time.perf_counter()
    try:
        results = bench.run(shapes, peers, rounds=args.repeat, flavor=args.flavor, progress=bar.update,
                            passes=passes, budget_s=budget)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    info["elapsed_s"] = elapsed
    print(f"darknet-bn bench: {bench.describe_cpu(info)}")
    print(f"flavor {args.flavor}, {threads} thread(s) for every implementation, {info['isa']}, "
          f"triad bandwidth {min(r.triad_gbs for r in results):.1f}-{max(r.triad_gbs for r in results):.1f} GB/s, "
          f"{elapsed:.0f} s")
    if peers:
        print("peers: " + "; ".join(f"{p} ({v})" for p, v in info["peers"].items()))
    print("medians of interleaved rounds; spread = quartiles; backward = layer.backward(layer.delta), in place, "
          "after a training forward")
    if args.renorm:
        print("+renorm rows: darknet_bn with batch renormalization (rmax 3, dmax 5) against the peers' plain BN")
    for n in notes:
        print("note:", n)
    print(bench.format_table(results, peers))
    if args.json:
        bench.write_json(args.json, results, info)
    if args.plot:
        bench.plot(args.plot, results, peers)
    return 0


def bench_options(args: argparse.Namespace) -> tuple[list[str], list[str], int]:
    """Check and apply the options every bench shares (``--threads``, ``--repeat``, ``--compare``,
    ``--plot``): returns (peers, notes for the output, the thread count now set). The default peers
    are ``bench.DEFAULT_PEERS``, each when installed; a peer whose package is not installed is dropped
    with a note. With ``--cfg`` (which sums every pass per peer), peers that do not offer every pass
    are dropped with a note. Raises ValueError with the message for a bad option."""
    from darknet_bn import bench, kernels

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a count >= 1, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat: expected a count >= 1, got {args.repeat}")
    budget = getattr(args, "budget", None)
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget: expected seconds > 0, got {budget}")
    compare = getattr(args, "compare", None)
    default = compare is None
    peers = list(bench.DEFAULT_PEERS) if default else [p for p in (s.strip() for s in compare.split(",")) if p]
    unknown = [p for p in peers if p not in bench.PEERS]
    if unknown:
        raise ValueError(f"--compare: unknown peer(s) {', '.join(unknown)}; choose from {', '.join(bench.PEERS)}")
    peers = list(dict.fromkeys(peers))
    notes = []
    missing = [p for p in peers if not bench.available(p)]
    for p in missing:
        peers.remove(p)
        notes.append(f"{p} is not installed ({bench.PEER_INSTALL[p]}): not compared")
    if getattr(args, "cfg", None) is not None:
        for p in [p for p in peers if not all(bench.offers(p, q) for q in bench.PASSES)]:
            peers.remove(p)
            notes.append(f"{p} offers only some passes (bench --cfg sums every pass): not compared")
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None
    torch = None
    if any(p in ("torch", "torch-out") for p in peers):
        import torch   # before the other peers' libraries (one libgomp for torch and darknet_bn)
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    threads = kernels.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    if "jax" in peers:
        import os
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if threads != cores:
            notes.append(f"jax runs on XLA's own thread pool (one thread per core), not {threads}")
    return peers, notes, threads


def _usage_error(args: argparse.Namespace, message: str) -> int:
    args.parser.print_usage(sys.stderr)
    print(f"{args.parser.prog}: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    from darknet_bn.flavors import FLAVORS

    p = argparse.ArgumentParser(prog="darknet-bn", description="Darknet's batch normalization, fast on the CPU.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="build facts and a self-check")
    info.set_defaults(func=_cmd_info, parser=info)

    b = sub.add_parser("bench", help="time the passes against the memory roofline and peers",
                       description="Time darknet_bn's training forward, inference forward and backward on a "
                                   "table of shapes (or --shape), interleaved with the peers of --compare, "
                                   "against a triad bandwidth measured in the same run.")
    b.add_argument("--shape", action="append", metavar="BxCxHxW", help="a shape to run (repeatable); "
                   "default: the built-in table")
    b.add_argument("--threads", type=int, metavar="N", help="threads for darknet_bn and every peer "
                   "(default: OMP_NUM_THREADS or the cores)")
    b.add_argument("--repeat", type=int, metavar="R", help="rounds per shape and pass (default: 5-15 by size)")
    b.add_argument("--flavor", default="torch", choices=sorted(FLAVORS), help="the layer's flavor (default: torch)")
    b.add_argument("--compare", default=None, metavar="PEERS",
                   help="comma-separated peers among plain, numpy, torch, torch-out, ort, openvino, jax (default: "
                        "every installed one of torch, torch-out, ort, openvino, jax; '' for none)")
    b.add_argument("--budget", type=float, default=None, metavar="S",
                   help="seconds the whole run aims at, setup included (default 40: under a minute); each row "
                        "gets 3 rounds or more, 5-15 at most by size; ignored with --repeat")
    b.add_argument("--large", action="store_true", help="add 64x64x112x112 (205 MB per tensor) to the shapes")
    b.add_argument("--renorm", action="store_true",
                   help="add rows for the training forward and backward with batch renormalization")
    b.add_argument("--json", metavar="FILE", help="write the results as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="draw the ratios and roofline fractions (needs matplotlib)")
    b.set_defaults(func=_cmd_bench, parser=b)

    from darknet_bn.cli_files import add_bench_cfg_arguments, add_layers_parser
    from darknet_bn.demo import add_demo_parser
    from darknet_bn.cli_fold import add_fold_parser
    add_bench_cfg_arguments(b)      # bench --cfg CFG [--weights W] [--batch B]: every BN layer of a network
    add_layers_parser(sub)          # layers CFG [--weights W] [--flavor F]
    add_fold_parser(sub)            # fold CFG WEIGHTS --out-cfg F --out-weights G [--flavor F]
    add_demo_parser(sub)            # demo
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
