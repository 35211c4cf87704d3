"""Batch renormalization on the demo's digits MLP with batches of 4: plain BN against BN with
renormalization (and no BN), with i.i.d. batches and with non-i.i.d. ones (each batch drawn from a
single class, the paper's hard case). Prints the validation and training accuracy in inference mode (rolling
statistics, how the network is used), mean and standard deviation over several seeds.

    python benchmarks/renorm_experiment.py [--seeds 5] [--epochs 10] [--lr 0.01]

Renormalization follows the paper's schedule: rmax from 1 to 3 and dmax from 0 to 5, linearly over
the first epochs (--warmup), before which the layer is plain BN.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from darknet_bn import Layer
from darknet_bn.examples.digits import MLP, evaluate, init_weights, load_digits_split

BATCH = 4


def batches(y: np.ndarray, epochs: int, seed: int, iid: bool) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        if iid:
            order = rng.permutation(len(y))
            out.append([order[i : i + BATCH] for i in range(0, len(y) - BATCH + 1, BATCH)])
        else:  # every batch from one class
            groups = []
            for cls in np.unique(y):
                idx = rng.permutation(np.flatnonzero(y == cls))
                groups += [idx[i : i + BATCH] for i in range(0, len(idx) - BATCH + 1, BATCH)]
            out.append([groups[i] for i in rng.permutation(len(groups))])
    return out


def run(kind: str, data, epochs: int, seed: int, iid: bool, lr: float, warmup: int) -> tuple[float, float]:
    x_tr, y_tr, x_va, y_va = data
    model = MLP(init_weights(seed), use_bn=kind != "none", batch=BATCH, flavor="torch")
    if kind == "renorm":
        model.bn = [Layer(BATCH, 1, 1, layer.c, "torch", renorm=True, rmax=1.0, dmax=0.0) for layer in model.bn]
    plan = batches(y_tr, epochs, seed + 1000, iid)
    total = sum(len(e) for e in plan)
    step = 0
    for epoch in plan:
        for idx in epoch:
            if kind == "renorm":  # the paper's schedule: plain BN, then bounds growing to 3 and 5
                t = min(1.0, step / max(1, warmup * len(epoch)))
                for layer in model.bn:
                    layer.rmax, layer.dmax = 1.0 + 2.0 * t, 5.0 * t
            model.train_step(x_tr[idx], y_tr[idx], lr, 0.9, 0.0005)
            step += 1
    _, val_acc = evaluate(model, x_va, y_va)
    _, train_acc = evaluate(model, x_tr, y_tr)
    assert step == total
    return val_acc, train_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=2, help="epochs over which rmax and dmax grow")
    args = ap.parse_args()
    data = load_digits_split()
    print(
        f"digits MLP 64-32-32-10, batches of {BATCH}, {args.epochs} epochs, lr {args.lr}, flavor torch, "
        f"seeds 0..{args.seeds - 1}; renorm: rmax 1->3, dmax 0->5 over {args.warmup} epochs"
    )
    print(f"{'batches':>8} {'model':>8} {'validation accuracy %':>22} {'training accuracy %':>20}")
    for iid in (True, False):
        for kind in ("none", "bn", "renorm"):
            res = [run(kind, data, args.epochs, s, iid, args.lr, args.warmup) for s in range(args.seeds)]
            acc = [100 * r[0] for r in res]
            tr = [100 * r[1] for r in res]
            print(
                f"{'iid' if iid else 'by class':>8} {kind:>8} "
                f"{statistics.mean(acc):13.1f} +- {statistics.stdev(acc):4.1f}"
                f" {statistics.mean(tr):11.1f} +- {statistics.stdev(tr):4.1f}"
            )


if __name__ == "__main__":
    main()
