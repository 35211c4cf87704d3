"""The engine's plane (lane) and block paths under the fused plan for channel groups that fit L2
(csrc/driver.c, DBN_FUSED_TASK_MAX: docs/performance.md section 8): one-sample big planes
(1x16x416x416's kind), small planes of many channels (64x512x7x7's kind), planes with masked tails.

Expected values: the float64 reference written from the math (tests/reference.py, act64/dact64 for the
activation); Darknet's separate passes (activate_array after the plain forward, gradient_array before
the plain backward) bit for bit; the same bits on 1 and 2 threads and every instruction set; NaN/Inf
confined to their channels."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import assert_close, make_data

from darknet_bn import kernels as K
from darknet_bn import make_batchnorm_layer
from darknet_bn._capi import ffi, lib

# (batch, c, h, w): each takes the fused plan below DBN_STREAM_MAX (checked in test_plans)
SHAPES = {
    (1, 16, 130, 131): "lane, one sample, 16 channels; runs of 17030 (a 6-value tail)",
    (3, 9, 61, 67): "lane, 9 channel groups, planes of 4087 (a 7-value tail)",
    (32, 160, 7, 7): "block, 8 tiles of 20 channels of 7x7 (49: a 1-value tail)",
    (16, 96, 13, 13): "block, 16 tiles of 6 channels of 13x13 (169: a 9-value tail)",
}


def plan(shape, bytes_per_value):
    b, c, h, w = shape
    info = ffi.new("dbn_plan_info *")
    lib.dbn_describe_plan(b, c, h * w, bytes_per_value, info)
    return info


def test_plans():
    for shape in SHAPES:
        for bpv in (4, 8):
            i = plan(shape, bpv)
            assert i.fused and i.ntiles >= 8, (shape, bpv)
    # the bench's shapes of issue 16 that were three phases before (6-22 MB, in L3)
    for shape in [(1, 16, 416, 416), (64, 512, 7, 7), (16, 128, 52, 52), (32, 256, 26, 26)]:
        assert plan(shape, 4).fused and plan(shape, 8).fused, shape
    # a channel group beyond the L2 budget (1.96 MB a channel) below the streaming size keeps three phases
    assert not plan((1, 8, 700, 700), 4).fused
    # too few channel groups (5): three phases
    assert not plan((3, 5, 100, 97), 4).fused


def _layer(shape, flavor, seed=0):
    b, c, h, w = shape
    ly = make_batchnorm_layer(b, w, h, c, flavor)
    rng = np.random.default_rng(seed)
    ly.scales[:] = rng.uniform(0.5, 2.0, c)
    ly.biases[:] = rng.uniform(-1.0, 1.0, c)
    ly.rolling_variance[:] = 1.0
    return ly


@pytest.mark.parametrize("name", [None, "leaky", "swish"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_training_passes_against_float64(shape, name, isa):
    flavor = "torch"
    x, dy = make_data(shape, 1), make_data(shape, 2)
    ly = _layer(shape, flavor, 3)
    e = ref.forward(x, ly.scales, ly.biases, ly.rolling_mean, ly.rolling_variance, shape, flavor, True)
    z = e["output"]
    if name == "leaky":  # off the kink: a float32 pre-activation may fall on the other side of 0
        near = np.abs(z) < 1e-3
        x = np.where(near, x + np.float32(0.05), x).astype(np.float32)
        e = ref.forward(x, ly.scales, ly.biases, ly.rolling_mean, ly.rolling_variance, shape, flavor, True)
        z = e["output"]
        assert not (np.abs(z) < 1e-4).any()
    act = name or "linear"
    out = ly.forward(x, train=True, activation=name)
    want = ref.act64(act, z)
    assert_close(out, want, rtol=4e-6, name=f"{isa} {shape} {name} output")
    assert_close(ly.mean, e["mean"], rtol=2e-6, name="mean")
    assert_close(ly.variance, e["variance"], rtol=2e-6, name="variance")
    ly.delta[:] = dy
    dx = ly.backward(ly.delta)
    g = dy * ref.dact64(act, z)
    b = ref.backward(x, g, ly.scales.astype(np.float64), e["mean"], e["variance"], shape, flavor, True)
    scale_dx = np.abs(g).max() * (ly.scales / np.sqrt(e["variance"] + 1e-5)).max()
    assert_close(dx, b["delta"], rtol=2e-5, scale=scale_dx, name=f"{isa} {shape} {name} input delta")
    n_per = np.abs(g).sum(axis=(0, 2, 3)).max()
    assert_close(ly.bias_updates, b["bias_updates"], rtol=1e-5, scale=n_per, name="bias_updates")
    xn = np.abs(e["x_norm"]).max()
    assert_close(ly.scale_updates, b["scale_updates"], rtol=1e-5, scale=n_per * xn, name="scale_updates")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_fused_is_the_separate_passes_bit_for_bit(shape, isa):
    """leaky fused in the backward == gradient_array (on the fused forward's output) then the plain
    backward, bit for bit: every output and per-channel array. (The forwards agree within float32
    rounding only: the linear training forward folds the double mean's residual into its constant
    term, the one with an activation uses the stored float32 statistics, layer.py.)"""
    x, dy = make_data(shape, 4), make_data(shape, 5)
    fused, plain = _layer(shape, "alexeyab", 6), _layer(shape, "alexeyab", 6)
    y = fused.forward(x, train=True, activation="leaky").copy()
    a = plain.forward(x, train=True).copy()
    K.activate_array(a, a.size, "leaky")
    assert_close(a, y, rtol=1e-6, name="plain + activate_array against fused")
    for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
        assert np.array_equal(getattr(plain, k), getattr(fused, k)), k
    fused.delta[:] = dy
    dx = fused.backward(fused.delta).copy()
    g = dy.copy()
    K.gradient_array(y, y.size, "leaky", g)
    plain.delta[:] = g
    assert np.array_equal(plain.backward(plain.delta), dx)
    for k in ("scale_updates", "bias_updates", "mean_delta", "variance_delta"):
        assert np.array_equal(getattr(plain, k), getattr(fused, k)), k


def _passes(shape, x, dy, name):
    ly = _layer(shape, "pjreddie", 7)
    out = ly.forward(x, train=True, activation=name).copy()
    ly.delta[:] = dy
    dx = ly.backward(ly.delta).copy()
    inf = ly.forward(x, train=False, activation=name).copy()
    return [out, dx, inf, ly.mean.copy(), ly.variance.copy(), ly.scale_updates.copy(), ly.bias_updates.copy()]


@pytest.mark.parametrize("name", [None, "leaky", "mish"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_one_and_two_threads_give_the_same_bits(shape, name):
    x, dy = make_data(shape, 8), make_data(shape, 9)
    runs = []
    try:
        for n in (1, 2):
            K.set_num_threads(n)
            runs.append(_passes(shape, x, dy, name))
    finally:
        K.set_num_threads(None)
    for u, v in zip(*runs):
        assert np.array_equal(u, v, equal_nan=True)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_nan_and_inf_stay_in_their_channels(shape):
    """A NaN in one channel and an Inf in another: their statistics and outputs are not finite, every
    other channel gives the bits of the clean input (channels are independent in every plan)."""
    x, dy = make_data(shape, 10), make_data(shape, 11)
    bad = x.copy()
    bad[-1, 1, 0, -1] = np.nan  # the last sample's first plane of channel 1: a tail value on most shapes
    bad[0, 2, -1, 0] = np.inf
    clean = _passes(shape, x, dy, "leaky")
    dirty = _passes(shape, bad, dy, "leaky")
    keep = np.ones(shape[1], bool)
    keep[[1, 2]] = False
    for u, v in zip(clean[:3], dirty[:3]):
        assert np.array_equal(u[:, keep], v[:, keep])
        assert not np.isfinite(v[:, 1]).any() and not np.isfinite(v[:, 2]).any()
    for i, (u, v) in enumerate(zip(clean[3:], dirty[3:])):
        assert np.array_equal(u[keep], v[keep])
        if i < 3:  # mean, variance, scale_updates (bias_updates sums leaky's g, finite at a NaN output)
            assert not np.isfinite(v[[1, 2]]).any()
