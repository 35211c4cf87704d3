"""Darknet's ten named kernels: darknet_bn's fast versions against their plain references
(csrc/reference.c), interleaved round by round; medians and ratios.

    python benchmarks/named_kernels.py [--shape BxCxHxW] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from darknet_bn import kernels as K
from darknet_bn._capi import ffi, lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="16x128x52x52")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    b, c, h, w = (int(v) for v in args.shape.lower().split("x"))
    s = h * w
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, h, w), dtype=np.float32)
    d = rng.standard_normal((b, c, h, w), dtype=np.float32)
    buf = x.copy()
    per = {k: np.abs(rng.standard_normal(c)).astype(np.float32) + 0.5 for k in "mvsbo"}

    def P(a):
        return ffi.from_buffer("float[]", a)

    px, pd, pbuf = P(x), P(d), P(buf)
    pm, pv, ps, pb, po = (P(per[k]) for k in "mvsbo")
    N = ffi.NULL
    cases = {
        "mean_cpu": (lambda: K.mean_cpu(x, b, c, s, per["o"]), lambda: lib.mean_cpu_ref(px, b, c, s, po, N)),
        "variance_cpu": (
            lambda: K.variance_cpu(x, per["m"], b, c, s, per["o"]),
            lambda: lib.variance_cpu_ref(px, pm, b, c, s, po, N),
        ),
        "normalize_cpu": (
            lambda: K.normalize_cpu(buf, per["m"], per["v"], b, c, s),
            lambda: lib.normalize_cpu_ref(pbuf, pm, pv, b, c, s, 1e-6, 0, N),
        ),
        "scale_bias": (lambda: K.scale_bias(buf, per["s"], b, c, s), lambda: lib.scale_bias_ref(pbuf, ps, b, c, s, N)),
        "add_bias": (lambda: K.add_bias(buf, per["b"], b, c, s), lambda: lib.add_bias_ref(pbuf, pb, b, c, s, N)),
        "backward_bias": (
            lambda: K.backward_bias(per["o"], d, b, c, s),
            lambda: lib.backward_bias_ref(po, pd, b, c, s, N),
        ),
        "backward_scale_cpu": (
            lambda: K.backward_scale_cpu(x, d, b, c, s, per["o"]),
            lambda: lib.backward_scale_cpu_ref(px, pd, b, c, s, po, N),
        ),
        "mean_delta_cpu": (
            lambda: K.mean_delta_cpu(d, per["v"], b, c, s, per["o"]),
            lambda: lib.mean_delta_cpu_ref(pd, pv, b, c, s, po, N),
        ),
        "variance_delta_cpu": (
            lambda: K.variance_delta_cpu(x, d, per["m"], per["v"], b, c, s, per["o"]),
            lambda: lib.variance_delta_cpu_ref(px, pd, pm, pv, b, c, s, po, N),
        ),
        "normalize_delta_cpu": (
            lambda: K.normalize_delta_cpu(x, per["m"], per["v"], per["s"], per["b"], b, c, s, buf),
            lambda: lib.normalize_delta_cpu_ref(px, pm, pv, ps, pb, b, c, s, pbuf, 1e-5, 1, N),
        ),
    }
    print(
        f"shape {b}x{c}x{h}x{w}, {K.get_num_threads()} threads, {K.get_isa()}; medians of {args.rounds} "
        "interleaved rounds"
    )
    print(f"{'kernel':>20} {'fast ms':>9} {'plain ms':>9} {'plain/fast':>10}")
    ratios = []
    for name, (fast, plain) in cases.items():
        tf, tp = [], []
        for _ in range(args.rounds):
            for f, ts in ((fast, tf), (plain, tp)):
                f()
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
        mf, mp = statistics.median(tf) * 1e3, statistics.median(tp) * 1e3
        ratios.append(mp / mf)
        print(f"{name:>20} {mf:9.3f} {mp:9.3f} {mp / mf:10.2f}")
    print(f"{'geometric mean':>20} {'':9} {'':9} {float(np.exp(np.mean(np.log(ratios)))):10.2f}")


if __name__ == "__main__":
    main()
