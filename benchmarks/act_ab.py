"""A/B of issue 16's fused BN + activation in training (not a test; run by hand):

- fused:    Layer.forward(x, train=True, activation=A) + the backward with the activation inside
- plain:    Layer.forward(x, train=True)              + the plain backward
- separate: Layer.forward(x) + activate_array(output) (for the kinds differentiated from the input,
            swish: the pre-activation kept first, as Darknet keeps activation_input) + gradient_array
            + the plain backward: Darknet's sequence of passes

The backward is dbn_backward_into (delta left intact: every round sees the same data; for "separate",
gradient_array writes a copy of delta made outside the timed region). Variants run interleaved, round
by round; medians of the rounds.

    python benchmarks/act_ab.py [--rounds N] [--threads T] [--acts leaky,swish] [--shapes 16x128x52x52,...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import darknet_bn
from darknet_bn import kernels as K
from darknet_bn import make_batchnorm_layer
from darknet_bn._capi import EXEC, c_act, ffi, lib

SHAPES = ["16x128x52x52", "64x64x56x56", "128x1024x1x1", "1x16x416x416"]


def run(shape, acts, rounds):
    b, c, h, w = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make_batchnorm_layer(b, w, h, c, "alexeyab")
    layer.scales[:] = rng.uniform(0.5, 2, c)
    layer.biases[:] = rng.uniform(-1, 1, c)
    dx = np.empty_like(x)
    z = np.empty_like(x)
    g = np.empty_like(x)
    p = layer._p
    pdx, pg, pdy = (ffi.from_buffer("float[]", a) for a in (dx, g, dy))
    tail = (p["scale_updates"], p["bias_updates"], p["mean_delta"], p["variance_delta"], b, c, h * w)
    head = (p["scales"], p["biases"], p["mean"], p["variance"], ffi.NULL, ffi.NULL)
    fl = layer._cflavor

    def bwd(delta_ptr, act):
        lib.dbn_backward_into(layer._p_x, delta_ptr, pdx, *head, *tail, fl, 1, act, EXEC)

    def plain():
        layer.forward(x)
        bwd(pdy, ffi.NULL)

    def fused(a):
        act = c_act(a)

        def f():
            layer.forward(x, activation=a)
            bwd(pdy, act)

        return f

    def separate(a):
        from_input = a not in ("leaky", "relu", "relu6", "logistic", "tanh", "elu", "selu")

        def f():
            out = layer.forward(x)
            if from_input:
                np.copyto(z, out)  # the pre-activation, which the gradient needs (Darknet: activation_input)
            K.activate_array(out, out.size, a)
            K.gradient_array(z if from_input else out, out.size, a, g)
            bwd(pg, ffi.NULL)

        return f

    variants = {"plain": plain}
    for a in acts:
        variants[f"fused {a}"] = fused(a)
        variants[f"separate {a}"] = separate(a)
    times = {k: [] for k in variants}
    for f in variants.values():  # warm-up
        np.copyto(g, dy)
        f()
    for _ in range(rounds):
        for k, f in variants.items():
            np.copyto(g, dy)  # outside the timed region
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    row = [f"{'x'.join(map(str, shape)):>14}", f"plain {med['plain']:8.3f} ms"]
    for a in acts:
        fu, se = med[f"fused {a}"], med[f"separate {a}"]
        row.append(f"{a}: fused {fu:8.3f} ms  fused/plain {fu / med['plain']:5.2f}  separate/fused {se / fu:5.2f}")
    print(" | ".join(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--acts", default="leaky,swish")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    args = ap.parse_args()
    darknet_bn.set_num_threads(args.threads)
    print(f"threads {args.threads}, isa {K.get_isa()}, rounds {args.rounds}, medians (forward + backward)")
    for s in args.shapes.split(","):
        run(tuple(int(v) for v in s.split("x")), args.acts.split(","), args.rounds)


if __name__ == "__main__":
    main()
