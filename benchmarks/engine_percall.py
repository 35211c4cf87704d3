"""Per-call cost on a small tensor (default 256x32, a BatchNorm1d(32) at batch 256): where the time of
Layer.forward(train=True), Layer.forward(train=False) and Layer.backward() goes, interleaved round by
round (benchmarks/engine_common.py).

    python benchmarks/engine_percall.py [--shape 256x32x1x1] [--baseline DIR] [--activation leaky]

Rows:
- ``cffi empty``: a C call without arguments (``lib.dbn_has_openmp()``), the floor of any call;
- ``from_buffer``: ``ffi.from_buffer("float[]", x)``, what the wrapper pays to hand x to C;
- ``take_input``, ``take_net_delta``, ``forward_done``: the wrapper's checks alone;
- ``C train/infer/bwd 1T/2T``: the C pass called directly with prepared pointers, on 1 and 2 threads;
- ``C struct train/infer/bwd 1T``: the same through the struct-argument calls the layer makes
  (``dbn_forward_train_with`` ...: the per-layer arguments in one struct, 3-5 arguments a call);
- ``train``, ``infer``, ``bwd``: the whole Python call (``layer.forward(x, train=...)``,
  ``layer.backward(layer.delta)`` after a training forward), at the default thread count (2);
- ``train+NAME``, ``bwd+NAME`` (``--activation NAME``): the same with the activation fused (the backward
  after a training forward with it), and the ratio fused / plain;
- ``base train`` ...: the same with the baseline build (``--baseline``).
"""

from __future__ import annotations

import argparse

import numpy as np
from engine_common import interleaved, load_baseline, table

import darknet_bn
from darknet_bn import layer as layer_mod
from darknet_bn._capi import EXEC, ffi, lib


def layer_for(pkg, x: np.ndarray, g: np.ndarray):
    b, c, h, w = x.shape
    layer = pkg.make_batchnorm_layer(b, w, h, c, "torch")
    layer.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + layer.flavor.eps)
    layer.forward(x, train=True)
    layer.delta[...] = g
    return layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x32x1x1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--activation", default=None, help="also time train+NAME and bwd+NAME (fused), e.g. leaky")
    args = ap.parse_args()
    b, c, h, w = (int(v) for v in args.shape.lower().split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, h, w), dtype=np.float32) * 2 + 3
    g = rng.standard_normal((b, c, h, w), dtype=np.float32)
    darknet_bn.set_num_threads(args.threads)
    L = layer_for(darknet_bn, x, g)
    ex1 = ffi.new("dbn_exec *", {"nthreads": 1})
    ex2 = ffi.new("dbn_exec *", {"nthreads": 2})
    px = ffi.from_buffer("float[]", x)

    # the argument lists of the layer's prepared calls, read back from its C structs
    def fields(call, names):
        return tuple(getattr(call, f) for f in names)

    a_tr = fields(L._c_train, layer_mod._TRAIN_FIELDS)
    a_in = fields(L._c_infer, layer_mod._INFER_FIELDS)
    a_bw = fields(L._c_bwd[True], layer_mod._BWD_FIELDS)
    pd = L._p_delta

    # The C passes with the layer's prepared arguments (+ activation NULL = linear, exec)
    def c_train(ex):
        args_ = a_tr + (ffi.NULL, ex)
        return lambda: lib.dbn_forward_train(px, *args_)

    def c_infer(ex):
        args_ = a_in + (ffi.NULL, ex)
        return lambda: lib.dbn_forward_infer(px, *args_)

    def c_bwd(ex):
        args_ = a_bw + (ffi.NULL, ex)
        return lambda: lib.dbn_backward(px, pd, ffi.NULL, *args_)

    # The same through the struct-argument calls the layer makes (dbn_*_with: 3-5 arguments)
    def with_exec(call, ex):
        c = ffi.new(ffi.typeof(call), call[0])
        c.exec = ex
        return c

    def w_train(ex):
        call = with_exec(L._c_train, ex)
        return lambda: lib.dbn_forward_train_with(px, call, ffi.NULL)

    def w_infer(ex):
        call = with_exec(L._c_infer, ex)
        return lambda: lib.dbn_forward_infer_with(px, call, ffi.NULL)

    def w_bwd(ex):
        call = with_exec(L._c_bwd[True], ex)
        return lambda: lib.dbn_backward_with(px, pd, ffi.NULL, call, ffi.NULL)

    cases = {
        "cffi empty": lambda: lib.dbn_has_openmp(),
        "from_buffer": lambda: ffi.from_buffer("float[]", x),
        "take_input": lambda: L._take_input(x, True, L._count),
        "forward_done": lambda: L._forward_done(x, px, True),
        "take_net_delta": lambda: L._take_net_delta(L.delta),
        "C train 1T": c_train(ex1),
        "C train 2T": c_train(ex2),
        "C infer 1T": c_infer(ex1),
        "C infer 2T": c_infer(ex2),
        "C bwd 1T": c_bwd(ex1),
        "C bwd 2T": c_bwd(ex2),
        "C struct train 1T": w_train(ex1),
        "C struct infer 1T": w_infer(ex1),
        "C struct bwd 1T": w_bwd(ex1),
        "train": lambda: L.forward(x, train=True),
        "infer": lambda: L.forward(x, train=False),
        "bwd": lambda: (L.forward(x, train=True), L.backward(L.delta)),
        "train (for bwd)": lambda: L.forward(x, train=True),
    }
    act = args.activation
    if act:
        A = layer_for(darknet_bn, x, g)
        cases[f"train+{act}"] = lambda: A.forward(x, train=True, activation=act)
        cases[f"bwd+{act}"] = lambda: (A.forward(x, train=True, activation=act), A.backward(A.delta))
    base = load_baseline(args.baseline)
    if base is not None:
        base.set_num_threads(args.threads)
        B = layer_for(base, x, g)
        cases["base train"] = lambda: B.forward(x, train=True)
        cases["base infer"] = lambda: B.forward(x, train=False)
        cases["base bwd"] = lambda: (B.forward(x, train=True), B.backward(B.delta))
        if act:
            BA = layer_for(base, x, g)
            cases[f"base train+{act}"] = lambda: BA.forward(x, train=True, activation=act)
            cases[f"base bwd+{act}"] = lambda: (BA.forward(x, train=True, activation=act), BA.backward(BA.delta))
    assert EXEC.nthreads == args.threads
    med = interleaved(cases, args.rounds, args.reps)
    # a backward is timed after its training forward (the state users call it in): subtract the forward
    med["bwd"] -= med["train (for bwd)"]
    if base is not None:
        med["base bwd"] -= med["base train"]
    if act:
        med[f"bwd+{act}"] -= med[f"train+{act}"]
        if base is not None:
            med[f"base bwd+{act}"] -= med[f"base train+{act}"]
    del med["train (for bwd)"]
    print(f"shape {args.shape}, {args.rounds} rounds x {args.reps} calls, medians per call:")
    print(table(med))
    if act:
        fused, plain = med[f"train+{act}"] + med[f"bwd+{act}"], med["train"] + med["bwd"]
        tr, bw = med[f"train+{act}"] / med["train"], med[f"bwd+{act}"] / med["bwd"]
        print(f"{act} fused / plain: train {tr:.2f}, bwd {bw:.2f}, fwd+bwd {fused / plain:.2f}")
    if base is not None:
        for k in ("train", "infer", "bwd") + ((f"train+{act}", f"bwd+{act}") if act else ()):
            print(f"{k}: base {med['base ' + k] / med[k]:.2f}x the time of now")


if __name__ == "__main__":
    main()
