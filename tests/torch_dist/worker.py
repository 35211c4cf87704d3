"""One rank of tests/test_torch_sync.py: runs every case over one gloo process group and writes
{case: "ok" | the failure} to <out_dir>/rank<r>.json. Launched as torchrun would (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT in the environment).

Every rank builds the whole batch from a seed, takes its slice, and checks its own results against
the independent reference: torch.nn.functional.batch_norm (or torch.nn.BatchNorm / a torch.nn CNN) in
float64 on the concatenated batch, in one process.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import darknet_bn.torch as dbt

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))
OUT = sys.argv[1] if len(sys.argv) > 1 else "."
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def close(actual, expected, name, rtol=2e-5):
    """|actual - expected| <= rtol * max|expected| (float32 rounding relative to the data's scale)."""
    a = actual.detach().double()
    e = expected.detach().double()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    if e.numel() == 0:
        return
    scale = max(float(e.abs().max()), 1e-30)
    err = float((a - e).abs().max())
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


def same_on_every_rank(t: torch.Tensor, name: str) -> None:
    """The tensor has the same bits on every rank."""
    t = t.detach().contiguous().view(-1).double()
    rows = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(rows, t)
    for r, row in enumerate(rows):
        assert torch.equal(row, rows[0]), f"{name}: rank {r} differs from rank 0"


def slices(sizes):
    start = sum(sizes[:RANK])
    return start, start + sizes[RANK]


def bn_step_case(
    sizes, shape_rest, *, cl=False, affine=True, momentum=0.1, track=True, steps=2, seed=0, dims=2, bias=True
):
    """Training steps of a SyncBatchNorm (inside DDP when it has parameters) against F.batch_norm in
    float64 on the whole batch; then an eval forward."""
    c = shape_rest[0]
    n = sum(sizes)
    lo, hi = slices(sizes)
    g = torch.Generator().manual_seed(seed)
    mod = dbt.SyncBatchNorm(c, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track, bias=bias)
    if affine:
        with torch.no_grad():
            mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
            if bias:
                mod.bias.copy_(torch.randn(c, generator=g))
    w64 = mod.weight.detach().double().clone() if affine else None
    b64 = mod.bias.detach().double().clone() if (affine and bias) else None
    rm64 = torch.zeros(c, dtype=torch.float64) if track else None
    rv64 = torch.ones(c, dtype=torch.float64) if track else None
    net = DDP(mod) if affine else mod
    for step in range(steps):
        scale = (torch.arange(c, dtype=torch.float64) + 1).view([1, c] + [1] * (len(shape_rest) - 1))
        xf = (torch.randn((n,) + tuple(shape_rest), generator=g, dtype=torch.float64) * scale + 3 * scale).float()
        gf = torch.randn(xf.shape, generator=g).float()
        x = xf[lo:hi].clone()
        if cl:
            x = x.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        x.requires_grad_(True)
        if affine:
            mod.weight.grad = None
            if bias:
                mod.bias.grad = None
        out = net(x)
        assert not cl or out.is_contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        (out * gf[lo:hi]).sum().backward()
        # the reference: one process, the whole batch, float64
        x64 = xf.double().requires_grad_(True)
        wr = w64.clone().requires_grad_(True) if affine else None
        br = b64.clone().requires_grad_(True) if b64 is not None else None
        mom = momentum if momentum is not None else 1.0 / (step + 1)
        ref = F.batch_norm(x64, rm64, rv64, wr, br, True, mom, 1e-3)
        (ref * gf.double()).sum().backward()
        close(out, ref[lo:hi], f"step {step} output")
        close(x.grad, x64.grad[lo:hi], f"step {step} input grad")
        if affine:  # DDP averaged the ranks' contributions: the sum is world * the average
            close(mod.weight.grad * WORLD, wr.grad, f"step {step} weight grad")
            same_on_every_rank(mod.weight.grad, "weight grad")
            if bias:
                close(mod.bias.grad * WORLD, br.grad, f"step {step} bias grad")
        if track:
            close(mod.running_mean, rm64, f"step {step} running_mean")
            close(mod.running_var, rv64, f"step {step} running_var")
            same_on_every_rank(mod.running_mean, "running_mean")
            same_on_every_rank(mod.running_var, "running_var")
            assert int(mod.num_batches_tracked) == step + 1
    if track:  # eval: the running statistics, no communication
        net.eval()
        xe = torch.randn((3,) + tuple(shape_rest), generator=g) + 1
        with torch.no_grad():
            oe = net(xe)
        close(oe, F.batch_norm(xe.double(), rm64, rv64, w64, b64, False, 0.0, 1e-3), "eval output")
        net.train()


def W(*per_world):
    """Slice sizes for the current world size (2 or 3)."""
    return per_world[0] if WORLD == 2 else per_world[1]


@case
def equal_slices_nchw():
    bn_step_case(W([4, 4], [3, 3, 3]), (5, 3, 4))


@case
def unequal_slices_nchw():
    bn_step_case(W([1, 6], [2, 5, 1]), (4, 3, 3), seed=1)


@case
def empty_slice():
    bn_step_case(W([0, 5], [3, 0, 4]), (3, 2, 5), seed=2)


@case
def channels_last():
    bn_step_case(W([3, 2], [2, 3, 1]), (6, 3, 2), cl=True, seed=3)


@case
def channels_last_empty_slice():
    bn_step_case(W([4, 0], [0, 2, 3]), (6, 3, 2), cl=True, seed=4)


@case
def affine_off():
    bn_step_case(W([3, 4], [2, 2, 2]), (4, 3, 3), affine=False, seed=5)


@case
def no_bias():
    bn_step_case(W([3, 4], [2, 2, 2]), (4, 2, 2), bias=False, seed=6)


@case
def bn1d_2d_input():
    bn_step_case(W([8, 5], [4, 6, 3]), (7,), seed=7, dims=1)


@case
def bn1d_3d_input():
    bn_step_case(W([2, 3], [1, 2, 2]), (3, 9), seed=8, dims=1)


@case
def bn3d_channels_last():
    bn_step_case(W([2, 1], [1, 1, 1]), (3, 2, 3, 2), cl=True, seed=9, dims=3)


@case
def cumulative_momentum():
    bn_step_case(W([3, 3], [2, 2, 2]), (3, 2, 2), momentum=None, steps=3, seed=10)


@case
def no_running_stats():
    bn_step_case(W([3, 3], [2, 2, 2]), (3, 2, 2), track=False, seed=11)


@case
def no_grad_training_forward():
    c = 3
    sizes = W([2, 3], [1, 2, 2])
    lo, hi = slices(sizes)
    xf = torch.randn(sum(sizes), c, 4, generator=torch.Generator().manual_seed(12)) + 2
    mod = dbt.SyncBatchNorm(c)
    with torch.no_grad():
        out = mod(xf[lo:hi])
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    ref = F.batch_norm(xf.double(), rm, rv, None, None, True, 0.1, 1e-5)
    close(out, ref[lo:hi], "output")
    close(mod.running_var, rv, "running_var")


@case
def eval_and_no_group_are_plain():
    mod = dbt.SyncBatchNorm(4).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        mod.running_mean.copy_(torch.randn(4))
    # eval: no communication (a rank alone may call it), the running statistics
    ref = F.batch_norm(
        x.double(),
        mod.running_mean.double(),
        mod.running_var.double(),
        mod.weight.double(),
        mod.bias.double(),
        False,
        0.0,
        1e-5,
    )
    close(mod(x), ref, "eval output")


@case
def group_of_one_process_is_plain():
    groups = [dist.new_group([r]) for r in range(WORLD)]  # every rank takes part in every new_group
    mod = dbt.SyncBatchNorm(3, process_group=groups[RANK])
    x = torch.randn(4 + RANK, 3, 2) + 1  # different sizes: if it communicated, the statistics would mix
    out = mod(x)
    ref = F.batch_norm(x.double(), None, None, None, None, True, 0.1, 1e-5)
    close(out, ref, "output")


@case
def subgroup():
    """process_group=: statistics over the group's ranks only."""
    if WORLD < 3:
        return
    g01 = dist.new_group([0, 1])
    g2 = dist.new_group([2])
    pg = g01 if RANK < 2 else g2
    xs = [torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(20 + r)) for r in range(3)]
    mod = dbt.SyncBatchNorm(2, process_group=pg)
    out = mod(xs[RANK])
    whole = torch.cat(xs[:2]) if RANK < 2 else xs[2]
    ref = F.batch_norm(whole.double(), None, None, None, None, True, 0.1, 1e-5)
    close(out, ref[3 * RANK : 3 * RANK + 3] if RANK < 2 else ref, "output")


