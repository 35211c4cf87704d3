"""Synchronized BN's cost: under `mpiexec -n P`, each process times a synchronized training forward and
backward (darknet_bn.distributed.SyncLayer: one Allreduce per pass) against the ordinary Layer on the
same slice, interleaved round by round. Rank 0 prints medians and the overhead.

    mpiexec -n 2 python benchmarks/mpi_sync.py [--shape BxCxHxW ...] [--rounds R] [--threads N]

The shape is each process's slice. With P processes on P cores, use --threads 1 (the default).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import darknet_bn
from darknet_bn.distributed import MPI, make_sync_batchnorm_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    darknet_bn.set_num_threads(args.threads)
    shapes = args.shape or ["32x32x1x1", "128x256x1x1", "8x64x28x28", "16x64x56x56"]
    if rank == 0:
        print(
            f"{comm.Get_size()} processes, {args.threads} thread(s) each; per-process slice; medians of "
            f"{args.rounds} interleaved rounds (ms); forward+backward per step"
        )
        print(f"{'slice':>14} {'sync':>9} {'local':>9} {'overhead':>9} {'msg bytes/pass':>15}")
    for text in shapes:
        b, c, h, w = (int(v) for v in text.lower().split("x"))
        x = np.random.default_rng(rank).standard_normal((b, c, h, w)).astype(np.float32)
        sync = make_sync_batchnorm_layer(b, w, h, c, comm, "torch")
        local = darknet_bn.make_batchnorm_layer(b, w, h, c, "torch")
        ts = {"sync": [], "local": []}
        for rnd in range(args.rounds + 2):
            for name, layer in (("sync", sync), ("local", local)):
                comm.Barrier()
                t = time.perf_counter()
                layer.forward(x)
                layer.backward(layer.delta)
                dt = time.perf_counter() - t
                if rnd >= 2:  # two warm-up rounds
                    ts[name].append(dt)
        # the slowest process decides a step's time
        med = {k: comm.allreduce(statistics.median(v), op=MPI.MAX) * 1e3 for k, v in ts.items()}
        if rank == 0:
            print(
                f"{text:>14} {med['sync']:9.3f} {med['local']:9.3f} {med['sync'] - med['local']:+9.3f} "
                f"{'fwd ' + str(24 * (c + 1)) + ', bwd ' + str(8 * (2 * c + 1)):>15}"
            )


if __name__ == "__main__":
    main()
