"""Run under mpiexec by tests/test_distributed.py: each process holds a slice of the batch (sizes may
differ); rank 0 runs one ordinary Layer on the concatenated batch and checks that the synchronized
layers match it. Prints "OK <n checks>" on rank 0 and exits 0; on a mismatch prints it and exits 1."""

from __future__ import annotations

import sys

import numpy as np

import darknet_bn
from darknet_bn.distributed import MPI, make_sync_batchnorm_layer

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
darknet_bn.set_num_threads(1)  # several processes share the cores


def check(name, got, want, scale=None, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = scale if scale is not None else max(np.abs(want).max(), np.finfo(np.float32).tiny)
    err = np.abs(got - want).max()
    if not err <= rtol * scale:
        print(f"MISMATCH rank {rank} {name}: max error {err:.3g} > {rtol} * {scale:.3g}", flush=True)
        comm.Abort(1)


def scenario(flavor, slices, c, h, w, renorm, seed):
    total = sum(slices)
    rng = np.random.default_rng(seed)
    x = (
        rng.standard_normal((total, c, h, w)) * rng.uniform(0.5, 3, (1, c, 1, 1)) + rng.uniform(-2, 2, (1, c, 1, 1))
    ).astype(np.float32)
    dy = rng.standard_normal((total, c, h, w)).astype(np.float32)
    sc, bi = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    rm, rv = x.mean(axis=(0, 2, 3)) + 0.3, x.var(axis=(0, 2, 3)) * 1.5
    lo = sum(slices[:rank])
    mine = slice(lo, lo + slices[rank])
    kw = dict(renorm=True, rmax=3.0, dmax=5.0) if renorm else {}
    layer = make_sync_batchnorm_layer(slices[rank], w, h, c, comm, flavor, **kw)
    ref = darknet_bn.make_batchnorm_layer(total, w, h, c, flavor, **kw)
    for ly in (layer, ref):
        ly.scales[:], ly.biases[:], ly.rolling_mean[:], ly.rolling_variance[:] = sc, bi, rm, rv
    checks = 0
    for step in range(2):
        out = layer.forward(np.ascontiguousarray(x[mine])).copy()
        layer.delta[:] = dy[mine]
        dx = layer.backward()
        su, bu = layer.scale_updates.copy(), layer.bias_updates.copy()
        layer.allreduce_updates()
        ref.forward(x)
        ref.delta[:] = dy
        rdx = ref.backward()
        scale = np.abs(dy).max() * (ref.scales / np.sqrt(ref.variance + 1e-5)).max()
        check(f"{flavor} step {step} output", out, ref.output[mine])
        for k in ("mean", "variance", "rolling_mean", "rolling_variance", "r", "d", "mean_delta", "variance_delta"):
            check(
                f"{flavor} step {step} {k}",
                getattr(layer, k),
                getattr(ref, k),
                scale=max(1.0, np.abs(getattr(ref, k)).max()),
            )
        check(f"{flavor} step {step} input delta", dx, rdx[mine], scale=scale)
        sums = np.abs(dy).sum(axis=(0, 2, 3)).max() * max(1.0, np.abs(ref.x_norm).max())
        check(f"{flavor} step {step} scale_updates", layer.scale_updates, ref.scale_updates, scale=sums)
        check(f"{flavor} step {step} bias_updates", layer.bias_updates, ref.bias_updates, scale=sums)
        # before allreduce_updates: this slice's own contributions
        d64 = dy[mine].astype(np.float64)
        check(f"{flavor} step {step} local bias_updates", bu, d64.sum(axis=(0, 2, 3)), scale=sums)
        check(f"{flavor} step {step} local scale_updates", su, (d64 * ref.x_norm[mine]).sum(axis=(0, 2, 3)), scale=sums)
        # every process holds the same statistics, bit for bit
        for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
            everyone = comm.allgather(getattr(layer, k).tobytes())
            if any(e != everyone[0] for e in everyone):
                print(f"MISMATCH rank {rank}: {k} differs between processes", flush=True)
                comm.Abort(1)
        for ly in (layer, ref):
            ly.scale_updates[:] = 0
            ly.bias_updates[:] = 0
        checks += 1
    # inference needs no communication: each slice alone gives the reference's slice
    out = layer.forward(np.ascontiguousarray(x[mine]), train=False)
    ref.forward(x, train=False)
    check(f"{flavor} inference", out, ref.output[mine])
    return checks + 1


def main() -> int:
    n = 0
    for flavor in ("pjreddie", "alexeyab", "torch"):
        equal = [3] * size
        unequal = [1 + 2 * r for r in range(size)]  # 1, 3, 5: unequal slices
        n += scenario(flavor, equal, 4, 5, 6, False, 1)
        n += scenario(flavor, unequal, 3, 4, 4, False, 2)
        n += scenario(flavor, unequal, 5, 1, 1, False, 3)  # the MLP case; rank 0 holds 1 value per channel
        n += scenario(flavor, unequal, 3, 3, 3, True, 4)  # batch renormalization
    # A process with a different layer: every process raises (no hang).
    try:
        make_sync_batchnorm_layer(2, 3, 3, 4 + (rank == size - 1), comm)
        print(f"rank {rank}: a different layer on one process did not raise", flush=True)
        return 1
    except ValueError as e:
        assert "different layer" in str(e), e
    # A process with a bad input: every process raises (no hang).
    layer = make_sync_batchnorm_layer(2, 3, 3, 4, comm)
    bad = np.zeros(72 if rank != 0 else 71, np.float32)
    try:
        layer.forward(bad)
        print(f"rank {rank}: a bad input on rank 0 did not raise", flush=True)
        return 1
    except ValueError as e:
        assert ("expected 72" in str(e)) if rank == 0 else ("other process" in str(e)), e
    comm.Barrier()
    if rank == 0:
        print(f"OK {n} checks on {size} processes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