def raises_everywhere(fn, exc, words):
    try:
        fn()
    except exc as e:
        msg = str(e)
        assert all(w in msg for w in words), f"{exc.__name__} without {words}: {msg}"
        return msg
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc.__name__}, nothing raised")


@case
def mismatched_channels_raise_everywhere():
    mod = dbt.SyncBatchNorm(4 if RANK != WORLD - 1 else 5)
    x = torch.randn(3, mod.num_features, 2)
    raises_everywhere(lambda: mod(x), ValueError, ["different modules", "num_features"])


@case
def mismatched_eps_raise_everywhere():
    mod = dbt.SyncBatchNorm(4, eps=1e-5 if RANK else 1e-3)
    raises_everywhere(lambda: mod(torch.randn(3, 4, 2)), ValueError, ["different modules", "eps"])
    # after a first agreed forward, a changed momentum is caught in the forward's own message
    mod2 = dbt.SyncBatchNorm(4)
    mod2(torch.randn(3, 4, 2))
    if RANK == 1:
        mod2.momentum = 0.5
    raises_everywhere(lambda: mod2(torch.randn(3, 4, 2)), ValueError, ["different modules", "momentum"])


@case
def bad_input_raises_everywhere():
    mod = dbt.SyncBatchNorm(4)
    mod(torch.randn(2, 4, 3))
    bad = RANK == WORLD - 1
    x = torch.randn(2, 3, 3) if bad else torch.randn(2, 4, 3)
    raises_everywhere(lambda: mod(x), ValueError, ["channels"] + ([] if bad else [f"process {WORLD - 1}"]))
    x = torch.randn(2, 4, 3, dtype=torch.float64 if bad else torch.float32)
    raises_everywhere(lambda: mod(x), TypeError, ["float32"])
    x = torch.randn(4) if bad else torch.randn(2, 4)
    raises_everywhere(lambda: mod(x), ValueError, ["2D input"])
    # one value per channel over all the processes: raises everywhere (the count is global)
    x = torch.randn(1, 4) if RANK == 0 else torch.randn(0, 4)
    raises_everywhere(lambda: mod(x), ValueError, ["more than 1 value per channel"])
    # and the module still works afterwards
    out = mod(torch.randn(2, 4, 3))
    assert out.shape == (2, 4, 3)


