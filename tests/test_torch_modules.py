"""darknet_bn.torch against torch.nn.BatchNorm1d/2d/3d (skipped when torch is not installed).

The independent reference is PyTorch itself: each comparison runs the same step through torch.nn's
float32 module and through the same module in float64, and requires darknet_bn's float32 result to be
as close to the float64 one as torch's float32 result is (within a small factor and a float32-rounding
floor). A counter on the kernel entry points makes sure the float32 CPU cases really ran darknet_bn
(and the fallback cases really did not).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'darknet_bn[torch]')")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import darknet_bn  # noqa: E402
import darknet_bn.torch as dbt  # noqa: E402
from darknet_bn.torch import _backend  # noqa: E402

nn = torch.nn
F = torch.nn.functional
CLASSES = {
    1: (nn.BatchNorm1d, dbt.BatchNorm1d),
    2: (nn.BatchNorm2d, dbt.BatchNorm2d),
    3: (nn.BatchNorm3d, dbt.BatchNorm3d),
}


@contextlib.contextmanager
def kernel_calls():
    """Count the calls into darknet_bn's C passes made inside the block (through the wrapped entry
    points of _backend or the raw ones functional.py's hot paths call)."""
    counts = {"train": 0, "infer": 0, "backward": 0}
    names = {
        "forward_train": "train",
        "forward_infer": "infer",
        "backward": "backward",
        "forward_train_raw": "train",
        "forward_infer_raw": "infer",
        "backward_raw": "backward",
    }
    saved = {n: getattr(_backend, n) for n in names}

    def wrap(name, f):
        def g(*a):
            counts[name] += 1
            return f(*a)

        return g

    for n, f in saved.items():
        setattr(_backend, n, wrap(names[n], f))
    try:
        yield counts
    finally:
        for n, f in saved.items():
            setattr(_backend, n, f)


@contextlib.contextmanager
def pass_spy(kind):
    """Record the buffers (addresses) each C pass of ``kind`` ("infer" or "backward") was given inside
    the block, whichever entry point was called: a list of (x, delta, dx) (delta, dx: None for infer)."""
    seen = []
    addr = _backend.address
    real, raw = (
        (_backend.forward_infer, _backend.forward_infer_raw)
        if kind == "infer"
        else (_backend.backward, _backend.backward_raw)
    )

    def spy(*a):
        seen.append((a[0], None, None) if kind == "infer" else a[:3])
        return real(*a)

    def spy_raw(*a):
        seen.append((addr(a[0]), None, None) if kind == "infer" else tuple(addr(h) for h in a[:3]))
        return raw(*a)

    name = "forward_infer" if kind == "infer" else "backward"
    setattr(_backend, name, spy)
    setattr(_backend, name + "_raw", spy_raw)
    try:
        yield seen
    finally:
        setattr(_backend, name, real)
        setattr(_backend, name + "_raw", raw)


def _max_abs(t):
    return float(t.abs().max()) if t.numel() else 0.0


def check(name, ours, t32, t64, floor=0.0):
    """ours (float32) is as close to the float64 reference as torch's float32 result is."""
    assert ours.shape == t64.shape, (name, ours.shape, t64.shape)
    ref = t64.double()
    err_ours = _max_abs(ours.double() - ref)
    err_t32 = _max_abs(t32.double() - ref)
    bound = 4 * err_t32 + 2e-6 * _max_abs(ref) + floor
    assert err_ours <= bound, f"{name}: error {err_ours:.3g} vs torch float32 {err_t32:.3g} (bound {bound:.3g})"


