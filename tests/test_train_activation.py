"""BN followed by an activation in the same passes, in training (issue 16): Layer.forward(x, train=True,
activation=...) and the backward that takes the activated output's delta and differentiates the
activation inside BN's backward passes.

Expected values: a float64 numpy reference written from the math (tests/reference.py: BN per flavor,
act64 the activation, dact64 its derivative, the backward by the chain rule); Darknet's sequence of
separate passes (gradient_array on the output, then backward_batchnorm_layer) bit for bit where it can
be formed from the layer's own outputs; PyTorch-free. Every activation and flavor, renorm, synchronized
layers (MPI), NaN/Inf, the thresholds of the piecewise activations, every plan of the engine, every
instruction set, thread counts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from helpers import assert_close, make_data

from darknet_bn import ACTIVATIONS, Flavor, make_batchnorm_layer
from darknet_bn import kernels as K
from darknet_bn._capi import ffi, lib

FLAVORS = ["pjreddie", "alexeyab", "torch"]
NAMES = list(ACTIVATIONS)
# where the piecewise activations (or their derivatives) change form
KINKS = {
    "leaky": [0.0],
    "relu": [0.0],
    "relu6": [0.0, 6.0],
    "hard_mish": [-2.0, 0.0],
    "hardswish": [-3.0, 3.0],
    "mish": [20.0],
}
SMALL = [(4, 3, 5, 7), (16, 8, 1, 1), (2, 13, 17, 19), (3, 5, 31, 37)]
# (batch, c, h, w) that take each plan of the engine (as tests/test_engine.py's BIG, checked below)
PLANS = {
    (4, 9, 500, 401): "lane, fused (beyond the cache), non-temporal stores",
    (3, 5, 100, 97): "lane, three phases, flat reduction",
    (256, 1000, 5, 5): "block, fused channel groups",
    (4096, 300, 1, 1): "block, one tile split in row chunks, per-element coefficients",
    (64, 512, 7, 7): "block, fused channel groups that fit L2 (below the streaming size), masked tails",
    (64, 40, 7, 7): "block, narrow fused tiles of 5 channels x 49 values (the forward and the backward)",
    (500, 9, 11, 13): "block, one tile split in row chunks: grid reduction, flat map with masked tails (the "
    "backward: its tasks' two inputs exceed the narrow tiles' DBN_NARROW_TASK_MAX)",
    (512, 200, 2, 3): "block, tiny planes, per-element coefficients",
    (7, 1, 333, 333): "one channel: one long plane",
}


def _ptr(a):
    return ffi.from_buffer("float[]", a)


def _pre64(x, layer, shape, flavor):
    """The pre-activation in float64: BN of x with the layer's scales and biases (the reference's batch
    statistics), and the reference's forward dict."""
    e = ref.forward(x, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, flavor, True)
    return e["output"], e


def _away_from_kinks(x, layer, shape, flavor, name, margin=1e-3):
    """x with the values whose pre-activation lies within margin of a kink moved away (a float32
    pre-activation may fall on the other side of a kink than float64's; the derivative jumps there)."""
    kinks = KINKS.get(name, [])
    for _ in range(8):
        z, _e = _pre64(x, layer, shape, flavor)
        near = np.zeros(z.shape, bool)
        for k in kinks:
            near |= np.abs(z - k) < margin * max(1.0, abs(k))
        if not near.any():
            return x
        x = x.copy()
        x[near] += np.float32(0.05) * np.where(x[near] >= 0, 1, -1).astype(np.float32)
    raise AssertionError("could not move the data off the kinks")


def _layer(shape, flavor, seed=0, **kw):
    b, c, h, w = shape
    layer = make_batchnorm_layer(b, w, h, c, flavor, **kw)
    rng = np.random.default_rng(seed)
    layer.scales[:] = rng.uniform(0.5, 2.0, c)
    layer.biases[:] = rng.uniform(-1.0, 1.0, c)
    layer.rolling_variance[:] = 1.0
    return layer