@case
def one_collective_per_pass():
    """Forward: one all_gather (two on a module's first training forward: the descriptor alone first);
    backward: one; none without an input gradient, none in eval."""
    from darknet_bn.torch import sync

    calls = []
    real = sync._gather

    def counting(buf, pg, world):
        calls.append(buf.numel())
        return real(buf, pg, world)

    sync._gather = counting
    try:
        mod = dbt.SyncBatchNorm(5)
        x = torch.randn(3, 5, 2, requires_grad=True)
        h = sync._HDR
        mod(x).sum().backward()
        assert calls == [h, h + 15, h + 15], calls  # the backward's message has the forward's size
        del calls[:]
        mod(x).sum().backward()
        assert calls == [h + 15, h + 15], calls
        del calls[:]
        mod(x.detach()).sum().backward()  # weight and bias need gradients, the input does not
        assert calls == [h + 15], calls
        del calls[:]
        mod.eval()
        mod(x).sum().backward()
        assert calls == [], calls
    finally:
        sync._gather = real


@case
def input_requires_grad_on_one_rank_raises_everywhere():
    """Only rank 0's input requires a gradient: the forward raises on every rank (before, rank 0's
    backward message met the others' next forward: a gloo abort on one rank, a wrong running_mean on
    the other); nothing was updated, and the module keeps working."""
    c = 3
    sizes = W([3, 4], [2, 3, 2])
    lo, hi = slices(sizes)
    xf = torch.randn(sum(sizes), c, 4, generator=torch.Generator().manual_seed(40)) + 1
    mod = dbt.SyncBatchNorm(c)
    x = xf[lo:hi].clone().requires_grad_(RANK == 0)
    raises_everywhere(lambda: mod(x), ValueError, ["requires a gradient on processes [0]", "agree"])
    assert torch.equal(mod.running_mean, torch.zeros(c)) and torch.equal(mod.running_var, torch.ones(c))
    x = xf[lo:hi].clone().requires_grad_(True)
    gf = torch.randn(xf.shape, generator=torch.Generator().manual_seed(41))
    (mod(x) * gf[lo:hi]).sum().backward()
    x64 = xf.double().requires_grad_(True)
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    (F.batch_norm(x64, rm, rv, None, None, True, 0.1, 1e-5) * gf.double()).sum().backward()
    close(x.grad, x64.grad[lo:hi], "input grad")
    close(mod.running_mean, rm, "running_mean")
    close(mod.running_var, rv, "running_var")