def make_input(shape, layout, seed):
    """float32 data (per-channel offsets and spreads) in the given layout: contiguous, channels_last
    (4-D/5-D), or strided (a slice of a larger tensor: not dense)."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    cshape = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.rand(cshape, generator=g) * 2.5 + 0.5
    offset = torch.rand(cshape, generator=g) * 4 - 2
    if layout == "strided":
        big = torch.randn(shape[:-1] + (2 * shape[-1],), generator=g)
        x = big[..., ::2]
    else:
        x = torch.randn(shape, generator=g)
    x = x * scale + offset if layout != "strided" else (big * scale + offset)[..., ::2]
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    return x


def trio(dim, c, seed=0, **kw):
    """torch.nn's module (float32), ours (the same state), torch.nn's in float64."""
    tcls, ocls = CLASSES[dim]
    t32 = tcls(c, **kw)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        if t32.weight is not None:
            t32.weight.copy_(torch.rand(c, generator=g) + 0.5)
        if t32.bias is not None:
            t32.bias.copy_(torch.randn(c, generator=g))
        if t32.running_mean is not None:
            t32.running_mean.copy_(torch.randn(c, generator=g))
            t32.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    ours = ocls(c, **kw)
    ours.load_state_dict(t32.state_dict())
    t64 = copy.deepcopy(t32).double()
    return t32, ours, t64


def run_step(mods, x, g, train, dtypes=None):
    """Forward (and backward when g is given) through each module (input in the matching dtype of
    dtypes, float32 by default); returns per module (y, x.grad, weight.grad, bias.grad)."""
    res = []
    for m, dt in zip(mods, dtypes or [torch.float32] * len(mods)):
        m.train(train)
        xi = x.to(dt).detach().requires_grad_(g is not None)
        for p in m.parameters():
            p.grad = None
        y = m(xi)
        if g is not None:
            y.backward(g.to(dt))
        res.append(
            (y.detach(), xi.grad, None if m.weight is None else m.weight.grad, None if m.bias is None else m.bias.grad)
        )
    return res


def _grad_floor(x, g, weight, train, rv, eps):
    """A float32-rounding floor for input gradients: |g| * |w| / sigma, the size of the terms that
    cancel (to ~0 when a channel has two values)."""
    dims = [0] + list(range(2, x.dim()))
    var = x.double().var(dims, unbiased=False) if train else rv.double()
    w = 1.0 if weight is None else float(weight.detach().abs().max())
    return 1e-5 * float(g.abs().max()) * max(w, 1.0) * float((var + eps).rsqrt().max())


# ------------------------------------------------------------------------------------------------
# The modules against torch.nn, on random shapes and every option

SPATIAL = {1: [(), (1,), (2,), (5,), (9,)], 2: [(1, 1), (2, 3), (5, 4), (7, 7)], 3: [(1, 1, 1), (2, 3, 2), (3, 2, 4)]}


@st.composite
def cases(draw):
    dim = draw(st.sampled_from([1, 2, 3]))
    spatial = draw(st.sampled_from(SPATIAL[dim]))
    n = draw(st.integers(1, 6))
    c = draw(st.integers(1, 9))
    shape = (n, c) + spatial
    layouts = (
        ["contiguous", "strided"]
        if not spatial
        else (["contiguous", "channels_last", "strided"] if dim >= 2 else ["contiguous", "strided"])
    )
    layout = draw(st.sampled_from(layouts))
    affine = draw(st.booleans())
    kw = dict(
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        momentum=draw(st.sampled_from([0.1, 0.5, None])),
        affine=affine,
        track_running_stats=draw(st.booleans()),
    )
    if affine:
        kw["bias"] = draw(st.booleans())
    return dim, shape, layout, kw, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_modules_match_torch_nn(case):
    dim, shape, layout, kw, seed = case
    if layout == "strided" and not shape[2:]:
        layout = "contiguous"
    t32, ours, t64 = trio(dim, shape[1], seed, **kw)
    values = int(np.prod(shape)) // shape[1]
    steps = [True, True, False] if values >= 2 else [False]
    if not kw["track_running_stats"] and values < 2:
        return  # training normalization everywhere: torch rejects one value per channel
    for step, train in enumerate(steps):
        x = make_input(shape, layout, seed + step)
        g = make_input(shape, "contiguous", seed + 50 + step)
        with kernel_calls() as calls:
            ((y_o, gx_o, gw_o, gb_o),) = run_step([ours], x, g, train)
        assert calls["backward"] == 1 and calls["train"] + calls["infer"] == 1, calls
        (y_t, gx_t, gw_t, gb_t), (y_d, gx_d, gw_d, gb_d) = run_step(
            [t32, t64], x, g, train, [torch.float32, torch.float64]
        )
        assert y_o.dtype == torch.float32 and y_o.stride() == y_t.stride(), (y_o.stride(), y_t.stride())
        check("output", y_o, y_t, y_d)
        floor = _grad_floor(x, g, t32.weight, train or not kw["track_running_stats"], t64.running_var, kw["eps"])
        check("input grad", gx_o, gx_t, gx_d, floor)
        gsum = 1e-6 * float(g.abs().sum(dim=[0] + list(range(2, len(shape)))).max())
        if t32.weight is not None:
            check("weight grad", gw_o, gw_t, gw_d, gsum)
        if t32.bias is not None:
            check("bias grad", gb_o, gb_t, gb_d, gsum)
        else:
            assert ours.bias is None
        if kw["track_running_stats"]:
            check("running_mean", ours.running_mean, t32.running_mean, t64.running_mean)
            check("running_var", ours.running_var, t32.running_var, t64.running_var)
            assert int(ours.num_batches_tracked) == int(t32.num_batches_tracked)
        else:
            assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None


def test_state_dict_and_signature():
    for _dim, (tcls, ocls) in CLASSES.items():
        assert issubclass(ocls, tcls)
        assert inspect.signature(ocls.__init__) == inspect.signature(tcls.__init__)
        for kw in ({}, {"affine": False}, {"track_running_stats": False}, {"bias": False}, {"momentum": None}):
            a, b = tcls(7, **kw), ocls(7, **kw)
            assert isinstance(b, tcls)
            sa, sb = a.state_dict(), b.state_dict()
            assert list(sa) == list(sb)
            assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
            assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
            for k in sa:
                assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k])
            with torch.no_grad():
                for t in b.state_dict().values():
                    t.add_(3)
            a.load_state_dict(b.state_dict())  # both ways
            b.load_state_dict(a.state_dict())
            assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in sa)
            assert repr(a) == repr(b)


def test_device_and_dtype_arguments():
    m = dbt.BatchNorm2d(4, device="cpu", dtype=torch.float64)
    assert m.weight.dtype == torch.float64 and m.running_mean.dtype == torch.float64


# ------------------------------------------------------------------------------------------------
# Errors: PyTorch's, for the same bad inputs

BAD = [
    (2, (2, 4, 3, 3), True),
    (2, (2, 4, 3, 3), False),  # wrong channel count
    (1, (1, 3), True),
    (1, (1, 3, 1), True),
    (2, (1, 3, 1, 1), True),  # one value per channel
    (2, (2, 3, 3), True),
    (1, (2, 3, 3, 3), True),
    (3, (2, 3, 4, 4), False),  # wrong rank
    (1, (3,), True),
]


@pytest.mark.parametrize("dim,shape,train", BAD)
def test_errors_are_torchs(dim, shape, train):
    tcls, ocls = CLASSES[dim]
    a, b = tcls(3).train(train), ocls(3).train(train)
    x = torch.randn(shape)
    with pytest.raises(Exception) as ea:
        a(x)
    with pytest.raises(Exception) as eb:
        b(x)
    assert type(ea.value) is type(eb.value) and str(ea.value) == str(eb.value)
    assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)


def test_functional_errors_are_torchs():
    x = torch.randn(4, 3, 2, 2)
    for args in [
        (x, torch.zeros(4), torch.ones(4)),
        (x, None, None, None, None, False),
        (x, torch.zeros(3), torch.ones(3), torch.ones(5)),
    ]:
        with pytest.raises(Exception) as ea:
            F.batch_norm(*args)
        with pytest.raises(Exception) as eb:
            dbt.batch_norm(*args)
        assert type(ea.value) is type(eb.value) and str(ea.value) == str(eb.value)


# ------------------------------------------------------------------------------------------------
# Zero-sized batches and the fallbacks


@pytest.mark.parametrize("train", [True, False])
def test_zero_sized_batch(train):
    a, b = nn.BatchNorm2d(3).train(train), dbt.BatchNorm2d(3).train(train)
    for m in (a, b):
        x = torch.randn(0, 3, 4, 4, requires_grad=True)
        y = m(x)
        y.sum().backward()
        assert y.shape == (0, 3, 4, 4) and x.grad.shape == x.shape
    assert torch.equal(a.weight.grad, b.weight.grad) and torch.equal(a.running_var, b.running_var)
    assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == int(train)


def _same_as_torch(tm, om, x, train, bitwise=True):
    tm.train(train), om.train(train)
    xa = x.detach().clone().requires_grad_(x.is_floating_point())
    xb = x.detach().clone().requires_grad_(x.is_floating_point())
    with kernel_calls() as calls:
        yb = om(xb)
        yb.float().sum().backward()
    ya = tm(xa)
    ya.float().sum().backward()
    assert calls == {"train": 0, "infer": 0, "backward": 0}, "a fallback ran darknet_bn's kernels"
    assert ya.dtype == yb.dtype and ya.device == yb.device
    if bitwise:
        assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
        assert torch.equal(tm.running_var, om.running_var)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("train", [True, False])
def test_other_dtypes_fall_back_to_torch(dtype, train):
    tm = nn.BatchNorm2d(5).to(dtype)
    om = dbt.convert(copy.deepcopy(tm))
    _same_as_torch(tm, om, torch.randn(4, 5, 3, 3).to(dtype), train)


def test_bfloat16_under_cpu_autocast_falls_back():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 4), nn.BatchNorm1d(4)
    )
    ours = dbt.convert(copy.deepcopy(net))
    x = torch.randn(8, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with kernel_calls() as calls:
            yo = ours(x)
        yt = net(x)
    assert calls == {"train": 0, "infer": 0, "backward": 0}
    assert yo.dtype == yt.dtype == torch.bfloat16 and torch.equal(yo, yt)
    assert torch.equal(net[1].running_mean, ours[1].running_mean)


def test_float32_input_under_autocast_uses_the_kernels():
    """Autocast leaves batch_norm's float32 inputs in float32 (torch does too): the kernels run."""
    tm, om = nn.BatchNorm1d(6), dbt.BatchNorm1d(6)
    x = torch.randn(10, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16), kernel_calls() as calls:
        yo = om(x)
        yt = tm(x)
    assert calls["train"] == 1 and yo.dtype == yt.dtype == torch.float32
    torch.testing.assert_close(yo, yt)