def _check_train(layer, x, dy, shape, flavor, name, tag):
    """One training forward and backward of the layer against the float64 chain rule."""
    z, e = _pre64(x, layer, shape, flavor)
    sc = layer.scales.astype(np.float64)
    out = layer.forward(x, train=True, activation=name)
    want = ref.act64(name, z)
    scale_out = np.abs(want).max()
    assert_close(out, want, rtol=4e-6, scale=scale_out, name=f"{tag} output")
    for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
        assert_close(getattr(layer, k), e[k], rtol=2e-6, name=f"{tag} {k}")
    layer.delta[:] = dy
    dx = layer.backward()
    g = dy * ref.dact64(name, z)
    b = ref.backward(x, g, sc, e["mean"], e["variance"], shape, flavor, True)
    fl = ref.FLAVORS[flavor]
    sigma = ref.denominator(e["variance"], fl["bwd_eps"], fl["bwd_eps_in_sqrt"])
    scale_dx = np.abs(g).max() * (np.abs(sc) / sigma).max()
    assert_close(dx, b["delta"], rtol=2e-5, scale=scale_dx, name=f"{tag} input delta")
    assert np.array_equal(layer.delta, dx)
    n_per = np.abs(g).sum(axis=(0, 2, 3)).max()
    assert_close(layer.bias_updates, b["bias_updates"], rtol=1e-5, scale=n_per, name=f"{tag} bias_updates")
    xn = np.abs(e["x_norm"]).max()
    assert_close(layer.scale_updates, b["scale_updates"], rtol=1e-5, scale=n_per * xn, name=f"{tag} scale_updates")
    md = n_per * np.abs(sc).max() / np.sqrt(e["variance"].min() + fl["stat_eps"])
    assert_close(layer.mean_delta, b["mean_delta"], rtol=1e-5, scale=md, name=f"{tag} mean_delta")
    vd = np.abs(b["variance_delta"]).max() + md * xn / np.sqrt(e["variance"].min() + fl["stat_eps"])
    assert_close(layer.variance_delta, b["variance_delta"], rtol=1e-5, scale=vd, name=f"{tag} variance_delta")


# ------------------------------------------------------------------------------------------------
# Every activation x every flavor, training and inference, against float64


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("name", NAMES)
def test_training_forward_backward_against_float64(name, flavor):
    for i, shape in enumerate(SMALL):
        dy = make_data(shape, 10 + i)
        layer = _layer(shape, flavor, seed=i)
        x = _away_from_kinks(make_data(shape, i) * 1.5, layer, shape, flavor, name)
        _check_train(layer, x, dy, shape, flavor, name, f"{name} {flavor} {shape}")


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("name", NAMES)
def test_inference_forward_backward_against_float64(name, flavor):
    """The backward after an inference forward differentiates the same activation (rolling statistics
    as constants)."""
    shape = (6, 7, 9, 11)
    b, c, h, w = shape
    layer = _layer(shape, flavor, seed=3)
    rng = np.random.default_rng(5)
    layer.rolling_mean[:] = rng.uniform(-0.5, 0.5, c)
    layer.rolling_variance[:] = rng.uniform(0.5, 2.0, c)
    x = make_data(shape, 4)
    dy = make_data(shape, 6)
    e = ref.forward(x, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, flavor, False)
    z = e["output"]
    kinks = KINKS.get(name, [])
    ok = np.ones(z.shape, bool)  # elementwise: the values next to a kink are left out (no sums mix them)
    for k in kinks:
        ok &= np.abs(z - k) > 1e-4 * max(1.0, abs(k))
    out = layer.forward(x, train=False, activation=name)
    want = ref.act64(name, z)
    assert_close(out[ok], want[ok], rtol=4e-6, scale=np.abs(want).max(), name=f"{name} {flavor} inference")
    layer.delta[:] = dy
    dx = layer.backward()
    fl = ref.FLAVORS[flavor]
    den = ref.denominator(layer.rolling_variance.astype(np.float64), fl["eps"], fl["eps_in_sqrt"])
    dxw = dy * ref.dact64(name, z) * (layer.scales / den)[None, :, None, None]
    assert_close(dx[ok], dxw[ok], rtol=1e-5, scale=np.abs(dxw).max(), name=f"{name} {flavor} inference delta")
    assert np.array_equal(layer.mean_delta, np.zeros(c)) and np.array_equal(layer.variance_delta, np.zeros(c))


