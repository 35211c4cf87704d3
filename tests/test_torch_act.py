"""darknet_bn.torch.BatchNormAct2d and convert()'s folding of BatchNorm2d + activation (skipped when
torch is not installed).

References: PyTorch itself -- torch.nn.BatchNorm2d followed by the torch.nn activation, run in float64
(the fused float32 result must be within float32 rounding of it) -- and timm's BatchNormAct2d as its
source (timm/layers/norm_act.py, create_act.py) defines it: the constructor builds ``drop`` and ``act``
children (``act_layer(**act_kwargs, inplace=True)`` by default; nn.Identity when apply_act is False
or act_layer is None), the forward is BatchNorm2d's, then drop, then act, and non-4-D inputs fail
timm's assertion. A counter on the C entry points shows which cases really ran the fused passes.
"""

from __future__ import annotations

import contextlib
import copy

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'darknet_bn[torch]')")

import darknet_bn.torch as dbt  # noqa: E402
from darknet_bn.torch import _acts, _backend, _ops  # noqa: E402

nn = torch.nn
F = torch.nn.functional

# (name, factory) of every activation the passes apply themselves
FUSED = [
    ("relu", lambda: nn.ReLU()),
    ("relu_inplace", lambda: nn.ReLU(inplace=True)),
    ("leaky0.1", lambda: nn.LeakyReLU(0.1)),
    ("leaky0.01", lambda: nn.LeakyReLU()),
    ("leaky0.3", lambda: nn.LeakyReLU(0.3, inplace=True)),
    ("leaky-0.5", lambda: nn.LeakyReLU(-0.5)),  # the derivative is taken at the pre-activation
    ("silu", lambda: nn.SiLU()),
    ("mish", lambda: nn.Mish()),
    ("gelu", lambda: nn.GELU()),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh")),
    ("hardswish", lambda: nn.Hardswish()),
    ("sigmoid", lambda: nn.Sigmoid()),
    ("tanh", lambda: nn.Tanh()),
    ("relu6", lambda: nn.ReLU6()),
    ("elu", lambda: nn.ELU()),
]
# activations that are not fused (run after our BN, as timm does)
UNFUSED = [
    ("selu", lambda: nn.SELU()),
    ("elu0.5", lambda: nn.ELU(alpha=0.5)),
    ("celu", lambda: nn.CELU()),
    ("softplus", lambda: nn.Softplus()),
]


@contextlib.contextmanager
def kernel_calls():
    """Count the C passes called inside the block (through the wrapped entry points of _backend or
    the raw ones), split by whether an activation was passed."""
    counts = {"train": 0, "train_act": 0, "infer": 0, "infer_act": 0, "backward": 0, "backward_act": 0}
    # entry point -> (count name, position of its act argument)
    where = {
        "forward_train": ("train", 13),
        "forward_infer": ("infer", 10),
        "backward": ("backward", 15),
        "forward_train_raw": ("train", 13),
        "forward_infer_raw": ("infer", 10),
        "backward_raw": ("backward", 18),
    }
    saved = {n: getattr(_backend, n) for n in where}
    null = _backend._NULL

    def wrap(name, f, pos):
        def g(*a, **k):
            act = k.get("act", a[pos] if len(a) > pos else null)
            counts[name if act == null else name + "_act"] += 1
            return f(*a, **k)

        return g

    for n, f in saved.items():
        setattr(_backend, n, wrap(where[n][0], f, where[n][1]))
    try:
        yield counts
    finally:
        for n, f in saved.items():
            setattr(_backend, n, f)