def test_non_cpu_device_falls_back():
    """The meta device stands in for an accelerator: torch's code path, torch's result."""
    tm, om = nn.BatchNorm2d(4, device="meta"), dbt.BatchNorm2d(4, device="meta")
    for train in (True, False):
        om.train(train), tm.train(train)
        with kernel_calls() as calls:
            y = om(torch.empty(2, 4, 3, 3, device="meta"))
        assert calls == {"train": 0, "infer": 0, "backward": 0}
        assert y.device.type == "meta" and y.shape == tm(torch.empty(2, 4, 3, 3, device="meta")).shape


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # inside torch.func
def test_functorch_and_forward_ad_fall_back():
    m = dbt.BatchNorm1d(3).eval()
    x, v = torch.randn(5, 3), torch.randn(5, 3)
    ref = nn.BatchNorm1d(3).eval()
    with kernel_calls() as calls:
        _, jo = torch.func.jvp(m, (x,), (v,))
        with torch.autograd.forward_ad.dual_level():
            yo = m(torch.autograd.forward_ad.make_dual(x, v))
            to = torch.autograd.forward_ad.unpack_dual(yo).tangent
        bo = torch.func.vmap(m, in_dims=1, out_dims=1)(x.unsqueeze(1).expand(5, 2, 3).contiguous())
    assert calls == {"train": 0, "infer": 0, "backward": 0}
    _, jt = torch.func.jvp(ref, (x,), (v,))
    assert torch.equal(jo, jt) and torch.equal(to, jt)
    assert torch.equal(bo[:, 0], ref(x))


def test_inference_mode_and_no_grad():
    tm, om = nn.BatchNorm2d(3), dbt.BatchNorm2d(3)
    x = make_input((4, 3, 5, 5), "channels_last", 11)
    for ctx in (torch.inference_mode, torch.no_grad):
        for train in (True, False):
            tm.train(train), om.train(train)
            with ctx(), kernel_calls() as calls:
                yo = om(x)
                yt = tm(x)
            assert calls["train" if train else "infer"] == 1 and calls["backward"] == 0
            assert not yo.requires_grad and yo.stride() == yt.stride()
            torch.testing.assert_close(yo, yt, rtol=1e-5, atol=2e-6)
            torch.testing.assert_close(om.running_var, tm.running_var)
    assert int(om.num_batches_tracked) == int(tm.num_batches_tracked) == 2


# ------------------------------------------------------------------------------------------------
# convert(): a ResNet-style network, trained


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = F.silu(self.bn1(self.conv1(x)))
        return F.silu(self.bn2(self.conv2(y)) + self.short(x))


class ResNetish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.layers = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 32),
            nn.BatchNorm1d(32),
            nn.SiLU(),
            nn.Linear(32, classes),
        )

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def _train(model, opt, xs, ys):
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("channels_last", [False, True])
def test_convert_resnet_trains_like_torch(channels_last):
    torch.manual_seed(3)
    ref = ResNetish()
    model = copy.deepcopy(ref)
    if channels_last:
        ref, model = ref.to(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)  # before convert
    params = {n: p for n, p in model.named_parameters()}
    bufs = {n: b for n, b in model.named_buffers()}
    n_bn = sum(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    assert dbt.convert(model) is model
    assert sum(isinstance(m, (dbt.BatchNorm1d, dbt.BatchNorm2d)) for m in model.modules()) == n_bn == 7
    assert all(p is params[n] for n, p in model.named_parameters())  # the same tensors
    assert all(b is bufs[n] for n, b in model.named_buffers())
    ropt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(8, 3, 12, 12, generator=g) for _ in range(4)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, 10, (8,), generator=g) for _ in range(4)]
    with kernel_calls() as calls:
        lo = _train(model, opt, xs, ys)
    assert calls["train"] == calls["backward"] == 4 * 7
    lt = _train(ref, ropt, xs, ys)
    np.testing.assert_allclose(lo, lt, rtol=1e-4)
    for (n, p), (_, q) in zip(model.state_dict().items(), ref.state_dict().items()):
        if p.is_floating_point():
            scale = max(float(q.abs().max()), 1e-3)
            assert float((p - q).abs().max()) <= 1e-4 * scale, n
        else:
            assert torch.equal(p, q), n
    model.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(xs[0]), ref(xs[0]), rtol=1e-4, atol=1e-5)


def test_convert_details():
    bn = nn.BatchNorm2d(4)
    new = dbt.convert(bn)
    assert type(new) is dbt.BatchNorm2d and new is not bn and new.weight is bn.weight
    assert new.running_mean is bn.running_mean and new.num_batches_tracked is bn.num_batches_tracked
    shared = nn.BatchNorm1d(3)
    seq = nn.Sequential(shared, nn.ReLU(), shared, nn.SyncBatchNorm(3), nn.LazyBatchNorm1d())
    dbt.convert(seq)
    assert type(seq[0]) is dbt.BatchNorm1d and seq[0] is seq[2]
    assert type(seq[3]) is nn.SyncBatchNorm and type(seq[4]) is nn.LazyBatchNorm1d
    m = dbt.BatchNorm3d(2)
    assert dbt.convert(m) is m
    hooked = []
    bn = nn.BatchNorm1d(2)
    bn.register_forward_hook(lambda mod, i, o: hooked.append(1))
    dbt.convert(bn)(torch.randn(4, 2))
    assert hooked == [1]
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dbt.convert("model")
    # pickling / deepcopy of converted modules
    assert type(copy.deepcopy(dbt.convert(nn.BatchNorm2d(2)))) is dbt.BatchNorm2d


# ------------------------------------------------------------------------------------------------
# The functional form