@pytest.mark.parametrize("name", ["logistic", "elu", "swish", "mish", "gelu_erf"])  # no kinks: no data nudging
@pytest.mark.parametrize("flavor", FLAVORS)
def test_renorm_with_activation(name, flavor):
    shape = (8, 6, 7, 5)
    b, c, h, w = shape
    layer = _layer(shape, flavor, seed=2, renorm=True, rmax=1.5, dmax=0.5)
    rng = np.random.default_rng(8)
    rm0 = rng.uniform(-1, 1, c).astype(np.float32)
    rv0 = rng.uniform(0.3, 3, c).astype(np.float32)
    layer.rolling_mean[:], layer.rolling_variance[:] = rm0, rv0
    x = make_data(shape, 9)
    dy = make_data(shape, 11)
    sc, bi = layer.scales.astype(np.float64), layer.biases.astype(np.float64)
    e = ref.forward_renorm(x, sc, bi, rm0, rv0, shape, flavor, 1.5, 0.5)
    assert np.abs(np.log(e["r"])).max() > 0.01, "the data should make renorm act"
    z = e["output"]
    out = layer.forward(x, train=True, activation=name)
    want = ref.act64(name, z)
    assert_close(out, want, rtol=4e-6, scale=np.abs(want).max(), name=f"renorm {name} {flavor} output")
    layer.delta[:] = dy
    dx = layer.backward()
    g = dy * ref.dact64(name, z)
    bw = ref.backward_renorm(x, g, sc, e["mean"], e["variance"], e["r"], e["d"], shape, flavor)
    fl = ref.FLAVORS[flavor]
    sigma = ref.denominator(e["variance"], fl["bwd_eps"], fl["bwd_eps_in_sqrt"])
    scale = np.abs(g).max() * (np.abs(sc) * e["r"] / sigma).max()
    assert_close(dx, bw["delta"], rtol=2e-5, scale=scale, name=f"renorm {name} {flavor} input delta")


# ------------------------------------------------------------------------------------------------
# Darknet's separate passes, bit for bit


@pytest.mark.parametrize("name", [n for n in NAMES if ACTIVATIONS[n] <= ACTIVATIONS["selu"]])
@pytest.mark.parametrize("shape", list(PLANS)[1:2] + SMALL[:2] + [(64, 512, 7, 7)])
def test_training_backward_is_gradient_array_then_plain_backward(name, shape, isa):
    """For the activations Darknet differentiates from the output: the fused backward gives the bits of
    gradient_array(output, delta) followed by the plain backward -- Darknet's backward sequence."""
    _assert_fused_backward_is_gradient_array_then_plain(shape, name)


def _assert_fused_backward_is_gradient_array_then_plain(shape, name) -> None:
    x, dy = make_data(shape, 1), make_data(shape, 2)
    fused, plain = _layer(shape, "alexeyab", 4), _layer(shape, "alexeyab", 4)
    y = fused.forward(x, activation=name).copy()
    fused.delta[:] = dy
    dx = fused.backward().copy()
    plain.forward(x)
    for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
        assert np.array_equal(getattr(plain, k), getattr(fused, k)), k
    g = dy.copy()
    K.gradient_array(y, y.size, name, g)
    plain.delta[:] = g
    assert np.array_equal(plain.backward(), dx), name
    for k in ("scale_updates", "bias_updates", "mean_delta", "variance_delta"):
        assert np.array_equal(getattr(plain, k), getattr(fused, k)), k


