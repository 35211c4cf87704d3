"""Per call on 256x32 with and without a fused activation, robust to a loaded machine (not a test; run
by hand; docs/performance.md, section 9):

    python benchmarks/act_percall.py [--threads 1] [--rounds 60] [--calls 100]
    PKG=darknet_bn_nog PYTHONPATH=DIR python benchmarks/act_percall.py   # another build, as PKG

The whole Python calls of engine_percall.py's rows (``forward(x, train=...)``; ``backward(layer.delta)``
after a training forward, as (forward + backward) - forward; the same with leaky and swish fused), each
round one burst of ``--calls`` back-to-back calls per row. Printed per row: the min over rounds (a burst
of ~0.2-0.5 ms fits in one scheduler slice, so the min is what the code costs even when other processes
hold the cores) and the median; and fused / plain forward + backward for both activations. To compare
builds, run one process per build in alternation (old, new, old, new) and quote both.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x32x1x1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    pkg = importlib.import_module(os.environ.get("PKG", "darknet_bn"))
    pkg.set_num_threads(args.threads)
    b, c, h, w = (int(v) for v in args.shape.lower().split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, h, w), dtype=np.float32) * 2 + 3
    g = rng.standard_normal(x.shape, dtype=np.float32)

    def layer():
        L = pkg.make_batchnorm_layer(b, w, h, c, "torch")
        # scales = the batch's std: the in-place backward repeated on its own output stays in range
        L.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + L.flavor.eps)
        L.forward(x)
        L.delta[...] = g
        return L

    P, A, S = layer(), layer(), layer()
    cases = {
        "train": lambda: P.forward(x, train=True),
        "infer": lambda: P.forward(x, train=False),
        "tr+bwd": lambda: (P.forward(x, train=True), P.backward(P.delta)),
        "train+leaky": lambda: A.forward(x, train=True, activation="leaky"),
        "tr+bwd+leaky": lambda: (A.forward(x, train=True, activation="leaky"), A.backward(A.delta)),
        "train+swish": lambda: S.forward(x, train=True, activation="swish"),
        "tr+bwd+swish": lambda: (S.forward(x, train=True, activation="swish"), S.backward(S.delta)),
    }
    res: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        for _ in range(args.calls):
            f()
    for _ in range(args.rounds):
        for k, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f()
            res[k].append((time.perf_counter() - t0) / args.calls)
    print(f"{pkg.__name__} ({pkg.__file__}), {args.shape}, {args.threads} thread(s); us per call, min / median")
    stats = {"min": {k: min(v) for k, v in res.items()}, "median": {k: statistics.median(v) for k, v in res.items()}}
    for d in stats.values():
        for a in ("", "+leaky", "+swish"):
            d["bwd" + a] = d["tr+bwd" + a] - d["train" + a]
    for k in ("train", "infer", "bwd", "train+leaky", "bwd+leaky", "train+swish", "bwd+swish"):
        print(f"{k:>12}: {stats['min'][k] * 1e6:6.2f} / {stats['median'][k] * 1e6:6.2f}")
    for a in ("leaky", "swish"):
        r = [d[f"tr+bwd+{a}"] / d["tr+bwd"] for d in stats.values()]
        print(f"fused / plain fwd+bwd, {a}: {r[0]:.2f} / {r[1]:.2f}")


if __name__ == "__main__":
    main()