def test_functional_signature_and_values():
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(dbt.batch_norm) == params(F.batch_norm)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 4, 5, generator=g)
    w, b = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    for training in (True, False):
        for args in [(w, b), (None, None), (w, None)]:
            rm1, rv1 = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5
            rm2, rv2 = rm1.clone(), rv1.clone()
            with kernel_calls() as calls:
                yo = dbt.batch_norm(x, rm1, rv1, *args, training=training, momentum=0.3, eps=1e-3)
            assert calls["train" if training else "infer"] == 1
            yt = F.batch_norm(x, rm2, rv2, *args, training=training, momentum=0.3, eps=1e-3)
            torch.testing.assert_close(yo, yt, rtol=1e-5, atol=2e-6)
            torch.testing.assert_close(rm1, rm2), torch.testing.assert_close(rv1, rv2)
    yo = dbt.batch_norm(x, None, None, w, b, True)
    torch.testing.assert_close(yo, F.batch_norm(x, None, None, w, b, True), rtol=1e-5, atol=2e-6)


def test_no_copy_for_contiguous_and_channels_last():
    """The kernels read the caller's tensor itself (no copy) in NCHW and channels_last."""
    m = dbt.BatchNorm2d(3).eval()
    with pass_spy("infer") as seen, torch.no_grad():
        for x in (torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)):
            y = m(x)
            assert seen[-1][0] == x.data_ptr() and y.stride() == x.stride()
        x = torch.randn(2, 3, 4, 10)[..., ::2]
        m(x)
        assert seen[-1][0] != x.data_ptr()  # other strides: one copy
    assert len(seen) == 3


# ------------------------------------------------------------------------------------------------
# Gradients: finite differences, double backward


def _directional_fd(f, tensors, directions, h):
    with torch.no_grad():
        plus = f(*[t + h * d for t, d in zip(tensors, directions)])
        minus = f(*[t - h * d for t, d in zip(tensors, directions)])
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_finite_differences(train, layout):
    """<grad, v> against central differences of the loss sum(y * g), computed in float64 from the
    float32 outputs, along random directions of x, weight and bias."""
    shape = (4, 3, 5, 5)
    x = make_input(shape, layout, 1).requires_grad_()
    g = make_input(shape, "contiguous", 2).double()
    m = dbt.BatchNorm2d(3).train(train)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([0.5, -1.0, 0.2]))
        m.running_var.copy_(torch.tensor([1.5, 0.7, 3.0]))
        m.weight.copy_(torch.tensor([0.8, 1.3, -0.6]))
        m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    state = copy.deepcopy(m.state_dict())

    def loss(xx, ww, bb):
        m.load_state_dict(state)  # the running statistics are the same on every call
        with torch.no_grad():
            m.weight.copy_(ww)
            m.bias.copy_(bb)
        return (m(xx).double() * g).sum()

    with torch.no_grad():
        w0, b0 = m.weight.clone(), m.bias.clone()
    m.load_state_dict(state)
    (m(x).double() * g).sum().backward()
    grads = (x.grad, m.weight.grad, m.bias.grad)
    gen = torch.Generator().manual_seed(5)
    for k in range(3):
        dirs = [
            torch.randn(t.shape, generator=gen) if i == k else torch.zeros(t.shape) for i, t in enumerate((x, w0, b0))
        ]
        fd = float(_directional_fd(loss, (x.detach(), w0, b0), dirs, 1e-2))
        an = float(sum((gr.double() * d.double()).sum() for gr, d in zip(grads, dirs)))
        assert abs(fd - an) <= 2e-3 * max(abs(an), 1.0), (k, fd, an)


@pytest.mark.parametrize("train", [True, False])
def test_double_backward_matches_torch(train):
    x0 = make_input((6, 3, 4), "contiguous", 7)
    res = []
    for cls in (nn.BatchNorm1d, dbt.BatchNorm1d):
        torch.manual_seed(0)
        m = cls(3).train(train)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        x = x0.clone().requires_grad_()
        y = m(x)
        gx, gw = torch.autograd.grad((y * y.detach().sin()).sum(), (x, m.weight), create_graph=True)
        hx, hw = torch.autograd.grad((gx**2).sum() + gw.sum(), (x, m.weight))
        res.append((gx.detach(), hx, hw))
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Threads, imports


def test_threads_follow_torch():
    n0 = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert dbt.get_num_threads() == 1 or not darknet_bn.has_openmp()
        x = torch.randn(64, 16, 9, 9)
        y1 = dbt.batch_norm(x, None, None, training=True)
        torch.set_num_threads(2)
        assert dbt.get_num_threads() in (1, 2)
        dbt.set_num_threads(1)
        assert dbt.get_num_threads() == 1
        y2 = dbt.batch_norm(x, None, None, training=True)
        dbt.set_num_threads(None)
        y3 = dbt.batch_norm(x, None, None, training=True)
        assert torch.equal(y1, y2) and torch.equal(y1, y3)  # the same bits for any thread count
        with pytest.raises(ValueError):
            dbt.set_num_threads(-1)
        with pytest.raises(TypeError):
            dbt.set_num_threads(1.5)
    finally:
        dbt.set_num_threads(None)
        torch.set_num_threads(n0)


def test_import_darknet_bn_does_not_import_torch(tmp_path):
    code = "import sys, darknet_bn; assert 'torch' not in sys.modules, 'torch imported'"
    # cwd elsewhere: `python -c` puts the current directory first on sys.path (the checkout's source tree)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("g_kind", ["same", "contiguous", "channels_last", "expanded", "sliced"])
def test_backward_reads_the_output_gradient_of_any_strides(x_layout, g_kind):
    """The backward is out of place: it reads the output's gradient where it is when its strides
    match the input's layout (no copy), copies it otherwise, never writes it, and the gradients
    are torch.nn's (float64 reference) whatever the strides."""
    shape = (4, 6, 5, 7)
    x = make_input(shape, x_layout, 21)
    base = torch.randn(shape, generator=torch.Generator().manual_seed(22))
    fmt = torch.channels_last if x_layout == "channels_last" else torch.contiguous_format
    g = {
        "same": lambda: base.contiguous(memory_format=fmt),
        "contiguous": lambda: base.contiguous(),
        "channels_last": lambda: base.contiguous(memory_format=torch.channels_last),
        "expanded": lambda: base[:, :, :1, :].expand(shape),
        "sliced": lambda: torch.randn(4, 6, 5, 14, generator=torch.Generator().manual_seed(23))[..., ::2],
    }[g_kind]()
    g_before = g.clone()
    m = dbt.BatchNorm2d(6)
    xo = x.clone().requires_grad_()
    with pass_spy("backward") as seen:
        m(xo).backward(g)
    assert len(seen) == 1
    xp, delta, dx = seen[0]
    assert dx not in (delta, xp)
    if g_kind == "same":
        assert delta == g.data_ptr()  # read in place: no copy of the gradient
    assert torch.equal(g, g_before)  # and never written
    assert xo.grad.stride() == x.stride()
    refs = {}
    for dt in (torch.float32, torch.float64):
        t = torch.nn.BatchNorm2d(6).to(dt)
        xt = x.to(dt).clone().requires_grad_()
        t(xt).backward(g.to(dt))
        refs[dt] = (xt.grad, t.weight.grad, t.bias.grad)
    for name, ours, t32, t64 in zip(
        ["grad input", "grad weight", "grad bias"],
        (xo.grad, m.weight.grad, m.bias.grad),
        refs[torch.float32],
        refs[torch.float64],
    ):
        check(name, ours, t32, t64)