def make_input(shape, layout, seed):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g) * (torch.rand(1, c, 1, 1, generator=g) * 2 + 0.5)
    x = x + torch.rand(1, c, 1, 1, generator=g) * 2 - 1
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def pair(c, act_factory, seed=0, **kw):
    """Ours (BatchNormAct2d with the activation) and the reference chain (torch.nn.BatchNorm2d, then
    the activation) in float64, with the same parameters and running statistics."""
    ref_bn = nn.BatchNorm2d(c, **kw)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        if ref_bn.weight is not None:
            ref_bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            ref_bn.bias.copy_(torch.randn(c, generator=g) * 0.5)
        if ref_bn.running_mean is not None:
            ref_bn.running_mean.copy_(torch.randn(c, generator=g))
            ref_bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    ours = dbt.BatchNormAct2d(c, **kw)
    ours.act = act_factory()
    ours.load_state_dict(ref_bn.state_dict())
    ref = nn.Sequential(ref_bn, act_factory()).double()
    return ours, ref


def step(m, x, g, train):
    m.train(train)
    xi = x.detach().clone().requires_grad_()
    for p in m.parameters():
        p.grad = None
    y = m(xi)
    y.backward(g)
    ps = list(m.parameters())
    return y.detach(), xi.grad, [p.grad for p in ps]


def close(name, ours, ref, scale=1.0):
    """ours (float32) within float32 rounding of the float64 reference: 2e-5 relative to the
    tensor's size (a few ulps of the terms that make it up) plus a small absolute floor."""
    assert ours.dtype == torch.float32 and ours.shape == ref.shape, (name, ours.shape, ref.shape)
    err = float((ours.double() - ref).abs().max())
    bound = 2e-5 * max(float(ref.abs().max()), scale) + 1e-6
    assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g}"


def check_steps(ours, ref, shape, layout, fused=True, steps=3):
    c = shape[1]
    with kernel_calls() as calls:
        for s in range(steps):
            x = make_input(shape, layout, 10 + s)
            g = make_input(shape, layout, 50 + s)
            yo, gxo, gpo = step(ours, x, g, True)
            yr, gxr, gpr = step(ref, x.double(), g.double(), True)
            assert yo.stride() == x.stride()  # the input's memory format
            close("out", yo, yr)
            close("grad x", gxo, gxr, scale=float(g.abs().max()))
            for n, a, b in zip(("weight", "bias"), gpo, gpr):
                close("grad " + n, a, b, scale=float(b.abs().max()) + 1.0)
            close("running_mean", ours.running_mean, ref[0].running_mean)
            close("running_var", ours.running_var, ref[0].running_var)
            assert int(ours.num_batches_tracked) == int(ref[0].num_batches_tracked) == s + 1
        x = make_input(shape, layout, 99)
        g = make_input(shape, layout, 98)
        yo, gxo, gpo = step(ours, x, g, False)  # eval with a gradient: the exact inference backward
        yr, gxr, gpr = step(ref, x.double(), g.double(), False)
        close("eval out", yo, yr)
        close("eval grad x", gxo, gxr, scale=float(g.abs().max()))
        for n, a, b in zip(("weight", "bias"), gpo, gpr):
            close("eval grad " + n, a, b, scale=float(b.abs().max()) + 1.0)
        ours.eval()
        with torch.no_grad():
            close("eval no_grad", ours(x), ref.eval()(x.double()))
    if fused:
        assert calls["train_act"] == steps and calls["backward_act"] == steps + 1 and calls["infer_act"] == 2, calls
        assert calls["train"] == calls["infer"] == calls["backward"] == 0, calls
    else:
        assert calls["train_act"] == calls["infer_act"] == calls["backward_act"] == 0, calls
        assert calls["train"] == steps, calls
    _ = c


# ------------------------------------------------------------------------------------------------
# Against torch.nn.BatchNorm2d + the activation


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name,act", FUSED, ids=[n for n, _ in FUSED])
def test_fused_against_torch(name, act, layout):
    ours, ref = pair(6, act)
    assert _acts.fused_kind(ours.act) is not None
    check_steps(ours, ref, (4, 6, 5, 7), layout)


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (64, 4, 1, 1), (1, 5, 33, 17)])
@pytest.mark.parametrize("name", ["leaky0.1", "silu", "gelu"])
def test_fused_shapes(name, shape):
    ours, ref = pair(shape[1], dict(FUSED)[name], seed=3)
    check_steps(ours, ref, shape, "contiguous", steps=2)


