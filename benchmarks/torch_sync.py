"""The cost of synchronizing BN in PyTorch: under torchrun, each process times a training step
(forward + backward, autograd) of darknet_bn.torch.SyncBatchNorm over gloo (one all_gather per pass)
against the unsynchronized darknet_bn.torch.BatchNorm2d (the same kernels, no communication) and
torch.nn.BatchNorm2d on the same slice, interleaved round by round. Rank 0 prints medians (and the minimums); a
step's time is the slowest process's.

    torchrun --nproc-per-node 2 benchmarks/torch_sync.py [--shape BxCxHxW ...] [--rounds R] [--threads N]

The shape is each process's slice. With P processes on P cores, use --threads 1 (the default).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

import darknet_bn.torch as dbt
from darknet_bn.torch.sync import _HDR  # the message header, doubles (the labels and the bare-gather baseline)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    shapes = args.shape or ["32x32x1x1", "128x256x1x1", "8x64x28x28", "16x64x56x56"]
    if rank == 0:
        print(
            f"{world} processes (gloo), {args.threads} thread(s) each; per-process slice; medians of "
            f"{args.rounds} interleaved rounds (ms); a training forward+backward per step"
        )
        print(
            f"{'slice':>14} {'SyncBatchNorm':>14} {'dbt.BN2d':>9} {'overhead':>9} {'nn.BN2d':>9} "
            f"{'gathered bytes/pass':>22}"
        )
    for text in shapes:
        b, c, h, w = (int(v) for v in text.lower().split("x"))
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(b, c, h, w, generator=g).requires_grad_(True)
        dy = torch.randn(b, c, h, w, generator=g)
        mods = {"sync": dbt.SyncBatchNorm(c), "local": dbt.BatchNorm2d(c), "torch": torch.nn.BatchNorm2d(c)}
        ts = {k: [] for k in mods}
        for rnd in range(args.rounds + 3):
            for name, m in mods.items():
                dist.barrier()
                t = time.perf_counter()
                m(x).backward(dy)
                dt = time.perf_counter() - t
                x.grad = None
                if rnd >= 3:  # warm-up rounds (the first synchronized forward checks the modules)
                    ts[name].append(dt)
        med, low = {}, {}
        for k, v in ts.items():  # the slowest process decides a step's time
            t = torch.tensor([statistics.median(v) * 1e3, min(v) * 1e3], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            med[k], low[k] = float(t[0]), float(t[1])
        if rank == 0:
            msg = f"fwd {world}x{8 * (_HDR + 3 * c)}, bwd {world}x{8 * (_HDR + 3 * c)}"
            print(
                f"{text:>14} {med['sync']:14.3f} {med['local']:9.3f} {med['sync'] - med['local']:+9.3f} "
                f"{med['torch']:9.3f} {msg:>22}   min {low['sync']:.3f} / {low['local']:.3f} / {low['torch']:.3f}",
                flush=True,
            )
    # gloo alone: two bare all_gathers (a step's messages for 64 channels), timed the same way
    bufs = [torch.zeros(_HDR + 3 * 64, dtype=torch.float64), torch.zeros(_HDR + 3 * 64, dtype=torch.float64)]
    outs = [torch.empty(world * b.numel(), dtype=torch.float64) for b in bufs]
    ts = []
    for rnd in range(args.rounds + 3):
        dist.barrier()
        t = time.perf_counter()
        for o, b in zip(outs, bufs):
            dist.all_gather_single(o, b) if hasattr(dist, "all_gather_single") else dist.all_gather_into_tensor(o, b)
        if rnd >= 3:
            ts.append(time.perf_counter() - t)
    t = torch.tensor([statistics.median(ts) * 1e3, min(ts) * 1e3], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(
            f"gloo alone, two all_gathers of a 64-channel step's messages: median {float(t[0]):.3f} ms, "
            f"min {float(t[1]):.3f} ms",
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