@pytest.mark.parametrize("what", ["input", "weight", "second backward"])
def test_autograd_errors_are_torchs(what):
    """The training call keeps autograd's checks, as torch.nn's does: an input or weight modified in
    place between the forward and the backward, and a second backward through a freed graph, raise
    PyTorch's RuntimeError (ours saves the tensors for autograd, not on the side)."""
    errors = []
    for cls in (torch.nn.BatchNorm1d, dbt.BatchNorm1d):
        m = cls(4)
        base = torch.randn(8, 4, requires_grad=True)
        x = base * 1.0  # not a leaf: in-place changes are allowed on it
        y = m(x)
        if what == "input":
            x.add_(1.0)
        elif what == "weight":
            with torch.no_grad():
                m.weight.mul_(2.0)
        else:
            y.sum().backward()
        with pytest.raises(RuntimeError) as e:
            y.sum().backward()
        errors.append(str(e.value).split(":")[0])
    assert errors[0] == errors[1], errors


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_gradient_seen_elsewhere_is_never_written(layout):
    """The output's gradient may be visible elsewhere -- kept by a tensor hook, or the same tensor
    handed to two BN layers by an addition's backward -- and stays unchanged; every gradient matches
    float64 torch.nn (the backward writes the input's gradient into a new tensor, never into the
    output's)."""
    shape, c = (4, 3, 5, 5), 3
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
    w2 = torch.randn(shape, generator=gen)
    ours = [dbt.BatchNorm2d(c), dbt.BatchNorm2d(c)]
    refs = [torch.nn.BatchNorm2d(c).double(), torch.nn.BatchNorm2d(c).double()]
    kept = []
    xo = x.clone().requires_grad_()
    ya, yb = ours[0](xo), ours[1](xo * 2)
    ya.register_hook(lambda g: kept.append(g))
    ((ya + yb) * w2).backward(torch.ones(shape))
    assert torch.equal(kept[0], w2)  # the gradient the hook kept: untouched
    xt = x.double().clone().requires_grad_()
    ((refs[0](xt) + refs[1](xt * 2)) * w2.double()).sum().backward()
    check("grad input", xo.grad, xt.grad.float(), xt.grad)
    for m, t in zip(ours, refs):
        check("grad weight", m.weight.grad, t.weight.grad.float(), t.weight.grad)
        check("grad bias", m.bias.grad, t.bias.grad.float(), t.bias.grad)


@pytest.mark.parametrize("train", [True, False])
def test_size_one_dims_with_odd_strides_give_torchs_strides(train):
    """Contiguous inputs whose size-1 dims carry non-standard strides (found by hypothesis): the
    output and the input's gradient have the strides torch.nn gives, and the values are its."""
    cases = [
        torch.randn(2, 1, 1, 4).as_strided((2, 1, 1, 4), (4, 4, 9, 1)),
        torch.randn(4, 3)[:, None, :].transpose(1, 2),
        torch.randn(3, 2, 1, 1, 4).as_strided((3, 2, 1, 1, 4), (8, 4, 3, 5, 1)),
    ]
    if not train:
        cases.append(torch.randn(1, 1, 1, 2)[..., ::2])
    for x in cases:
        assert x.is_contiguous() and 1 in x.shape
        cls = {
            3: (dbt.BatchNorm1d, torch.nn.BatchNorm1d),
            4: (dbt.BatchNorm2d, torch.nn.BatchNorm2d),
            5: (dbt.BatchNorm3d, torch.nn.BatchNorm3d),
        }[x.dim()]
        ours, ref = cls[0](x.shape[1]).train(train), cls[1](x.shape[1]).train(train)
        xo, xt = x.detach().requires_grad_(), x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        yo, yt = ours(xo), ref(xt)
        assert yo.stride() == yt.stride(), (tuple(x.shape), x.stride(), yo.stride(), yt.stride())
        assert torch.allclose(yo, yt, rtol=1e-5, atol=1e-5)
        g = torch.randn(x.shape)
        yo.backward(g)
        yt.backward(g)
        big = [i for i, n in enumerate(x.shape) if n > 1]  # a size-1 dim's gradient stride is immaterial
        assert [xo.grad.stride(i) for i in big] == [xt.grad.stride(i) for i in big]
        assert torch.allclose(xo.grad, xt.grad, rtol=1e-4, atol=1e-5)