@pytest.mark.parametrize("kw", [{"affine": False}, {"momentum": 0.3, "eps": 1e-3}])
def test_fused_options(kw):
    ours, ref = pair(5, lambda: nn.LeakyReLU(0.2), **kw)
    check_steps(ours, ref, (3, 5, 4, 4), "channels_last", steps=2)


@pytest.mark.parametrize("name,act", UNFUSED, ids=[n for n, _ in UNFUSED])
def test_unfused_activation_runs_after_bn(name, act):
    ours, ref = pair(4, act)
    assert _acts.fused_kind(ours.act) is None
    check_steps(ours, ref, (3, 4, 5, 5), "contiguous", fused=False, steps=2)


def test_unfused_cases_run_bn_then_the_modules():
    # momentum=None (cumulative average), track_running_stats=False, a drop layer, a hook on act
    for kw in ({"momentum": None}, {"track_running_stats": False}):
        ours, ref = pair(4, lambda: nn.SiLU(), **kw)
        x, g = make_input((3, 4, 3, 3), "contiguous", 1), make_input((3, 4, 3, 3), "contiguous", 2)
        for _ in range(2):
            yo, gxo, _gp = step(ours, x, g, True)
            yr, gxr, _gr = step(ref, x.double(), g.double(), True)
            close(f"{kw} out", yo, yr)
            close(f"{kw} grad", gxo, gxr, scale=float(g.abs().max()))
    ours, ref = pair(4, lambda: nn.ReLU())
    seen = []
    ours.act.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    x, g = make_input((3, 4, 3, 3), "contiguous", 1), make_input((3, 4, 3, 3), "contiguous", 2)
    with kernel_calls() as calls:
        yo, _gx, _gp = step(ours, x, g, True)
    assert seen == [x.shape] and calls["train_act"] == 0 and calls["train"] == 1
    close("hooked", yo, step(ref, x.double(), g.double(), True)[0])


class Scale(nn.Module):
    """A drop layer stand-in with a visible effect (timm applies drop between BN and act)."""

    def forward(self, x):
        return x * 0.5


def test_drop_layer_between_bn_and_act():
    m = dbt.BatchNormAct2d(4, act_layer=nn.LeakyReLU, act_kwargs={"negative_slope": 0.2}, drop_layer=Scale)
    assert isinstance(m.drop, Scale) and isinstance(m.act, nn.LeakyReLU) and m.act.inplace
    bn = nn.BatchNorm2d(4)
    bn.load_state_dict(m.state_dict())
    x = make_input((2, 4, 3, 3), "contiguous", 5)
    torch.testing.assert_close(m(x), F.leaky_relu(bn(x) * 0.5, 0.2), rtol=1e-5, atol=1e-6)


