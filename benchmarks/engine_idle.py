"""The first call after an idle gap: how long one pass takes when it follows `gap` seconds of sleep,
by thread count, against back-to-back calls (gap 0).

    python benchmarks/engine_idle.py [--shapes 16x128x52x52,256x32x1x1] [--gaps 0,0.001,0.01,0.1,0.5]
                                     [--repeat 7] [--env]

After ~100 ms idle the OpenMP team's threads sleep (libgomp spins GOMP_SPINCOUNT times, then waits
on a futex) and, on a VM, their vCPUs halt: waking them costs. Each row is the median over `repeat`
trials of one training forward timed right after `time.sleep(gap)`; the ``numpy copy`` rows time
``np.copyto(y, x)`` of the same tensor the same way (one thread, no OpenMP: a control that shows how
much of the slowdown is the whole process coming back cold, not the team waking up).

``--env`` also runs the same measurement in child processes with the wait-policy variables set
(``OMP_WAIT_POLICY=active``, ``OMP_WAIT_POLICY=passive``, ``GOMP_SPINCOUNT=...``), to see whether a
wait policy would help. The variables are set only in those children: libgomp reads them once, when it
loads, so a library cannot change them for a process that is already running (and must not change its
user's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import darknet_bn


def measure(shapes: list[tuple[int, ...]], gaps: list[float], repeat: int, threads: list[int]) -> dict:
    out = {}
    for shape in shapes:
        b, c, h, w = shape
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        layer = darknet_bn.make_batchnorm_layer(b, w, h, c, "torch")
        y = np.empty_like(x)
        name = "x".join(map(str, shape))
        # control: numpy's single-threaded copy of the same tensor, no OpenMP anywhere
        for gap in gaps:
            ts = []
            for _ in range(repeat):
                if gap:
                    time.sleep(gap)
                else:
                    np.copyto(y, x)
                t0 = time.perf_counter()
                np.copyto(y, x)
                ts.append(time.perf_counter() - t0)
            out[f"{name} numpy copy gap {gap:g}s"] = statistics.median(ts)
        for nth in threads:
            darknet_bn.set_num_threads(nth)
            for _ in range(20):  # warm: pages touched, team created
                layer.forward(x, train=True)
            for gap in gaps:
                ts = []
                for _ in range(repeat):
                    if gap:
                        time.sleep(gap)
                    else:
                        layer.forward(x, train=True)
                    t0 = time.perf_counter()
                    layer.forward(x, train=True)
                    ts.append(time.perf_counter() - t0)
                out[f"{name} {nth}T gap {gap:g}s"] = statistics.median(ts)
    darknet_bn.set_num_threads(None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="16x128x52x52,256x32x1x1")
    ap.add_argument("--gaps", default="0,0.001,0.01,0.1,0.5")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--env", action="store_true", help="also run children with OMP_WAIT_POLICY/GOMP_SPINCOUNT set")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child's output
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    gaps = [float(g) for g in args.gaps.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    res = measure(shapes, gaps, args.repeat, threads)
    if args.json:
        print(json.dumps(res))
        return
    runs = {"default": res}
    if args.env:
        variants = {
            "OMP_WAIT_POLICY=active": {"OMP_WAIT_POLICY": "active"},
            "OMP_WAIT_POLICY=passive": {"OMP_WAIT_POLICY": "passive"},
            "GOMP_SPINCOUNT=10000000": {"GOMP_SPINCOUNT": "10000000"},
        }
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--json",
            "--shapes",
            args.shapes,
            "--gaps",
            args.gaps,
            "--threads",
            args.threads,
            "--repeat",
            str(args.repeat),
        ]
        for name, env in variants.items():
            r = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            runs[name] = json.loads(r.stdout)
    names = list(runs)
    w = max(len(k) for k in res)
    print(f"{'':<{w}}  " + "  ".join(f"{n:>24}" for n in names))
    for k in res:
        print(f"{k:<{w}}  " + "  ".join(f"{runs[n][k] * 1e6:21.1f} us" for n in names))


if __name__ == "__main__":
    main()