@pytest.mark.parametrize("name", NAMES)
def test_inference_backward_is_gradient_array_then_plain_backward(name, isa):
    """After an inference forward the pre-activation is the linear inference output (the same
    coefficients): the fused backward gives the bits of gradient_array (on the output, or on that
    pre-activation for the kinds taken from the input) and the plain backward."""
    shape = (5, 6, 11, 13)
    b, c, h, w = shape
    x, dy = make_data(shape, 1), make_data(shape, 2)
    fused, plain = _layer(shape, "pjreddie", 4), _layer(shape, "pjreddie", 4)
    for ly in (fused, plain):
        ly.rolling_mean[:] = 0.3
        ly.rolling_variance[:] = 1.7
    y = fused.forward(x, train=False, activation=name).copy()
    fused.delta[:] = dy
    dx = fused.backward().copy()
    z = plain.forward(x, train=False).copy()
    a = z.copy()
    K.activate_array(a, a.size, name)
    assert np.array_equal(a, y), "activate_array of the linear output is the fused output"
    g = dy.copy()
    K.gradient_array(y if ACTIVATIONS[name] <= ACTIVATIONS["selu"] else z, y.size, name, g)
    plain.delta[:] = g
    assert np.array_equal(plain.backward(), dx), name


# ------------------------------------------------------------------------------------------------
# Every plan, every instruction set, thread counts


def test_plan_shapes_take_their_paths():
    seen = set()
    for shape in PLANS:
        b, c, h, w = shape
        for bpv in (4, 8):
            info = ffi.new("dbn_plan_info *")
            lib.dbn_describe_plan(b, c, h * w, bpv, info)
            seen.add(("fused" if info.fused else "flat" if info.reduce_flat else "grid", info.tile == 1, info.expand))
    for path in [("fused", True, 0), ("fused", False, 0), ("flat", True, 0), ("grid", False, 1), ("grid", False, 0)]:
        assert path in seen, path


_big: dict = {}


def _big_reference(shape, name):
    """Data off the kinks and the float64 chain rule for a large shape (computed once)."""
    key = (shape, name)
    if key not in _big:
        _big.clear()
        layer = _layer(shape, "torch", 1)
        x = _away_from_kinks(make_data(shape, 3), layer, shape, "torch", name)
        dy = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
        z, e = _pre64(x, layer, shape, "torch")
        g = dy * ref.dact64(name, z)
        b = ref.backward(x, g, layer.scales, e["mean"], e["variance"], shape, "torch", True)
        sigma = np.sqrt(e["variance"] + 1e-5)
        scale_dx = np.abs(g).max() * (layer.scales / sigma).max()
        _big[key] = (x, dy, ref.act64(name, z), b["delta"], scale_dx)
    return _big[key]


@pytest.mark.parametrize("name", ["leaky", "swish"])
@pytest.mark.parametrize("shape", list(PLANS))
def test_every_plan_on_every_isa(shape, name, isa):
    _assert_fused_matches_reference(shape, name, isa)


def _assert_fused_matches_reference(shape, name, isa) -> None:
    """The fused training forward and its backward (into a fresh buffer) against the float64 chain rule."""
    x, dy, want, dxw, scale_dx = _big_reference(shape, name)  # data off the kinks, the float64 chain rule
    layer = _layer(shape, "torch", 1)  # the parameters _big_reference used
    out = layer.forward(x, activation=name)
    assert_close(out, want, rtol=4e-6, name=f"{isa} {shape} {name} output")
    layer.delta[:] = dy
    nd = np.empty_like(x)
    layer.backward(nd)
    assert_close(nd, dxw, rtol=2e-5, scale=scale_dx, name=f"{isa} {shape} {name} input delta")


@pytest.mark.parametrize("name", ["relu6", "mish", "gelu_erf"])
@pytest.mark.parametrize("shape", list(PLANS))
def test_thread_counts_give_identical_bits(shape, name):
    x, dy = make_data(shape, 5), make_data(shape, 6)

    def kernels() -> list[np.ndarray]:
        a, gd = x.copy(), dy.copy()
        K.activate_array(a, a.size, name)
        K.gradient_array(x, x.size, name, gd)
        return [a, gd]

    _assert_same_bits_on_1_and_2_threads(shape, name, x, dy, "bias_updates", kernels)


def _assert_same_bits_on_1_and_2_threads(shape, name, x, dy, stat: str, extra=lambda: []) -> None:
    """A pjreddie layer's forward with the activation, then its backward, on 1 and on 2 threads: the
    output, the input delta, scale_updates and the layer's array `stat` (and what `extra()` returns,
    computed on the same thread count) must be the same bits."""
    runs = []
    try:
        for n in (1, 2):
            K.set_num_threads(n)
            layer = _layer(shape, "pjreddie", 2)
            out = layer.forward(x, activation=name).copy()
            layer.delta[:] = dy
            layer.backward(layer.delta)
            runs.append([out, layer.delta.copy(), layer.scale_updates.copy(), getattr(layer, stat).copy()])
            runs[-1] += extra()
    finally:
        K.set_num_threads(None)
    for u, v in zip(*runs):
        assert np.array_equal(u, v, equal_nan=True)


