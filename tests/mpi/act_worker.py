"""Run under mpiexec by tests/test_train_activation.py: synchronized BN followed by an activation in the
same passes. Each process holds a slice of the batch; rank 0's single Layer on the whole batch (with the
same activation) is the reference every process checks against. Prints "OK <n> checks" on rank 0."""

from __future__ import annotations

import numpy as np

import darknet_bn
from darknet_bn.distributed import MPI, make_sync_batchnorm_layer

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
darknet_bn.set_num_threads(1)  # several processes share the cores


def check(name, got, want, scale=None, rtol=2e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = scale if scale is not None else max(np.abs(want).max(), np.finfo(np.float32).tiny)
    err = np.abs(got - want).max()
    if not err <= rtol * scale:
        print(f"MISMATCH rank {rank} {name}: max error {err:.3g} > {rtol} * {scale:.3g}", flush=True)
        comm.Abort(1)


def scenario(flavor, act, slices, c, h, w, renorm, seed):
    total = sum(slices)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((total, c, h, w)) * rng.uniform(0.5, 3, (1, c, 1, 1)) + 0.5).astype(np.float32)
    dy = rng.standard_normal((total, c, h, w)).astype(np.float32)
    sc, bi = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    lo = sum(slices[:rank])
    mine = slice(lo, lo + slices[rank])
    kw = dict(renorm=True, rmax=1.5, dmax=0.5) if renorm else {}
    layer = make_sync_batchnorm_layer(slices[rank], w, h, c, comm, flavor, **kw)
    ref = darknet_bn.make_batchnorm_layer(total, w, h, c, flavor, **kw)
    for ly in (layer, ref):
        ly.scales[:], ly.biases[:] = sc, bi
        ly.rolling_mean[:], ly.rolling_variance[:] = x.mean(axis=(0, 2, 3)) + 0.2, 1.3
    checks = 0
    for step in range(2):
        for ly in (layer, ref):  # updates add up: each step's from zero
            ly.scale_updates[:] = ly.bias_updates[:] = 0.0
        out = layer.forward(np.ascontiguousarray(x[mine]), activation=act).copy()
        layer.delta[:] = dy[mine]
        dx = layer.backward()
        layer.allreduce_updates()
        ref.forward(x, activation=act)
        ref.delta[:] = dy
        rdx = ref.backward()
        scale = np.abs(dy).max() * (ref.scales / np.sqrt(ref.variance + 1e-5)).max()
        check(f"{flavor} {act} step {step} output", out, ref.output[mine])
        check(f"{flavor} {act} step {step} input delta", dx, rdx[mine], scale=scale)
        n_per = np.abs(dy).sum(axis=(0, 2, 3)).max()
        check(f"{flavor} {act} step {step} bias_updates", layer.bias_updates, ref.bias_updates, scale=n_per)
        check(f"{flavor} {act} step {step} scale_updates", layer.scale_updates, ref.scale_updates, scale=n_per * 4)
        for k in ("mean_delta", "variance_delta"):
            check(f"{flavor} {act} step {step} {k}", getattr(layer, k), getattr(ref, k))
        # an inference forward with the activation and its (local) backward: no communication
        out = layer.forward(np.ascontiguousarray(x[mine]), train=False, activation=act).copy()
        layer.delta[:] = dy[mine]
        dxi = layer.backward()
        ref.forward(x, train=False, activation=act)
        ref.delta[:] = dy
        check(f"{flavor} {act} step {step} inference output", out, ref.output[mine])
        check(f"{flavor} {act} step {step} inference delta", dxi, ref.backward()[mine], scale=scale)
        checks += 7
    return checks


n = 0
slices = [3 + r for r in range(size)]
for flavor, act, renorm in [("torch", "swish", False), ("pjreddie", "leaky", False), ("alexeyab", "mish", True)]:
    n += scenario(flavor, act, slices, 6, 5, 4, renorm, 7)
# a bad activation on one process raises on every process (no hang)
layer = make_sync_batchnorm_layer(4, 3, 3, 2, comm, "torch")
x = np.ones((4, 2, 3, 3), np.float32)
x[0] = 2
try:
    layer.forward(x, activation="leaky" if rank else "softmax")
    raised = False
except ValueError:
    raised = True
if not raised:
    print(f"MISMATCH rank {rank}: a bad activation did not raise", flush=True)
    comm.Abort(1)
n += 1
if rank == 0:
    print(f"OK {n} checks on {size} processes", flush=True)
