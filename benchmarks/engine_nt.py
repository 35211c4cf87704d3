"""Non-temporal stores and the fused-plan threshold on this machine: each pass on tensors of 4-32 MiB
with non-temporal stores off, at the thresholds in use, and always on; and the training passes with
the fused plan never and always taken. Interleaved round by round (benchmarks/engine_common.py).

    python benchmarks/engine_nt.py [--mib 4,8,12,16,24,32] [--build-dir /tmp/dbn_variants]

Variants (internal.h's constants overridden by -D; built once into --build-dir, see build_variant):
- ``off``: this build with ``exec.plain_stores = 1`` (plain stores only);
- ``now``: this build as it is (DBN_NT_*_BYTES, DBN_STREAM_MAX);
- ``on``: DBN_NT_*_BYTES = 0 (every output streamed);
- ``3ph`` / ``fused``: DBN_STREAM_MAX huge / 0 (training forward and backward: three phases always /
  fused whenever there are enough channel groups). Plain and non-temporal stores give the same bits;
  the plan choice can change the last bits of a result (the order of the sums).
Tensors are N x 64 x 64 x 64 (1 MiB per image, lane mode), the layer's passes as users call them.
"""

from __future__ import annotations

import argparse

import numpy as np
from engine_common import build_variant, interleaved

import darknet_bn

VARIANTS = {
    "on": "-DDBN_NT_TRAIN_BYTES=0 -DDBN_NT_INFER_BYTES=0 -DDBN_NT_BACKWARD_BYTES=0",
    "3ph": "-DDBN_STREAM_MAX=1e30",
    "fused": "-DDBN_STREAM_MAX=0",
}


def passes(pkg, x: np.ndarray, g: np.ndarray, plain: int) -> dict:
    b, c, h, w = x.shape
    layer = pkg.make_batchnorm_layer(b, w, h, c, "torch")
    layer.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + layer.flavor.eps)
    layer.forward(x, train=True)
    layer.delta[...] = g
    ex = pkg._capi.EXEC

    def train():
        ex.plain_stores = plain
        layer.forward(x, train=True)

    def infer():
        ex.plain_stores = plain
        layer.forward(x, train=False)

    def bwd():  # after train()'s training forward, in place
        ex.plain_stores = plain
        layer.backward(layer.delta)

    return {"train": train, "bwd": bwd, "infer": infer}  # bwd right after train: a training backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", default="4,8,12,16,24,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build-dir", default="/tmp/dbn_variants")
    args = ap.parse_args()
    pkgs = {"now": darknet_bn}
    for name, flags in VARIANTS.items():
        pkgs[name] = build_variant(args.build_dir, f"dbn_{name}", flags)
    for p in pkgs.values():
        p.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.rounds} rounds x {args.reps} calls; medians in ms;")
    print("(ratio): the median over rounds of the row's time / the same round's 'now'")
    print(f"{'MiB':>4} {'pass':>5}  {'off':>14} {'now':>7} {'on':>14} {'3ph':>14} {'fused':>14}")
    rng = np.random.default_rng(0)
    for mib in (int(v) for v in args.mib.split(",")):
        shape = (mib, 64, 64, 64)
        x = rng.standard_normal(shape, dtype=np.float32)
        g = rng.standard_normal(shape, dtype=np.float32)
        cases = {}
        for name, plain, pkg in [
            ("off", 1, darknet_bn),
            ("now", 0, darknet_bn),
            ("on", 0, pkgs["on"]),
            ("3ph", 0, pkgs["3ph"]),
            ("fused", 0, pkgs["fused"]),
        ]:
            for k, f in passes(pkg, x, g, plain).items():
                if k == "infer" and name in ("3ph", "fused"):
                    continue  # inference has no reduction: the plan threshold does not apply
                cases[f"{name} {k}"] = f
        raw: dict = {}
        med = interleaved(cases, args.rounds, args.reps, raw)
        for k in ("train", "infer", "bwd"):
            now = med[f"now {k}"]
            cells = []
            for v in ("off", "now", "on", "3ph", "fused"):
                t = med.get(f"{v} {k}")
                cells.append(
                    " " * 14 if t is None else f"{t * 1e3:6.2f} ({t / now:4.2f})" if v != "now" else f"{t * 1e3:7.2f}"
                )
            print(f"{mib:>4} {k:>5}  " + " ".join(cells))
        del cases, med


if __name__ == "__main__":
    main()