def test_fallback_dtypes_and_devices():
    for dtype in (torch.float64, torch.bfloat16):
        m = dbt.BatchNormAct2d(3, act_layer=nn.SiLU, dtype=dtype)
        bn = nn.BatchNorm2d(3, dtype=dtype)
        x = make_input((2, 3, 4, 4), "contiguous", 0).to(dtype)
        with kernel_calls() as calls:
            y = m(x)
        assert sum(calls.values()) == 0 and y.dtype == dtype
        torch.testing.assert_close(y, F.silu(bn(x)))
    m = dbt.BatchNormAct2d(3, act_layer="silu", device="meta")
    y = m(torch.empty(2, 3, 4, 4, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 3, 4, 4)


def test_double_backward_with_activation():
    ours, ref = pair(3, lambda: nn.SiLU())
    for train in (True, False):
        ours.train(train), ref.train(train)
        x = make_input((4, 3, 3, 3), "contiguous", 2).requires_grad_()
        xr = x.detach().double().requires_grad_()
        outs = []
        for m, xi in ((ours, x), (ref, xr)):
            y = m(xi)
            (gx,) = torch.autograd.grad((y * y).sum(), xi, create_graph=True)
            (ggx,) = torch.autograd.grad((gx * gx).sum(), xi)
            outs.append((gx.detach(), ggx))
        close(f"train={train} grad", outs[0][0], outs[1][0], scale=1.0)
        close(f"train={train} grad of grad", outs[0][1], outs[1][1], scale=float(outs[1][1].abs().max()))


# ------------------------------------------------------------------------------------------------
# timm's semantics (from timm/layers/norm_act.py and create_act.py)


def test_timm_constructor_and_attributes():
    m = dbt.BatchNormAct2d(8)
    assert isinstance(m, nn.BatchNorm2d) and isinstance(m, dbt.BatchNorm2d)
    assert type(m.act) is nn.ReLU and m.act.inplace and type(m.drop) is nn.Identity
    assert m.eps == 1e-5 and m.momentum == 0.1 and m.affine and m.track_running_stats
    assert list(m.state_dict()) == list(nn.BatchNorm2d(8).state_dict())
    assert type(dbt.BatchNormAct2d(8, apply_act=False).act) is nn.Identity
    assert type(dbt.BatchNormAct2d(8, act_layer=None).act) is nn.Identity
    assert type(dbt.BatchNormAct2d(8, act_layer="").act) is nn.Identity
    m = dbt.BatchNormAct2d(8, act_layer=nn.SiLU, inplace=False)
    assert type(m.act) is nn.SiLU and not m.act.inplace
    kwargs = {"negative_slope": 0.05}
    m = dbt.BatchNormAct2d(8, act_layer="leaky_relu", act_kwargs=kwargs)
    assert type(m.act) is nn.LeakyReLU and m.act.negative_slope == 0.05 and m.act.inplace
    for name, cls in (("swish", nn.SiLU), ("mish", nn.Mish), ("hard_swish", nn.Hardswish), ("relu6", nn.ReLU6)):
        assert type(dbt.BatchNormAct2d(4, act_layer=name).act) is cls
    gelu = dbt.BatchNormAct2d(4, act_layer="gelu").act  # timm's GELU: a dummy inplace
    assert _acts.fused_kind(gelu) == (_acts.GELU_ERF, 0.0)
    assert _acts.fused_kind(dbt.BatchNormAct2d(4, act_layer="gelu_tanh").act) == (_acts.GELU_TANH, 0.0)
    with pytest.raises(TypeError):  # as timm: nn.GELU takes no inplace
        dbt.BatchNormAct2d(4, act_layer=nn.GELU)
    assert type(dbt.BatchNormAct2d(4, act_layer=nn.GELU, inplace=False).act) is nn.GELU
    with pytest.raises(ValueError, match="act_layer"):
        dbt.BatchNormAct2d(4, act_layer="no_such_act")
    m = dbt.BatchNormAct2d(4, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    assert m.eps == 1e-3 and m.momentum is None and m.weight is None and m.running_mean is None


def test_timm_input_assertion():
    m = dbt.BatchNormAct2d(4)
    with pytest.raises(AssertionError, match=r"expected 4D input \(got 3D input\)"):
        m(torch.randn(2, 4, 5))
    with pytest.raises(ValueError):
        m(torch.randn(2, 4))


def test_timm_forward_is_bn_drop_act():
    """timm's forward: F.batch_norm with BatchNorm2d's arguments, then drop, then act -- in every mode."""
    for act_layer, f in ((nn.ReLU, F.relu), ("silu", F.silu), ("hard_swish", F.hardswish)):
        m = dbt.BatchNormAct2d(5, act_layer=act_layer)
        bn = nn.BatchNorm2d(5)
        x = make_input((3, 5, 4, 4), "channels_last", 4)
        for train in (True, False, True):
            m.train(train), bn.train(train)
            torch.testing.assert_close(m(x), f(bn(x)), rtol=1e-5, atol=1e-5)
        for n, t in bn.state_dict().items():
            torch.testing.assert_close(m.state_dict()[n], t, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# convert(): folding


def _net(act=nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        act(inplace=True) if act is not nn.SiLU else nn.SiLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 6, 1, bias=False),
        nn.BatchNorm2d(6),  # no activation after it: stays a BatchNorm2d
        nn.Sequential(nn.BatchNorm2d(6), nn.SELU()),  # SELU: not fused
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def test_convert_folds_and_keeps_state():
    torch.manual_seed(0)
    base = _net()
    keys = list(base.state_dict())
    params = [id(p) for p in base.parameters()]
    opt = torch.optim.SGD(base.parameters(), lr=0.1, momentum=0.9)
    ref = copy.deepcopy(base)
    m = dbt.convert(base)
    assert m is base
    assert type(m[1]) is dbt.BatchNormAct2d and type(m[1].act) is nn.ReLU and type(m[2]) is nn.Identity
    assert type(m[4]) is dbt.BatchNormAct2d and m[4].act.negative_slope == 0.1 and type(m[5]) is nn.Identity
    assert type(m[7]) is dbt.BatchNorm2d and type(m[8][0]) is dbt.BatchNorm2d and type(m[8][1]) is nn.SELU
    assert list(m.state_dict()) == keys and [id(p) for p in m.parameters()] == params
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _step in range(3):  # the optimizer built before the conversion trains the converted model
        x = torch.randn(6, 3, 8, 8, generator=g)
        y = torch.randint(0, 4, (6,), generator=g)
        for model, o in ((m, opt), (ref, ref_opt)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    for (n, a), (_, b) in zip(m.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)
    # state_dict both ways
    plain = _net()
    plain.load_state_dict(m.state_dict())
    m.load_state_dict(ref.state_dict())
    m.eval(), ref.eval(), plain.eval()
    x = torch.randn(2, 3, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(plain(x), m(x), rtol=1e-4, atol=1e-5)


def test_convert_fold_options():
    m = dbt.convert(_net(), fold_activations=False)
    assert type(m[1]) is dbt.BatchNorm2d and type(m[2]) is nn.ReLU
    with pytest.raises(TypeError, match="fold_activations"):
        dbt.convert(_net(), fold_activations=1)
    # a BN used twice, or with hooks, is not folded; our own BatchNorm2d is
    shared = nn.BatchNorm2d(3)
    seq = nn.Sequential(shared, nn.ReLU(), shared, nn.SiLU())
    dbt.convert(seq)
    assert type(seq[0]) is dbt.BatchNorm2d and seq[0] is seq[2] and type(seq[1]) is nn.ReLU
    hooked = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU())
    hooked[1].register_forward_hook(lambda *a: None)
    dbt.convert(hooked)
    assert type(hooked[0]) is dbt.BatchNorm2d and type(hooked[1]) is nn.ReLU
    again = dbt.convert(nn.Sequential(dbt.BatchNorm2d(3), nn.Mish()))
    assert type(again[0]) is dbt.BatchNormAct2d and type(again[0].act) is nn.Mish


# ------------------------------------------------------------------------------------------------
# torch.compile and the custom operators


def _op_samples():
    g = torch.Generator().manual_seed(0)
    out = []
    for shape, fmt in [((4, 3, 5, 6), torch.contiguous_format), ((4, 3, 5, 6), torch.channels_last)]:
        x = (torch.randn(shape, generator=g) * 2 + 1).contiguous(memory_format=fmt).requires_grad_()
        w = (torch.rand(3, generator=g) + 0.5).requires_grad_()
        b = torch.randn(3, generator=g).requires_grad_()
        out.append((x, w, b, torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5))
    return out


@pytest.mark.parametrize("i", range(2))
@pytest.mark.parametrize("kind,alpha", [(_acts.LEAKY, 0.1), (_acts.SWISH, 0.0)])
def test_opcheck_act(i, kind, alpha):
    x, w, b, rm, rv = _op_samples()[i]
    torch.library.opcheck(_ops.batch_norm_act_train, (x, w, b, rm, rv, 0.1, 1e-5, kind, alpha))
    torch.library.opcheck(_ops.batch_norm_act_train, (x, None, None, None, None, 0.1, 1e-5, kind, alpha))
    torch.library.opcheck(_ops.batch_norm_act_infer, (x, w, b, rm, rv, 1e-5, kind, alpha))
    g = torch.randn(x.shape).contiguous(memory_format=torch.channels_last if i else torch.contiguous_format)
    args = (g, x.detach(), w.detach(), b.detach(), rm, rv, 1e-5, True, kind, alpha)
    torch.library.opcheck(_ops.batch_norm_act_backward, args)


def test_ops_act_match_torch():
    x, w, b, rm, rv = _op_samples()[1]
    rm2, rv2 = rm.clone(), rv.clone()
    out, _m, _v, nrm, nrv = _ops.batch_norm_act_train(x, w, b, rm, rv, 0.1, 1e-5, _acts.LEAKY, 0.2)
    ref = F.leaky_relu(F.batch_norm(x, rm2, rv2, w, b, True, 0.1, 1e-5), 0.2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nrm, rm2), torch.testing.assert_close(nrv, rv2)
    assert out.stride() == ref.stride()


class SmallAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.1), nn.Conv2d(6, 6, 1)
        )
        self.bn = dbt.BatchNormAct2d(6, act_layer=nn.SiLU)
        self.fc = nn.Linear(6 * 4 * 4, 8)

    def forward(self, x):
        y = self.bn(self.body(x))
        return self.fc(F.avg_pool2d(y, 2).flatten(1))


def test_compiled_act_model_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = dbt.convert(SmallAct())
    assert type(eager.body[1]) is dbt.BatchNormAct2d
    comp_m = copy.deepcopy(eager)
    comp = torch.compile(comp_m, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    for _step in range(2):
        x = torch.randn(8, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
        gy = torch.randn(8, 8, generator=g)
        ys = []
        for m in (eager, comp):
            m.zero_grad()
            with kernel_calls() as calls:
                y = m(x)
                y.backward(gy)
            assert calls["train_act"] == 2 and calls["backward_act"] == 2, calls  # both fused, in both
            ys.append(y.detach())
        torch.testing.assert_close(ys[1], ys[0], rtol=1e-6, atol=1e-6)
        for (n, p), (_, q) in zip(eager.named_parameters(), comp_m.named_parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=n)
        for (n, p), (_, q) in zip(eager.named_buffers(), comp_m.named_buffers()):
            assert torch.equal(p, q), n
    eager.eval(), comp_m.eval()
    with torch.no_grad():
        x = torch.randn(8, 3, 8, 8, generator=g)
        torch.testing.assert_close(comp(x), eager(x), rtol=1e-6, atol=1e-6)


def test_kinds_match_the_c_header():
    from darknet_bn._capi import lib

    for kind, name in _acts.KIND_NAMES.items():
        assert getattr(lib, "DBN_ACT_" + name.upper()) == kind, name


def test_convert_sync_batchnorm_keeps_the_activation():
    from darknet_bn.torch.sync import SyncBatchNormAct

    m = nn.Sequential(
        nn.Conv2d(3, 4, 1), dbt.BatchNormAct2d(4, act_layer=nn.LeakyReLU, act_kwargs={"negative_slope": 0.2})
    )
    m[1].running_mean.uniform_(-1, 1)
    ref = copy.deepcopy(m).eval()
    s = dbt.SyncBatchNorm.convert_sync_batchnorm(m).eval()
    assert type(s[1]) is SyncBatchNormAct and type(s[1].act) is nn.LeakyReLU
    assert s[1].weight is m[1].weight and list(s.state_dict()) == list(ref.state_dict())
    x = make_input((2, 3, 4, 4), "contiguous", 0)
    with torch.no_grad():
        torch.testing.assert_close(s(x), ref(x), rtol=1e-5, atol=1e-6)
        assert float(s(x).min()) < 0  # the slope 0.2 ran: negative values remain