# ------------------------------------------------------------------------------------------------
# Thresholds, special values, NaN/Inf

_IDENTITY = Flavor(
    "identity",
    momentum=0.1,
    eps=0.0,
    eps_in_sqrt=True,
    unbiased=False,
    bwd_eps=0.0,
    bwd_eps_in_sqrt=True,
    stat_eps=0.0,
    init_rolling_variance=1.0,
)


def _threshold_values():
    pts = [0.0, -0.0, 6.0, -2.0, 20.0, -3.0, 3.0]
    near = [np.nextafter(np.float32(p), np.float32(np.inf)) for p in pts]
    near += [np.nextafter(np.float32(p), np.float32(-np.inf)) for p in pts]
    sweep = np.linspace(-25, 25, 20001, dtype=np.float32)
    return np.concatenate([np.array(pts + near, np.float32), sweep])


@pytest.mark.parametrize("name", NAMES)
def test_derivative_at_the_thresholds(name, isa):
    """With an identity BN (eps 0, rolling variance 1, scale 1, bias 0) the pre-activation is x itself and
    the inference backward is delta * act'(x): at the kinks exactly (0 for relu and leaky, 0 and 6 for
    relu6, -2 and 0 for hard_mish, 20 for mish, -3 and 3 for hardswish), one float on either side, and
    a sweep; so is gradient_array at the input (or, for the kinds taken from the output, at act(x))."""
    x = _threshold_values()
    n = x.size
    layer = make_batchnorm_layer(1, n, 1, 1, _IDENTITY)
    layer.forward(x.reshape(1, 1, 1, n), train=False, activation=name)
    layer.delta[:] = 1.0
    got = layer.backward().reshape(-1).astype(np.float64)
    want = ref.dact64(name, x)
    err = np.abs(got - want)
    bound = 2e-6 * np.abs(want) + 3e-7
    bad = err > bound
    assert not bad.any(), f"{name}: act'({x[bad][:4]}) = {got[bad][:4]}, want {want[bad][:4]}"
    y = x.copy()
    K.activate_array(y, n, name)
    d = np.ones(n, np.float32)
    K.gradient_array(y if ACTIVATIONS[name] <= ACTIVATIONS["selu"] else x, n, name, d)
    assert np.array_equal(d.astype(np.float64), got), f"{name}: gradient_array differs from the fused backward"
    # the exact values at the kinks, Darknet's (and PyTorch's for hardswish) conventions
    for k in KINKS.get(name, []):
        at = np.flatnonzero(x == np.float32(k))[0]
        assert got[at] == want[at], (name, k, got[at], want[at])


@pytest.mark.parametrize("name", NAMES)
def test_gradient_array_against_float64_and_plain_reference(name, isa):
    x = np.concatenate([np.linspace(-30, 30, 60001, dtype=np.float32), np.float32([0, -0.0, 1e-30, -1e-30])])
    n = x.size
    y = x.copy()
    K.activate_array(y, n, name)
    y_ref = x.copy()
    lib.activate_array_ref(_ptr(y_ref), n, ffi.new("dbn_act *", {"kind": ACTIVATIONS[name], "alpha": 0.1}))
    want = ref.act64(name, x)
    assert np.allclose(y, want, rtol=2e-6, atol=1e-6 * np.abs(want).max()), name
    assert np.allclose(y_ref, want, rtol=2e-6, atol=1e-6 * np.abs(want).max()), name
    from_out = ACTIVATIONS[name] <= ACTIVATIONS["selu"]
    src = y if from_out else x
    d = np.full(n, 0.5, np.float32)
    K.gradient_array(src, n, name, d)
    d_ref = np.full(n, 0.5, np.float32)
    a = ffi.new("dbn_act *", {"kind": ACTIVATIONS[name], "alpha": 0.1})
    lib.gradient_array_ref(_ptr(src), n, a, _ptr(d_ref))
    dw = 0.5 * ref.dact64(name, x)
    bound = 2e-6 * np.abs(dw) + 2e-7
    assert (np.abs(d - dw) <= bound).all(), name
    assert (np.abs(d_ref - dw) <= 4 * bound).all(), name  # libm, Darknet's expressions