def test_size_one_dims_geometry_remembered_per_shape_and_strides():
    """The view a contiguous input with size-1 dims gets is decided once per (shape, strides) and
    remembered: the same shape with other strides of its size-1 dims, alternating call by call, in
    training and eval, still gives torch.nn's output strides and values each time."""
    base = torch.randn(6, 5, 1, 1)
    xs = [
        base,  # the standard strides (5, 1, 1, 1)
        base.as_strided((6, 5, 1, 1), (5, 1, 7, 3)),  # the same memory, other size-1 strides
        base.contiguous(memory_format=torch.channels_last),  # (5, 1, 5, 5): one more variant
    ]
    ours, ref = dbt.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    for step in range(6):
        x = xs[step % 3]
        for train in (True, False):
            ours.train(train), ref.train(train)
            xo, xt = x.detach().requires_grad_(), x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
            yo, yt = ours(xo), ref(xt)
            assert yo.stride() == yt.stride(), (step, train, x.stride(), yo.stride(), yt.stride())
            torch.testing.assert_close(yo, yt, rtol=1e-5, atol=1e-5)
            if train:
                g = torch.randn(x.shape)
                yo.backward(g), yt.backward(g)
                torch.testing.assert_close(xo.grad, xt.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def _misaligned(t):
    """A copy of t in memory 1 byte off a float boundary (torch.frombuffer with offset=1)."""
    buf = bytearray(t.numel() * 4 + 8)
    m = torch.frombuffer(buf, dtype=torch.float32, offset=1, count=t.numel()).view(t.shape)
    m.copy_(t)
    assert m.data_ptr() % 4 == 1
    return m


@pytest.mark.parametrize("which", ["input", "weight", "running_var"])
@pytest.mark.parametrize("train", [True, False])
def test_misaligned_tensors_never_reach_the_kernels(which, train):
    """The C kernels read float *: a tensor 1 byte off alignment goes to PyTorch eagerly (same result),
    and the custom operators (torch.compile) run on an aligned copy."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 5, 5, generator=g)
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    rm, rv = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5
    args = {"input": x, "weight": w, "running_var": rv}
    args[which] = _misaligned(args[which])
    want_rm, want_rv = rm.clone(), rv.clone()
    want = F.batch_norm(x, want_rm, want_rv, w, b, train, 0.1, 1e-5)
    got_rm, got_rv = rm.clone(), args["running_var"].clone() if which != "running_var" else args["running_var"]
    with kernel_calls() as n:
        got = dbt.batch_norm(args["input"], got_rm, got_rv, args["weight"], b, train, 0.1, 1e-5)
    assert sum(n.values()) == 0
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_rv, want_rv)
    # the custom operators: an aligned copy, then the kernels
    if train:
        out = torch.ops.darknet_bn.batch_norm_train(
            args["input"], args["weight"], b, rm, args["running_var"], 0.1, 1e-5
        )
        torch.testing.assert_close(out[0], F.batch_norm(x, rm.clone(), rv.clone(), w, b, True, 0.1, 1e-5))
    else:
        out = torch.ops.darknet_bn.batch_norm_infer(args["input"], args["weight"], b, rm, args["running_var"], 1e-5)
        torch.testing.assert_close(out, want)


def test_misaligned_output_gradient_is_copied():
    """y.backward(g) with g 1 byte off alignment: the backward copies g (no float * to a misaligned
    address) and gives torch's gradients."""
    g0 = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, 5, 5, generator=g0)
    go = torch.randn(4, 3, 5, 5, generator=g0)
    grads = []
    for mod, gout in ((torch.nn.BatchNorm2d(3), go), (dbt.BatchNorm2d(3), _misaligned(go))):
        xi = x.clone().requires_grad_(True)
        mod(xi).backward(gout)
        grads.append((xi.grad, mod.weight.grad, mod.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((4, 32, 224, 224), "nchw"),  # 6.4M values, 25.7 MB: past the fused plan's 24 MB (csrc/internal.h)
        ((4, 32, 224, 224), "channels_last"),  # the same as 200,704 rows of 32 values
        ((12800, 512), "nchw"),  # BatchNorm1d: 6.6M values, rows of 512 channels
        ((3, 5, 1001, 37), "nchw"),  # odd planes: vector tails and peels in every run
    ],
)
def test_large_tensors_past_the_engine_thresholds(shape, layout):
    """Train (forward and backward) and eval on tensors past the engine's plan thresholds, against
    torch.nn in float64 (as close as torch's own float32)."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(shape, generator=g) * 2 + 0.5
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=g)
    c = shape[1]
    cls = {2: (dbt.BatchNorm1d, torch.nn.BatchNorm1d), 4: (dbt.BatchNorm2d, torch.nn.BatchNorm2d)}[len(shape)]
    ours, t32 = cls[0](c), cls[1](c)
    t64 = cls[1](c).double()
    with torch.no_grad():
        for m in (ours, t32, t64):
            m.weight.copy_(torch.linspace(0.5, 1.5, c))
            m.bias.copy_(torch.linspace(-1, 1, c))
    res = []
    for m, xx in ((ours, x), (t32, x), (t64, x.double())):
        with kernel_calls() as n:
            xi = xx.clone().requires_grad_(True)
            y = m(xi)
            y.backward(dy.to(xx.dtype))
            m.eval()
            with torch.no_grad():
                ye = m(xx)
        assert n == ({"train": 1, "infer": 1, "backward": 1} if m is ours else {"train": 0, "infer": 0, "backward": 0})
        res.append((y, xi.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var, ye))
    names = ["output", "grad input", "grad weight", "grad bias", "running_mean", "running_var", "eval output"]
    for name, a, b, r in zip(names, *res):
        check(name, a.detach(), b.detach(), r.detach())
    if layout == "channels_last":
        assert res[0][0].is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------------
# The output cache (outputs of CACHE_MIN_BYTES and more reuse memory no tensor holds)


@pytest.fixture
def small_cache(monkeypatch):
    """The cache for every output of 4 KiB and more, emptied before and after."""
    from darknet_bn.torch import _passes

    monkeypatch.setattr(_passes, "CACHE_MIN_BYTES", 4096)
    dbt.empty_output_cache()
    yield _passes
    dbt.empty_output_cache()


def test_output_cache_reuses_only_free_memory(small_cache):
    x = make_input((4, 8, 16, 16), "contiguous", 0)
    m, t = dbt.BatchNorm2d(8).eval(), nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        t.running_mean.uniform_(-1, 1)
        t.running_var.uniform_(0.5, 2)
    m.load_state_dict(t.state_dict())
    with torch.no_grad():
        y1 = m(x)
        p1 = y1.data_ptr()
        y2 = m(x)  # y1 alive: other memory
        assert y2.data_ptr() != p1
        torch.testing.assert_close(y1, t(x), rtol=1e-5, atol=1e-6)
        ref = y1.clone()
        assert torch.equal(y2, ref)
        view = y1[1:]  # a view keeps the block
        arr = y2.numpy()  # so does a numpy array
        del y1, y2
        y3 = m(x)
        assert y3.data_ptr() not in (p1, arr.ctypes.data)
        assert y3._base is None and torch.equal(y3, ref)
        del view
        y4 = m(x)  # y1's block is free now
        assert y4.data_ptr() == p1 and torch.equal(y4, ref) and y4.stride() == x.stride()
        y4.add_(1)  # the caller owns it: writes do not reach the others
        assert torch.equal(y3, ref) and np.array_equal(arr, ref.numpy())
    assert dbt.output_cache_bytes() >= 3 * x.numel() * 4


def test_output_cache_training_and_off(small_cache):
    shape = (4, 8, 16, 16)
    x = make_input(shape, "channels_last", 1)
    g = make_input(shape, "channels_last", 2)
    ours, ref = dbt.BatchNorm2d(8), nn.BatchNorm2d(8)
    for _step in range(3):  # the outputs and input gradients of earlier steps are freed: reused
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        yo.backward(g)
        yr.backward(g)
        assert yo.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    assert dbt.output_cache_bytes() > 0
    dbt.set_output_cache(0)
    try:
        assert dbt.output_cache_bytes() == 0
        with torch.no_grad():
            y1 = ours(x)
            p1 = y1.data_ptr()
            del y1
            ours(x)
        assert dbt.output_cache_bytes() == 0
    finally:
        dbt.set_output_cache(1 << 30)
    with pytest.raises(ValueError, match="byte count"):
        dbt.set_output_cache(-1)
    with pytest.raises(TypeError, match="expected an int"):
        dbt.set_output_cache(1.5)
    del p1


def test_output_cache_limit_drops_blocks(small_cache):
    x = make_input((4, 8, 16, 16), "contiguous", 3)
    nbytes = x.numel() * 4
    m = dbt.BatchNorm2d(8).eval()
    dbt.set_output_cache(2 * nbytes)
    try:
        with torch.no_grad():
            held = [m(x) for _ in range(4)]  # only two fit: the cache never exceeds its cap
            assert dbt.output_cache_bytes() <= 2 * nbytes
            assert len({y.data_ptr() for y in held}) == 4
    finally:
        dbt.set_output_cache(1 << 30)


@contextlib.contextmanager
def store_policies():
    """Record, for each C pass run inside the block (whichever entry point), its kind, the address of
    its output (the forward's out, the backward's dx) and the plain_stores flag of the dbn_exec it was
    given: a list of (kind, address, plain_stores)."""
    seen = []
    addr = _backend.address
    names = {  # (entry point, kind, index of the output argument)
        "_lib_train": ("train", 1),
        "_lib_infer": ("infer", 1),
        "_lib_bwd": ("backward", 2),
        "forward_train_raw": ("train", 1),
        "forward_infer_raw": ("infer", 1),
        "backward_raw": ("backward", 2),
    }
    saved = {n: getattr(_backend, n) for n in names}

    def wrap(n, f):
        kind, i = names[n]

        def g(*a):
            seen.append((kind, addr(a[i]), a[-1].plain_stores))
            return f(*a)

        return g

    for n, f in saved.items():
        setattr(_backend, n, wrap(n, f))
    try:
        yield seen
    finally:
        for n, f in saved.items():
            setattr(_backend, n, f)


@pytest.mark.parametrize("path", ["module", "functional"])
def test_streaming_stores_only_into_reused_cache_blocks(small_cache, path):
    """Non-temporal stores (the engine's policy, plain_stores = 0) are allowed exactly for outputs in a
    cache block handed out before (memory written before); a fresh block, or any output with the cache
    off, gets plain stores."""
    x = make_input((4, 8, 16, 16), "contiguous", 4)
    g = make_input((4, 8, 16, 16), "contiguous", 5)
    m = dbt.BatchNorm2d(8)

    def step():
        xi = x.clone().requires_grad_()
        if path == "module":
            y = m(xi)
        else:
            y = dbt.batch_norm(xi, m.running_mean, m.running_var, m.weight, m.bias, True, 0.1, 1e-5)
        y.backward(g)
        m.eval()
        with torch.no_grad():
            m(x)
        m.train()

    with store_policies() as seen:
        for _ in range(3):
            step()
    assert [k for k, _, _ in seen] == ["train", "backward", "infer"] * 3
    handed_out = set()
    for kind, a, plain in seen:
        assert plain == (0 if a in handed_out else 1), (kind, a, plain, seen)
        handed_out.add(a)
    assert any(p == 0 for _, _, p in seen) and seen[0][2] == 1  # both cases occurred
    dbt.set_output_cache(0)
    try:
        with store_policies() as seen:
            for _ in range(2):
                step()
        assert len(seen) == 6 and all(p == 1 for _, _, p in seen)
    finally:
        dbt.set_output_cache(1 << 30)


def test_streaming_stores_give_the_same_bits():
    """Outputs past the engine's non-temporal thresholds (21 MB: training forward, inference and
    backward all stream into reused blocks) are bit for bit those of plain stores."""
    from darknet_bn.torch import _passes

    shape = (4, 64, 128, 160)
    x = make_input(shape, "contiguous", 6)
    g = make_input(shape, "contiguous", 7)

    def step(m):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(g)
        m.eval()
        with torch.no_grad():
            ye = m(x)
        m.train()
        return [t.detach().clone() for t in (y, xi.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var, ye)]

    res = {}
    for stream in (False, True):
        _passes.STREAM_REUSED = stream
        dbt.empty_output_cache()  # the first step's outputs: fresh blocks
        try:
            m = dbt.BatchNorm2d(64)
            with store_policies() as seen:
                step(m)  # its outputs are freed on return: the next step's are reused blocks
                res[stream] = step(m)
            assert [p for _, _, p in seen] == [1, 1, 1] + ([0, 0, 0] if stream else [1, 1, 1])
        finally:
            _passes.STREAM_REUSED = True
    for a, b in zip(res[False], res[True]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# The module path's checks: every per-channel tensor is checked on every call (nothing is cached), so
# whatever changes one between calls -- .data =, set_, resize_, a new Parameter, share_memory_ -- is
# seen by the next call: a tensor the kernels cannot take sends the call to PyTorch (no kernel call,
# PyTorch's result or error), one they can take is read where it is now.


def _offset_copy(t, offset):
    """A copy of t whose data starts `offset` bytes past an allocation's start (frombuffer)."""
    buf = bytearray(t.numel() * t.element_size() + 16)
    m = torch.frombuffer(buf, dtype=t.dtype, offset=offset, count=t.numel()).view(t.shape)
    m.copy_(t)
    return m


