"""Data-parallel training on CPUs with synchronized batch normalization (darknet_bn.torch.SyncBatchNorm).

    torchrun --nproc-per-node 2 examples/torchrun_train.py            # or: python -m torch.distributed.run ...
    torchrun --nproc-per-node 2 examples/torchrun_train.py --steps 20 --batch 64 --check

A small CNN (SiLU activations) with torch.nn.BatchNorm layers is converted with
SyncBatchNorm.convert_sync_batchnorm and wrapped in DistributedDataParallel (gloo); each process trains
on its slice of every global batch (a synthetic, learnable classification task), and the batch
statistics are those of the whole batch. Rank 0 prints the loss of every step, then that the parameters
and running statistics have the same bits on every process; with --check, also the largest relative
difference from one process training the same model (torch.nn.BatchNorm2d, float64) on the whole
batches, next to the difference of torch.nn's float32 model trained in one process (float32 rounding,
amplified by the training steps).

The activation is smooth on purpose. With ReLU, a pre-activation within rounding of 0 can fall on the
other side of the kink in float32 than in float64, which changes its gradient by a whole pixel's worth:
the figure would then tell which pixels sit on the kink, not how large the rounding is (with ReLU,
--steps 4 --batch 12 gave 0.0063 for both darknet_bn and torch.nn's float32 on one CPU, and 0.0063 and
2.2e-07 on another).

Prints, on rank 0:
    world 2: SyncBatchNorm x3, global batch 32 (slices [16, 16]), 10 steps
    step 1/10 loss 1.4463
    ...
    parameters and running statistics identical on all 2 processes: True
    max relative difference from one process on the whole batch (float64): 4e-07 (torch.nn in float32, one
    process: 6.3e-07)                                                               (with --check)
    done
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import darknet_bn.torch as dbt


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.SiLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.SiLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def batch(step: int, n: int):
    """The global batch of a step (the same on every process): images whose class sets a channel's mean."""
    g = torch.Generator().manual_seed(1000 + step)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 3, 16, 16, generator=g)
    x[:, 0] += (y.float() - 1.5).view(-1, 1, 1)
    return x, y


def slice_sizes(n: int, world: int) -> list:
    return [n // world + (r < n % world) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="global batch size (split over the processes)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--check", action="store_true", help="rank 0 also trains one process on the whole batches")
    args = ap.parse_args()

    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial model everywhere (DDP broadcasts rank 0's anyway)
    reference = make_model()
    model = make_model()
    model.load_state_dict(reference.state_dict())
    model = dbt.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)

    sizes = slice_sizes(args.batch, world)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    if rank == 0:
        nsync = sum(isinstance(m, dbt.SyncBatchNorm) for m in model.modules())
        print(
            f"world {world}: SyncBatchNorm x{nsync}, global batch {args.batch} (slices {sizes}), {args.steps} steps",
            flush=True,
        )
    for step in range(args.steps):
        x, y = batch(step, args.batch)
        opt.zero_grad()
        # The mean loss over the whole batch: this slice's sum / batch, times world, as DDP averages
        # the gradients over the processes (right for unequal slices too).
        loss = F.cross_entropy(ddp(x[lo:hi]), y[lo:hi], reduction="sum") * (world / args.batch)
        loss.backward()
        opt.step()
        total = loss.detach() / world
        dist.all_reduce(total)
        if rank == 0:
            print(f"step {step + 1}/{args.steps} loss {float(total):.4f}", flush=True)

    # every process holds the same model: parameters (DDP) and running statistics (SyncBatchNorm)
    flat = torch.cat([t.detach().double().reshape(-1) for t in model.state_dict().values()])
    rows = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(rows, flat)
    if rank == 0:
        same = all(torch.equal(r, rows[0]) for r in rows)
        print(f"parameters and running statistics identical on all {world} processes: {same}", flush=True)
        if args.check:  # one process on the whole batches: torch.nn.BatchNorm2d in float64, and in float32

            def train_alone(net: nn.Module, dtype: torch.dtype) -> dict:
                net = net.to(dtype)
                opt_one = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
                for step in range(args.steps):
                    x, y = batch(step, args.batch)
                    opt_one.zero_grad()
                    F.cross_entropy(net(x.to(dtype)), y).backward()
                    opt_one.step()
                return net.state_dict()

            f32 = make_model()
            f32.load_state_dict(reference.state_dict())
            theirs32 = train_alone(f32, torch.float32)
            theirs = train_alone(reference, torch.float64)

            def rel(sd: dict) -> float:  # per tensor, relative to its largest value; the worst tensor
                return max(
                    float((sd[k].double() - theirs[k]).abs().max() / theirs[k].abs().max())
                    for k in sd
                    if not k.endswith("num_batches_tracked")
                )

            ours = rel(model.state_dict())
            print(
                f"max relative difference from one process on the whole batch (float64): {ours:.2g}"
                f" (torch.nn in float32, one process: {rel(theirs32):.2g})",
                flush=True,
            )
        print("done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