def test_gelu_erf_against_math_erf():
    """The vectorized erfc behind gelu_erf, on a dense sweep and both tails, against math.erf in float64:
    0.5 x (1 + erf(x / sqrt 2)) within a few float32 ulps (relative), and its derivative."""
    import math

    x = np.concatenate(
        [np.linspace(-14, 14, 280001, dtype=np.float32), np.float32([-13.5, -9.0, -5.0, -1.2, 0.9, 1.7, 4.0, 9.0])]
    )
    want = np.array(
        [
            v * 0.5 * math.erfc(-v / math.sqrt(2)) if v < 0 else 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
            for v in x.astype(np.float64)
        ]
    )
    for isa in ("baseline", "avx2", "avx512"):
        if isa not in _available():
            continue
        K.set_isa(isa)
        try:
            y = x.copy()
            K.activate_array(y, y.size, "gelu_erf")
        finally:
            K.set_isa(None)
        ok = np.abs(want) > 1e-37  # normal float32 results
        rel = np.abs(y[ok] - want[ok]) / np.abs(want[ok])
        assert rel.max() < 1.5e-6, (isa, rel.max(), x[ok][rel.argmax()])


def _available():
    from helpers import available_isas

    return available_isas()


def test_swish_derivative_of_huge_inputs_is_one(isa):
    """Darknet's swish derivative y + s (1 - y) is 0 or 2 beyond 2^24 (1 - y rounds to -y) where the
    derivative is 1 (s = 1): darknet_bn caps y at 2^23, so it is 1 there (finite inputs), in the fused
    inference backward (identity BN: delta * act'(x)) and in gradient_array (below the cap the values are
    Darknet's)."""
    big = np.array([2.0**22, 2.0**23, 2.0**23 + 1, 2.0**24, 2.0**24 + 2, 3e7, 4.6e8, 1e30, 3.4e38], np.float32)
    n = big.size
    layer = make_batchnorm_layer(1, n, 1, 1, _IDENTITY)
    layer.forward(big.reshape(1, 1, 1, n), train=False, activation="swish")
    layer.delta[:] = 1.0
    assert np.array_equal(layer.backward().reshape(-1), np.ones(n, np.float32))
    d = np.ones(n, np.float32)
    K.gradient_array(big.copy(), n, "swish", d)
    assert np.array_equal(d, np.ones(n, np.float32))
    for v in (np.float32(-4.6e8), np.float32(np.nan)):  # the other side: 0 (s = 0); NaN stays NaN
        d = np.ones(1, np.float32)
        K.gradient_array(np.array([v]), 1, "swish", d)
        assert (d[0] == 0) if v < 0 else np.isnan(d[0])