class _SubParam(torch.nn.Parameter):
    pass


class _SubTensor(torch.Tensor):
    pass


def _retarget(m, name, how):
    """Change m's tensor `name` in place of its identity (how: a way PyTorch allows) or replace it."""
    t = getattr(m, name)
    c = t.shape[0] if t.dim() else 0
    with torch.no_grad():
        if how == "misaligned":
            t.data = _offset_copy(t.data, 1 if t.dtype == torch.float32 else 4)
        elif how == "strided":
            src = torch.stack([t.data, t.data], 1).reshape(-1)[::2]  # the same values, stride 2
            assert not src.is_contiguous()
            t.data = src
        elif how == "float64":
            t.data = t.data.double()
        elif how == "float32":  # (num_batches_tracked)
            t.data = t.data.float()
        elif how == "shape_1xc":
            t.data = t.data.reshape(1, c)
        elif how == "set_strided":
            t.set_(torch.stack([t.data, t.data], 1).reshape(-1).clone().untyped_storage(), 0, (c,), (2,))
        elif how == "resize_":
            t.resize_(c + 1)
        elif how == "subclass":
            if name in ("weight", "bias"):
                setattr(m, name, _SubParam(t.detach().clone()))
            else:
                m._buffers[name] = t.detach().clone().as_subclass(_SubTensor)
        elif how == "requires_grad":
            t.requires_grad_(True)
        else:
            raise AssertionError(how)


_BAD = [
    (name, how)
    for name in ("weight", "bias", "running_mean", "running_var")
    for how in ("misaligned", "strided", "float64", "shape_1xc", "set_strided", "subclass")
] + [
    ("running_mean", "resize_"),
    ("running_var", "resize_"),
    ("running_mean", "requires_grad"),
    ("running_var", "requires_grad"),
    ("num_batches_tracked", "misaligned"),
    ("num_batches_tracked", "float32"),
]