@case
def backward_out_of_step_raises_everywhere():
    """Rank 0 runs a backward while the others run the next forward: both collectives raise (the
    header's phase and call number differ) instead of one being read as the other."""
    mod = dbt.SyncBatchNorm(4)
    x = torch.randn(3, 4, 2, requires_grad=True)
    out = mod(x)
    if RANK == 0:
        fn = lambda: out.sum().backward()  # noqa: E731
    else:
        fn = lambda: mod(x)  # noqa: E731
    raises_everywhere(fn, RuntimeError, ["out of step", "backward of its call 1", "call 2"])


def _checking_pointers(ptr_args):
    """Wrap sync._backend's passes: every pointer they get is 4-byte aligned; returns the restore function."""
    from darknet_bn.torch import _backend

    saved = {}
    for name, idx in ptr_args.items():
        real = getattr(_backend, name)
        saved[name] = real

        def wrapped(*a, _real=real, _idx=idx, _name=name):
            bad = [i for i in _idx if a[i] % 4]
            assert not bad, f"{_name}: misaligned pointer arguments {bad}"
            return _real(*a)

        setattr(_backend, name, wrapped)
    return lambda: [setattr(_backend, k, v) for k, v in saved.items()]


def _misaligned(t):
    """A float32 copy of t whose data_ptr() % 4 == 1 (torch.frombuffer with offset=1)."""
    buf = bytearray(4 * t.numel() + 1)
    m = torch.frombuffer(buf, dtype=torch.float32, offset=1, count=t.numel()).view(t.shape)
    m.copy_(t)
    assert m.data_ptr() % 4 == 1
    return m


@case
def misaligned_tensors_are_copied():
    """Input, weight, bias and running statistics not 4-byte aligned: the kernels get aligned copies
    (every pointer they see is checked), the results equal the reference and the running statistics
    land in the module's own (misaligned) tensors."""
    c = 3
    sizes = W([3, 2], [2, 1, 3])
    lo, hi = slices(sizes)
    g = torch.Generator().manual_seed(42)
    xf = torch.randn(sum(sizes), c, 5, generator=g) * 2 + 1
    gf = torch.randn(xf.shape, generator=g)
    mod = dbt.SyncBatchNorm(c)
    w0, b0 = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    mod.weight = nn.Parameter(_misaligned(w0))
    mod.bias = nn.Parameter(_misaligned(b0))
    mod.running_mean = _misaligned(torch.zeros(c))
    mod.running_var = _misaligned(torch.ones(c))
    restore = _checking_pointers(
        {
            "forward_moments": (0, 1),
            "forward_apply": tuple(range(9)),
            "backward_sums": (0, 1, 2, 3),
            "backward_apply": (0, 1, 2, 3, 4, 5, 6, 8, 9, 10),
        }
    )
    try:
        x = _misaligned(xf[lo:hi]).requires_grad_(True)
        out = mod(x)
        (out * gf[lo:hi]).sum().backward()
    finally:
        restore()
    x64 = xf.double().requires_grad_(True)
    w64, b64 = w0.double().requires_grad_(True), b0.double().requires_grad_(True)
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    ref = F.batch_norm(x64, rm, rv, w64, b64, True, 0.1, 1e-5)
    (ref * gf.double()).sum().backward()
    close(out, ref[lo:hi], "output")
    close(x.grad, x64.grad[lo:hi], "input grad")
    wg, bg = mod.weight.grad.clone(), mod.bias.grad.clone()
    dist.all_reduce(wg), dist.all_reduce(bg)  # this rank's contributions; their sum is the whole batch's
    close(wg, w64.grad, "weight grad", rtol=1e-4)
    close(bg, b64.grad, "bias grad", rtol=1e-4)
    assert mod.running_mean.data_ptr() % 4 == 1
    close(mod.running_mean, rm, "running_mean")
    close(mod.running_var, rv, "running_var")


@case
def zero_channels_raise_everywhere():
    """num_features=0: torch's ValueError on every rank (was an IndexError)."""
    mod = dbt.SyncBatchNorm(0)
    raises_everywhere(lambda: mod(torch.randn(2, 0, 3)), ValueError, ["number of input channels should be non-zero"])