@pytest.mark.parametrize("name", ["leaky", "swish", "mish", "hardswish", "logistic"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(4, 5, 6, 7), (16, 8, 1, 1), (3, 5, 100, 97), (64, 40, 7, 7)])
def test_nan_and_inf_stay_in_their_channel(shape, name, bad):
    b, c, h, w = shape
    x, dy = make_data(shape, 1), make_data(shape, 2)
    clean, dirty = _layer(shape, "alexeyab", 3), _layer(shape, "alexeyab", 3)
    out0 = clean.forward(x, activation=name).copy()
    clean.delta[:] = dy
    dx0 = clean.backward()
    xb = x.copy()
    ch = c // 2
    xb[b // 2, ch, h // 2, w // 2] = bad
    out1 = dirty.forward(xb, activation=name).copy()
    dirty.delta[:] = dy
    dx1 = dirty.backward()
    others = np.arange(c) != ch
    assert np.array_equal(out1[:, others], out0[:, others])
    assert np.array_equal(dx1[:, others], dx0[:, others])
    for k in ("mean", "variance", "scale_updates", "bias_updates", "mean_delta", "variance_delta"):
        assert np.array_equal(getattr(dirty, k)[others], getattr(clean, k)[others]), k
    assert not np.isfinite(dirty.mean[ch]) or not np.isfinite(dirty.variance[ch])
    assert not np.isfinite(dx1[:, ch]).all()
    # a NaN in delta: its channel only
    d2 = _layer(shape, "alexeyab", 3)
    d2.forward(x, activation=name)
    dyb = dy.copy()
    dyb[0, ch, 0, 0] = np.nan
    d2.delta[:] = dyb
    dx2 = d2.backward()
    assert np.array_equal(dx2[:, others], dx0[:, others])
    assert np.isnan(d2.bias_updates[ch])


# ------------------------------------------------------------------------------------------------
# Leaky's slope, bad input, synchronized layers


def test_leaky_alpha():
    shape = (4, 3, 6, 5)
    b, c, h, w = shape
    layer = _layer(shape, "torch", 1)
    x = _away_from_kinks(make_data(shape, 2), layer, shape, "torch", "leaky")
    dy = make_data(shape, 3)
    z, e = _pre64(x, layer, shape, "torch")
    out = layer.forward(x, activation="leaky", alpha=0.2)
    assert_close(out, ref.act64("leaky", z, 0.2), rtol=4e-6, name="leaky 0.2")
    layer.delta[:] = dy
    dx = layer.backward()
    g = dy * ref.dact64("leaky", z, 0.2)
    bw = ref.backward(x, g, layer.scales, e["mean"], e["variance"], shape, "torch", True)
    assert_close(dx, bw["delta"], rtol=2e-5, scale=np.abs(bw["delta"]).max(), name="leaky 0.2 delta")
    assert np.array_equal(layer.forward(x, activation="leaky", alpha=0.1), layer.forward(x, activation="leaky"))
    y = np.float32([-2, -0.5, 0, 1])
    K.activate_array(y, 4, "leaky", alpha=0.25)
    assert np.array_equal(y, np.float32([-0.5, -0.125, 0, 1]))
    d = np.ones(4, np.float32)
    K.gradient_array(y, 4, "leaky", d, alpha=0.25)
    assert np.array_equal(d, np.float32([0.25, 0.25, 0.25, 1]))


def test_bad_input():
    shape = (2, 3, 4, 5)
    b, c, h, w = shape
    layer = make_batchnorm_layer(b, w, h, c)
    x = make_data(shape, 1)
    before = layer.rolling_mean.copy()
    for train in (True, False):
        with pytest.raises(ValueError, match="activation.*softmax"):
            layer.forward(x, train=train, activation="softmax")
        with pytest.raises(TypeError, match="activation"):
            layer.forward(x, train=train, activation=3)
        with pytest.raises(TypeError, match="activation"):
            layer.forward(x, train=train, activation=["leaky"])
        with pytest.raises(ValueError, match="alpha"):
            layer.forward(x, train=train, activation="relu", alpha=0.2)
        with pytest.raises(ValueError, match="alpha"):
            layer.forward(x, train=train, activation="leaky", alpha=float("nan"))
        with pytest.raises(TypeError, match="alpha"):
            layer.forward(x, train=train, activation="leaky", alpha="0.1")
    assert np.array_equal(layer.rolling_mean, before), "a raising forward changed the layer"
    y = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="activation"):
        K.activate_array(y, 4, "nope")
    with pytest.raises(ValueError, match="elements"):
        K.activate_array(y, 5, "relu")
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        K.activate_array(ro, 4, "relu")
    with pytest.raises(ValueError, match="shares memory"):
        K.gradient_array(y, 4, "relu", y)
    with pytest.raises(ValueError, match="alpha"):
        K.gradient_array(y, 4, "leaky", np.zeros(4, np.float32), alpha=-0.5)
    with pytest.raises(TypeError, match="float32"):
        K.gradient_array(y.astype(np.float64), 4, "relu", np.zeros(4, np.float32))