def _pair(c=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    t = nn.BatchNorm1d(c)
    with torch.no_grad():
        t.weight.uniform_(0.5, 1.5, generator=g)
        t.bias.uniform_(-1, 1, generator=g)
        t.running_mean.uniform_(-1, 1, generator=g)
        t.running_var.uniform_(0.5, 2, generator=g)
    o = dbt.BatchNorm1d(c)
    o.load_state_dict(t.state_dict())
    return t, o


def _outcome(m, x, g, mode):
    """What a call gives: ('ok', output, grads, buffers) or ('error', exception type)."""
    try:
        if mode == "eval":
            m.eval()
            with torch.no_grad():
                y = m(x)
            grads = ()
        else:
            m.train()
            xg = x.clone().requires_grad_(mode == "train_grad")
            y = m(xg)
            grads = ()
            if mode == "train_grad":
                y.backward(g)
                grads = (xg.grad,) + tuple(p.grad for p in (m.weight, m.bias) if p.requires_grad)
    except Exception as e:  # noqa: BLE001 - the exception type is what is compared
        return ("error", type(e))
    bufs = tuple(b.detach().clone().double() for b in m.buffers())
    return ("ok", y.detach(), grads, bufs)


@pytest.mark.parametrize("mode", ["train_grad", "train_no_grad", "eval"])
@pytest.mark.parametrize(("name", "how"), _BAD)
def test_module_path_sees_every_change_of_a_tensor(name, how, mode, monkeypatch):
    """A per-channel tensor changed between calls so that the kernels cannot take it (misaligned,
    strided, float64, shaped (1, C), set_ to strided storage, resized, a subclass, running statistics
    requiring grad): the next call runs PyTorch (no kernel call) and gives torch.nn's outcome.
    num_batches_tracked misaligned or float: the count is PyTorch's (never written in place), the rest
    as torch.nn. Each case fails if the module path dropped its check."""
    from darknet_bn.torch import functional as fn

    def no_count(addr):
        raise AssertionError(f"num_batches_tracked counted in place at {addr:#x}")

    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    g = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    t, o = _pair()
    for m in (t, o):  # one call first (a cache, if there were one, would be warm)
        _outcome(m, x, g, mode)
    t.load_state_dict(o.state_dict())
    for m in (t, o):
        _retarget(m, name, how)
    want = _outcome(t, x, g, mode)
    monkeypatch.setattr(fn, "_i64p", no_count)
    with kernel_calls() as n:
        got = _outcome(o, x, g, mode)
    if name != "num_batches_tracked":
        assert sum(n.values()) == 0, (n, got[0])
    assert got[0] == want[0], (got, want)
    if want[0] == "error":
        assert got[1] is want[1]
        return
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(got[3], want[3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nbt_misaligned_never_counted_in_place(monkeypatch):
    """num_batches_tracked at an address not 8-byte aligned is never written through an int64_t *
    (the module path sends the call to PyTorch's add_)."""
    from darknet_bn.torch import functional as fn

    seen = []
    real = fn._i64p

    def spy(addr):
        seen.append(addr)
        return real(addr)

    monkeypatch.setattr(fn, "_i64p", spy)
    t, o = _pair()
    x = torch.randn(6, 4)
    o(x)
    assert len(seen) == 1 and seen[0] % 8 == 0  # the common case counts in place
    for m in (t, o):
        _retarget(m, "num_batches_tracked", "misaligned")
        assert m.num_batches_tracked.data_ptr() % 8 == 4
    o(x), t(x)
    assert len(seen) == 1
    assert int(o.num_batches_tracked) == 2 and int(t.num_batches_tracked) == 1


@pytest.mark.parametrize("mode", ["train_grad", "train_no_grad", "eval"])
@pytest.mark.parametrize("how", ["new_parameter", "data_assign", "set_", "share_memory", "load_state_dict"])
def test_module_path_reads_tensors_where_they_are_now(how, mode):
    """Changes the kernels can take (a new Parameter, .data = another float32 tensor, set_ to other
    storage, share_memory_ moving every tensor to shared memory, load_state_dict): the next call runs
    the kernels on the tensors as they are now -- torch.nn's outputs, gradients and buffers, and the
    running statistics updated in the tensors' current storage."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    g = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    t, o = _pair()
    for m in (t, o):
        _outcome(m, x, g, mode)
    t.load_state_dict(o.state_dict())
    new = torch.linspace(0.5, 2.0, 4)
    for m in (t, o):
        with torch.no_grad():
            if how == "new_parameter":
                m.weight = nn.Parameter(new.clone())
                m.bias = nn.Parameter(-new.clone())
            elif how == "data_assign":
                m.weight.data = new.clone()
                m.running_var.data = new.clone() + 1
            elif how == "set_":
                m.bias.set_(new.clone())
                m.running_mean.set_((new - 1).clone())
            elif how == "share_memory":
                m.share_memory()
                assert m.running_mean.is_shared() and m.weight.is_shared()
            else:
                sd = {k: v.clone() * 1.5 if v.is_floating_point() else v.clone() for k, v in m.state_dict().items()}
                m.load_state_dict(sd)
    where = {k: v.data_ptr() for k, v in o.state_dict().items()}
    want = _outcome(t, x, g, mode)
    with kernel_calls() as n:
        got = _outcome(o, x, g, mode)
    assert n["train" if mode != "eval" else "infer"] == 1 and n["backward"] == (mode == "train_grad")
    assert got[0] == want[0] == "ok"
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(got[3], want[3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert {k: v.data_ptr() for k, v in o.state_dict().items()} == where  # updated where they are


_CHANGES = ["weight_smaller", "weight_float64", "input_smaller", "input_float64"]


@pytest.mark.parametrize(
    "path,change",
    [(p, ch) for p in ("module", "functional", "module_act") for ch in _CHANGES] + [("module_act", "bias_smaller")],
)
def test_backward_refuses_saved_tensors_changed_by_data_assignment(path, change):
    """A ``.data =`` between the forward and the backward may give a saved tensor other memory of another
    size or dtype without autograd's version check noticing: the backward must raise a clear ValueError,
    never let the C pass read or write past the new memory. (Another device is refused by torch itself.)"""
    torch.manual_seed(0)
    c = 32
    x = torch.randn(64, c, 4, 4, requires_grad=True)
    if path == "functional":
        w = torch.ones(c, requires_grad=True)
        b = torch.zeros(c, requires_grad=True)
        y = dbt.batch_norm(x, torch.zeros(c), torch.ones(c), w, b, training=True)
    else:
        m = dbt.BatchNorm2d(c) if path == "module" else dbt.BatchNormAct2d(c, act_layer=nn.LeakyReLU)
        y = m(x)
        w, b = m.weight, m.bias
    if change == "bias_smaller":  # (only the activation's backward reads the bias)
        b.data = torch.zeros(c // 2)
    elif change == "weight_smaller":
        w.data = torch.ones(c // 2)
    elif change == "weight_float64":
        w.data = torch.ones(c, dtype=torch.float64)
    elif change == "input_smaller":
        x.data = torch.randn(8, c, 4, 4)
    else:
        x.data = torch.randn(64, c, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="changed its size or dtype"):
        y.backward(torch.ones_like(y))
