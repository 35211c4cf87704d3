"""The activation's cost in the fused training passes, builds against each other in one process (not a
test; run by hand; docs/performance.md, "The activation's cost"):

    python benchmarks/act_math.py [--baseline DIR] [--pkg NAME=DIR ...] [--threads T] [--rounds N]
        [--acts swish,leaky] [--shapes 16x128x52x52,...] [--cpu]

Per shape and build: fwd+bwd = ``Layer.forward(x, train=True[, activation=A])`` then
``Layer.backward(layer.delta)`` (in place), plain and fused with each activation. Each sample is the
mean of enough calls to last ~1 ms (at most 50), back to back, after delta is restored and one untimed
call (as the bench times its +ACT rows); the cases are interleaved round by round, in an order that
rotates and reverses (as the bench does); printed: the medians and fused/plain as the median of the
same-round ratios. Two-thread figures from this script were tick-bound on the loaded machine of
2026-12-01 (20-36 ms per call while the bench measured 1-4 ms): prefer ``darknet-bn bench
--activation NAME`` for two threads.
``--baseline DIR``: a ``darknet_bn_base`` build of an older commit (recipe in engine_common.py);
``--pkg NAME=DIR``: any other build under the name NAME (the same recipe), e.g. one with other -D
constants (``DARKNET_BN_CFLAGS``). ``--cpu``: the process's CPU clock (for one thread on a loaded
machine: the time the thread ran, not the time it waited for a core).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import numpy as np
from engine_common import load_baseline, timed_rounds

import darknet_bn

SHAPES = [
    "1x16x416x416",
    "8x32x208x208",
    "16x128x52x52",
    "32x256x26x26",
    "64x64x56x56",
    "64x512x7x7",
    "256x32x1x1",
    "128x1024x1x1",
]


def cases_of(pkg, tag, shape, acts):
    """name -> (reset, call) for the plain and each fused fwd+bwd of one build."""
    b, c, h, w = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    out = {}
    for a in [None, *acts]:
        layer = pkg.make_batchnorm_layer(b, w, h, c, "alexeyab")
        layer.scales[:] = rng.uniform(0.5, 2, c)
        layer.biases[:] = rng.uniform(-1, 1, c)
        delta = layer.delta.reshape(shape)

        def call(layer=layer, a=a):
            layer.forward(x, train=True, activation=a)
            layer.backward(layer.delta)

        out[f"{tag} {a or 'plain'}"] = (lambda delta=delta: np.copyto(delta, dy), call)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline")
    ap.add_argument("--pkg", action="append", default=[], help="NAME=DIR: another build, as NAME")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--acts", default="swish,leaky")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--cpu", action="store_true", help="the process's CPU clock instead of the wall clock")
    args = ap.parse_args()
    base = load_baseline(args.baseline)
    acts = args.acts.split(",")
    pkgs = {"new": darknet_bn} | ({"old": base} if base else {})
    for spec in args.pkg:
        name, _, path = spec.partition("=")
        sys.path.insert(0, path)
        pkgs[name] = importlib.import_module(name)
    for p in pkgs.values():
        p.set_num_threads(args.threads)
    clock = time.process_time if args.cpu else time.perf_counter
    print(
        f"threads {args.threads}, rounds {args.rounds}, {'CPU' if args.cpu else 'wall'} clock; "
        "ms per fwd+bwd (median), (fused/plain: median of the same-round ratios)"
    )
    for s in args.shapes.split(","):
        shape = tuple(int(v) for v in s.split("x"))
        cases = {}
        for tag, p in pkgs.items():
            cases |= cases_of(p, tag, shape, acts)
        t = timed_rounds(cases, args.rounds, clock)
        row = [f"{s:>14}"]
        for tag in pkgs:
            plain = t[f"{tag} plain"]
            row.append(f"{tag}: plain {statistics.median(plain) * 1e3:7.3f}")
            for a in acts:
                f = t[f"{tag} {a}"]
                ratio = statistics.median(x / y for x, y in zip(f, plain))
                row.append(f"{a} {statistics.median(f) * 1e3:7.3f} ({ratio:.2f})")
        print("  ".join(row), flush=True)


if __name__ == "__main__":
    main()