def test_backward_follows_the_last_forward():
    """The backward differentiates the last forward's activation: a linear forward after an activated
    one gives the plain backward."""
    shape = (4, 3, 6, 5)
    b, c, h, w = shape
    x, dy = make_data(shape, 1), make_data(shape, 2)
    a, p = _layer(shape, "torch", 1), _layer(shape, "torch", 1)
    a.forward(x, activation="mish")
    a.forward(x)
    p.forward(x)
    a.delta[:] = p.delta[:] = dy
    assert np.array_equal(a.backward(), p.backward())


def test_single_process_sync_layer():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'darknet_bn[mpi]')")
    from darknet_bn.distributed import MPI, make_sync_batchnorm_layer

    shape = (4, 3, 5, 5)
    b, c, h, w = shape
    x, dy = make_data(shape, 1), make_data(shape, 2)
    s = make_sync_batchnorm_layer(b, w, h, c, MPI.COMM_SELF, "torch")
    p = make_batchnorm_layer(b, w, h, c, "torch")
    for name in ("leaky", "swish", "gelu_erf"):
        ys, yp = s.forward(x, activation=name), p.forward(x, activation=name)
        assert_close(ys, yp, rtol=1e-6, name=name)
        s.delta[:] = p.delta[:] = dy
        assert_close(s.backward(), p.backward(), rtol=1e-5, name=name)
    with pytest.raises(ValueError, match="activation"):
        s.forward(x, activation="softmax")


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich gives one)")
def test_sync_layer_with_activation_over_mpi(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'darknet_bn[mpi]')")
    worker = Path(__file__).resolve().parent / "mpi" / "act_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    r = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(worker)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 43 checks on 2 processes" in r.stdout


# ------------------------------------------------------------------------------------------------
# Rows of at most 4 vectors (engine.inc's small-row paths: c*h*w <= 64), with an activation

# c*h*w = 32 (256x32: 2 AVX-512 vectors, 4 AVX2), 20 and 12 (partial vectors: AVX-512's masked path), 64 (4
# AVX-512 vectors), 8; batches that are not multiples of 4 and cross the 32-row folds into double
SMALL_ROWS = [(67, 32, 1, 1), (45, 20, 1, 1), (37, 3, 2, 2), (41, 16, 2, 2), (70, 8, 1, 1)]


@pytest.mark.parametrize("name", ["leaky", "relu", "logistic", "tanh"])  # cheap (recomputed) and stored g
@pytest.mark.parametrize("shape", SMALL_ROWS)
def test_small_rows_backward_is_gradient_array_then_plain_backward(name, shape, isa):
    """The fused backward's small-row reduction and map give the bits of gradient_array on the output
    followed by the plain backward, on every instruction set (both take the same small-row loops)."""
    _assert_fused_backward_is_gradient_array_then_plain(shape, name)


@pytest.mark.parametrize("name", ["leaky", "swish", "hardswish"])
@pytest.mark.parametrize("shape", SMALL_ROWS)
def test_small_rows_with_activation_against_float64(name, shape, isa):
    """Training forward and backward with an activation on small rows against the float64 chain rule, and
    the fused inference output against activate_array of the linear inference output, bit for bit."""
    x = _away_from_kinks(make_data(shape, 3), _layer(shape, "torch", 5), shape, "torch", name)
    dy = make_data(shape, 4)
    _check_train(_layer(shape, "torch", 5), x, dy, shape, "torch", name, f"{isa} {shape} {name}")
    fused, plain = _layer(shape, "torch", 5), _layer(shape, "torch", 5)
    y = fused.forward(x, train=False, activation=name).copy()
    z = plain.forward(x, train=False).copy()
    K.activate_array(z, z.size, name)
    assert np.array_equal(z, y), name


@pytest.mark.parametrize("name", ["leaky", "logistic"])
def test_small_rows_thread_counts_give_identical_bits(name):
    """8192x16x1x1 (rows of 16 values, beyond the single-task size: three phases, row chunks spread over
    the team): the same bits on 1 and 2 threads, forward and backward with an activation."""
    shape = (8192, 16, 1, 1)
    _assert_same_bits_on_1_and_2_threads(shape, name, make_data(shape, 5), make_data(shape, 6), "variance_delta")
