"""Training forward and backward of one shape (default the MLP case, 128x1024x1x1): darknet_bn's
Layer against PyTorch's CPU batch norm, interleaved round by round (benchmarks/engine_common.py).

    python benchmarks/engine_train.py [--shape 128x1024x1x1] [--threads 2] [--baseline DIR]

Rows, each timed in the state users call it:
- ``torch fwd``: ``F.batch_norm(x, rm, rv, w, b, training=True)`` (allocates its output, as users call it);
- ``torch bwd``: ``torch.ops.aten.native_batch_norm_backward`` with the forward's saved statistics (the
  fastest documented form: no autograd graph; autograd's ``y.backward(g)`` adds its own cost);
- ``dbn fwd``: ``layer.forward(x, train=True)``; ``dbn bwd``: ``layer.backward(layer.delta)`` (in place)
  after a training forward (scales set to the batch's std so the repeated in-place backward is a
  projection and delta keeps its size);
- ``base fwd``/``base bwd``: the same with the baseline build given by ``--baseline``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch  # before darknet_bn: one libgomp for both
import torch.nn.functional as F
from engine_common import interleaved, load_baseline, table

import darknet_bn


def layer_cases(pkg, tag: str, x: np.ndarray, g: np.ndarray, threads: int) -> dict:
    b, c, h, w = x.shape
    pkg.set_num_threads(threads)
    layer = pkg.make_batchnorm_layer(b, w, h, c, "torch")
    # scales = the batch's std: the training backward is then a projection (idempotent), so the
    # in-place backward, called again and again on its own output, keeps delta's size (no subnormals)
    layer.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + layer.flavor.eps)
    layer.forward(x, train=True)
    layer.delta[...] = g

    def fwd():
        layer.forward(x, train=True)

    def bwd():
        layer.backward(layer.delta)

    return {f"{tag} fwd": fwd, f"{tag} bwd": bwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128x1024x1x1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--reps", type=int, default=0, help="calls per round (0: about 2 ms of work)")
    ap.add_argument("--baseline", default=None)
    args = ap.parse_args()
    b, c, h, w = (int(v) for v in args.shape.lower().split("x"))
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, h, w), dtype=np.float32) * 2 + 3
    g = rng.standard_normal((b, c, h, w), dtype=np.float32)

    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    wt, bt = torch.ones(c), torch.zeros(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    _, save_mean, save_invstd = torch.native_batch_norm(tx, wt, bt, rm, rv, True, 0.1, 1e-5)

    def tfwd():
        F.batch_norm(tx, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5)

    def tbwd():
        torch.ops.aten.native_batch_norm_backward(
            tg, tx, wt, rm, rv, save_mean, save_invstd, True, 1e-5, [True, True, True]
        )

    cases = {"torch fwd": tfwd, "torch bwd": tbwd}
    cases.update(layer_cases(darknet_bn, "dbn", x, g, args.threads))
    base = load_baseline(args.baseline)
    if base is not None:
        cases.update(layer_cases(base, "base", x, g, args.threads))
    reps = args.reps or max(5, int(2e-3 / max(1e-7, x.nbytes / 20e9)))
    med = interleaved(cases, args.rounds, reps)
    print(f"shape {args.shape}, {args.threads} threads, {args.rounds} rounds x {reps} calls, medians:")
    for kind in ("fwd", "bwd"):
        print(table({k: v for k, v in med.items() if k.endswith(kind)}, ref=f"torch {kind}"))
    if base is not None:
        for kind in ("fwd", "bwd"):
            print(f"dbn/base {kind}: base {med[f'base {kind}'] / med[f'dbn {kind}']:.2f}x the time of dbn")


if __name__ == "__main__":
    main()