@case
def no_input_grad_backward():
    """Weight and bias need gradients, the input does not: no collective, no input-gradient pass
    (backward_apply is not called), weight/bias gradients equal the reference's."""
    from darknet_bn.torch import _backend

    c = 4
    sizes = W([2, 5], [3, 0, 4])
    lo, hi = slices(sizes)
    g = torch.Generator().manual_seed(43)
    xf = torch.randn(sum(sizes), c, 3, generator=g) + 2
    gf = torch.randn(xf.shape, generator=g)
    mod = dbt.SyncBatchNorm(c, eps=1e-3)
    with torch.no_grad():
        mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
    w64 = mod.weight.detach().double().requires_grad_(True)
    b64 = mod.bias.detach().double().requires_grad_(True)
    calls = []
    real = _backend.backward_apply
    _backend.backward_apply = lambda *a: calls.append(a)
    try:
        (mod(xf[lo:hi].clone()) * gf[lo:hi]).sum().backward()
    finally:
        _backend.backward_apply = real
    assert calls == [], "backward_apply ran although no input gradient was needed"
    ref = F.batch_norm(xf.double(), None, None, w64, b64, True, 0.1, 1e-3)
    (ref * gf.double()).sum().backward()
    wg, bg = mod.weight.grad.clone(), mod.bias.grad.clone()
    dist.all_reduce(wg), dist.all_reduce(bg)
    close(wg, w64.grad, "weight grad", rtol=1e-4)
    close(bg, b64.grad, "bias grad", rtol=1e-4)


@case
def compiled_model_equals_eager():
    """torch.compile (dynamo, eager backend): the synchronized forward runs outside the graph."""
    torch._dynamo.reset()
    sizes = W([3, 2], [2, 1, 2])
    lo, hi = slices(sizes)
    xf = torch.randn(sum(sizes), 3, 4, 4, generator=torch.Generator().manual_seed(30))
    nets = []
    for _ in range(2):
        torch.manual_seed(3)
        nets.append(
            dbt.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU()))
        )
    compiled = torch.compile(nets[1], backend="eager")
    outs = []
    for net in (nets[0], compiled):
        x = xf[lo:hi].clone().requires_grad_(True)
        y = net(x)
        y.square().sum().backward()
        outs.append((y, x.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(nets[0][1].running_var, nets[1][1].running_var)


@case
def double_backward_raises_everywhere():
    mod = dbt.SyncBatchNorm(3)
    x = torch.randn(4, 3, 2, requires_grad=True)
    out = mod(x)
    raises_everywhere(
        lambda: torch.autograd.grad((out * out).sum(), x, create_graph=True), RuntimeError, ["double backward"]
    )


class SmallCNN(nn.Module):
    # SiLU, not ReLU: compared with a float64 run after training steps, a ReLU input within rounding of 0
    # can take the other side of the kink and change a gradient by a pixel's worth (examples/torchrun_train.py)
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.SiLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 10),
            nn.BatchNorm1d(10),
        )
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        return self.head(F.silu(self.body(x)))


def cnn_case(sizes, cl=False, steps=3):
    torch.manual_seed(0)
    ref = SmallCNN().double()
    model = SmallCNN()
    model.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    model = dbt.SyncBatchNorm.convert_sync_batchnorm(model)
    assert sum(isinstance(m, dbt.SyncBatchNorm) for m in model.modules()) == 3
    if cl:
        model = model.to(memory_format=torch.channels_last)
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    n = sum(sizes)
    lo, hi = slices(sizes)
    g = torch.Generator().manual_seed(1)
    for _step in range(steps):
        xf = torch.randn(n, 3, 6, 6, generator=g)
        yf = torch.randint(0, 4, (n,), generator=g)
        x = xf[lo:hi]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        # the mean over the whole batch: this rank's sum / n, times world (DDP averages the gradients)
        loss = F.cross_entropy(ddp(x), yf[lo:hi], reduction="sum") * (WORLD / n)
        loss.backward()
        opt.step()
        opt_ref.zero_grad()
        F.cross_entropy(ref(xf.double()), yf).backward()
        opt_ref.step()
    sd, sd_ref = model.state_dict(), ref.state_dict()
    assert sd.keys() == sd_ref.keys()
    for k in sd:
        if k.endswith("num_batches_tracked"):
            assert int(sd[k]) == steps
        else:
            close(sd[k], sd_ref[k], k, rtol=1e-4)
            same_on_every_rank(sd[k], k)


