"""The activation's arithmetic against the plain passes on a small tensor (not a test; run by hand;
docs/performance.md, section 9): a lower bound of fused / plain forward + backward.

    python benchmarks/act_floor.py [--shape 256x32x1x1] [--acts swish,leaky,mish] [--bursts 300] [--calls 40]
        [--baseline DIR]

One thread. Rows, each the time of one call (min and median over bursts of ``--calls`` back-to-back
calls; the min is what the machine can do, the median what it did -- on a loaded machine quote the min):
- ``plain fwd+bwd``: ``Layer.forward(x, train=True)`` then ``Layer.backward(layer.delta)``, the
  state the bench times (delta restored before each burst);
- ``act A``: ``activate_array`` over the tensor's values (restored before each burst), and
  ``grad A``: ``gradient_array`` (delta restored before each burst): the engine's vector math of the
  forward's activation and of the backward's derivative, with a load and a store per vector;
- ``relu``: the same passes with relu (a compare and a multiply): what the load and store cost alone.
Printed per activation: ``(act - relu) + (grad - relu)``, the arithmetic a fused forward + backward
must add at the least, in ns per value, and ``1 + that / plain``, the lowest fused / plain ratio this
arithmetic allows on one thread (the fused passes evaluate the activation once in the forward's map and
the derivative once in the backward's reduction: the same work as these passes, minus their memory).
``--baseline DIR``: the same rows for a ``darknet_bn_base`` build in DIR (engine_common.py's recipe),
interleaved with the new build's, printed after them.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np
from engine_common import load_baseline

import darknet_bn


def burst_times(reset, call, bursts: int, calls: int) -> list[float]:
    """Seconds per call of each burst (reset before each, untimed; one untimed call first)."""
    out = []
    for _ in range(bursts):
        reset()
        call()
        reset()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        out.append((time.perf_counter() - t0) / calls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x32x1x1")
    ap.add_argument("--acts", default="swish,leaky,mish")
    ap.add_argument("--bursts", type=int, default=300)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--baseline")
    args = ap.parse_args()
    pkgs = {"": darknet_bn}
    base = load_baseline(args.baseline)
    if base is not None:
        pkgs["base "] = base
    for pkg in pkgs.values():
        pkg.set_num_threads(1)
    b, c, h, w = (int(v) for v in args.shape.lower().split("x"))
    n = b * c * h * w
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((b, c, h, w)) * 2).astype(np.float32)
    dy = rng.standard_normal((b, c, h, w)).astype(np.float32)
    buf, dbuf = np.empty_like(x), np.empty_like(x)
    # the activation passes repeat on their own output (a burst's calls run back to back): values where
    # that stays in the normal range (leaky's negative side shrinks 10x a call, and a delta multiplied by
    # a derivative near 0 forty times would go subnormal, which costs 10x); the vector math has no
    # branches, so its cost does not depend on the values
    xa = rng.uniform(0.5, 5.0, (b, c, h, w)).astype(np.float32)
    cases = {}
    for tag, pkg in pkgs.items():
        K = importlib.import_module(pkg.__name__ + ".kernels")
        layer = pkg.make_batchnorm_layer(b, w, h, c, "alexeyab")
        layer.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + 1e-5)

        def plain(layer=layer):
            layer.forward(x, train=True)
            layer.backward(layer.delta)

        cases[f"{tag}plain fwd+bwd"] = (lambda layer=layer: np.copyto(layer.delta, dy), plain)
        for a in ["relu", *args.acts.split(",")]:
            cases[f"{tag}act {a}"] = (lambda: np.copyto(buf, xa), lambda a=a, K=K: K.activate_array(buf, n, a))
            cases[f"{tag}grad {a}"] = (lambda: np.copyto(dbuf, dy), lambda a=a, K=K: K.gradient_array(xa, n, a, dbuf))
    res = {k: [] for k in cases}
    for _ in range(3):  # interleaved thirds: drift hits every row alike
        for k, (reset, call) in cases.items():
            res[k] += burst_times(reset, call, args.bursts // 3, args.calls)
    lo = {k: min(v) for k, v in res.items()}
    print(f"shape {args.shape} ({n} values), one thread, {args.bursts} bursts of {args.calls} calls; us per call")
    for k, v in res.items():
        print(f"{k:>21}: min {lo[k] * 1e6:7.3f}  median {statistics.median(v) * 1e6:7.3f}")
    for tag in pkgs:
        p = lo[f"{tag}plain fwd+bwd"]
        for a in args.acts.split(","):
            act = lo[f"{tag}act {a}"] - lo[f"{tag}act relu"]
            grad = lo[f"{tag}grad {a}"] - lo[f"{tag}grad relu"]
            print(
                f"{tag + a:>13}: arithmetic {(act + grad) * 1e6:6.3f} us = {(act + grad) / n * 1e9:5.3f} ns per value "
                f"(act {act / n * 1e9:5.3f}, grad {grad / n * 1e9:5.3f}); "
                f"fused/plain >= {1 + (act + grad) / p:4.2f} on one thread"
            )


if __name__ == "__main__":
    main()