@case
def cnn_ddp_equal_slices():
    cnn_case(W([4, 4], [3, 3, 3]))


@case
def cnn_ddp_unequal_slices_channels_last():
    cnn_case(W([2, 5], [4, 1, 2]), cl=True)


@case
def convert_and_classes():
    from torch.nn.modules.batchnorm import _BatchNorm

    m = nn.Sequential(
        nn.BatchNorm1d(3),
        nn.Sequential(nn.BatchNorm2d(4, eps=1e-3, momentum=None)),
        nn.BatchNorm3d(5, affine=False),
        nn.SyncBatchNorm(6, track_running_stats=False),
        dbt.BatchNorm2d(7),
        dbt.SyncBatchNorm(8),
        nn.InstanceNorm2d(3),
    )
    w = m[1][0].weight
    m = dbt.SyncBatchNorm.convert_sync_batchnorm(m, process_group=dist.group.WORLD)
    bns = [m[0], m[1][0], m[2], m[3], m[4], m[5]]
    assert all(type(b) is dbt.SyncBatchNorm for b in bns)
    assert type(m[6]) is nn.InstanceNorm2d
    assert all(isinstance(b, _BatchNorm) and not isinstance(b, nn.SyncBatchNorm) for b in bns)
    assert m[1][0].weight is w and m[1][0].eps == 1e-3 and m[1][0].momentum is None
    assert m[2].weight is None and m[3].running_mean is None
    assert [b.num_features for b in bns] == [3, 4, 5, 6, 7, 8]
    assert all(b.process_group is dist.group.WORLD for b in bns)
    one = dbt.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(2))
    assert type(one) is dbt.SyncBatchNorm
    # DDP refuses torch's own on CPU, takes ours
    try:
        DDP(nn.Sequential(nn.Linear(2, 2), nn.SyncBatchNorm(2)))
    except ValueError as e:
        assert "GPU" in str(e)
    else:
        raise AssertionError("DDP accepted torch.nn.SyncBatchNorm on CPU")
    DDP(nn.Sequential(nn.Linear(2, 2), dbt.SyncBatchNorm(2)))


@case
def rank_stops_calling_timeout():
    """A rank that is alive but never calls: the others' collective raises at the group's timeout."""
    pg = dist.new_group(list(range(WORLD)), timeout=datetime.timedelta(seconds=2))
    mod = dbt.SyncBatchNorm(3, process_group=pg)
    if RANK == 0:
        t = time.monotonic()
        try:
            mod(torch.randn(2, 3))
        except RuntimeError:
            pass
        else:
            raise AssertionError("no error although rank 1 never called")
        assert time.monotonic() - t < 20
    dist.barrier()  # on WORLD: the others wait here meanwhile


def main():
    # A failing case can leave the ranks out of step (one rank skips a collective the others make):
    # the next collective then times out. Results are written after every case, so the cases run
    # before stay reported; the group's timeout bounds the wait.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    only = os.environ.get("DBN_CASES")
    only = only.split(",") if only else list(CASES)
    results = {}
    path = os.path.join(OUT, f"rank{RANK}.json")

    def save():
        with open(path + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(path + ".tmp", path)

    for name in [n for n in CASES if n in only and n != "rank_stops_calling_timeout"]:
        try:
            CASES[name]()
            results[name] = "ok"
        except Exception:  # noqa: BLE001
            results[name] = traceback.format_exc()
        save()
        dist.barrier()
    if "rank_stops_calling_timeout" in only:
        try:
            rank_stops_calling_timeout()
            results["rank_stops_calling_timeout"] = "ok"
        except Exception:  # noqa: BLE001
            results["rank_stops_calling_timeout"] = traceback.format_exc()
        save()
    # a rank that dies: the last one exits without a word; the others' next collective raises at once
    mod = dbt.SyncBatchNorm(3)
    mod(torch.randn(2, 3))
    dist.barrier()
    if RANK == WORLD - 1:
        os._exit(0)
    t = time.monotonic()
    try:
        mod(torch.randn(2, 3))
        died = "no error although a rank died"
    except RuntimeError as e:
        died = f"ok {time.monotonic() - t:.1f} s: {str(e).splitlines()[0][:200]}"
    with open(os.path.join(OUT, f"died{RANK}.txt"), "w") as f:
        f.write(died)
    os._exit(0)  # the group cannot be destroyed cleanly with a dead member


if __name__ == "__main__":
    main()
