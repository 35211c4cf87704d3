"""Batch renormalization (issue: BN with small or non-i.i.d. minibatches): make_batchnorm_layer(...,
renorm=True, rmax, dmax) against the float64 reference of the paper's equations, bit for bit against
plain BN at rmax = 1, dmax = 0, and its backward against finite differences with r, d held constant."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import SHAPES, assert_close, make_data

from darknet_bn import make_batchnorm_layer

FLAVOR_NAMES = ["pjreddie", "alexeyab", "torch"]
FIELDS = ("output", "mean", "variance", "rolling_mean", "rolling_variance", "x_norm")


def _pair(shape, flavor, seed=0, **renorm):
    """A plain layer and a renorm layer with the same parameters and rolling statistics."""
    b, c, h, w = shape
    rng = np.random.default_rng(seed)
    layers = [make_batchnorm_layer(b, w, h, c, flavor), make_batchnorm_layer(b, w, h, c, flavor, renorm=True, **renorm)]
    vals = dict(
        scales=rng.uniform(0.5, 1.5, c),
        biases=rng.standard_normal(c),
        rolling_mean=rng.standard_normal(c),
        rolling_variance=rng.uniform(0.5, 2, c),
    )
    for layer in layers:
        for k, v in vals.items():
            getattr(layer, k)[:] = v
    return layers


@pytest.mark.parametrize("shape", SHAPES[:6] + [(4, 9, 200, 201), (64, 512, 7, 7), (512, 64, 1, 1)])
@pytest.mark.parametrize("flavor", FLAVOR_NAMES)
@pytest.mark.parametrize("activation", [None, "leaky", "swish"])
def test_rmax_1_dmax_0_is_plain_bn_bit_for_bit(shape, flavor, activation):
    """A renorm layer whose bounds clip r to 1 and d to 0 is plain BN, bit for bit, with or without an
    activation fused: the renorm passes compute their per-channel coefficients in the scalar
    forward_channel / backward_channel, the plain ones in their vectorized twins (csrc/fused.c), so this
    also checks that the twins compute the same expressions."""
    if shape[0] * shape[2] * shape[3] < 2:
        return
    plain, rn = _pair(shape, flavor, rmax=1.0, dmax=0.0)
    x = make_data(shape, 1)
    dy = make_data(shape, 2)
    for step in range(2):  # twice: the second step runs with rolling statistics the first one updated
        for layer in (plain, rn):
            layer.forward(x, train=True, activation=activation)
            layer.delta[:] = dy
            layer.backward(layer.delta)
            layer.update(0.1, 0.9, 0.0, shape[0])
        for k in FIELDS + (
            "delta",
            "scales",
            "biases",
            "scale_updates",
            "bias_updates",
            "mean_delta",
            "variance_delta",
        ):
            assert np.array_equal(getattr(plain, k), getattr(rn, k)), (step, k)
        assert (rn.r == 1).all() and (rn.d == 0).all()


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] * s[2] * s[3] >= 4] + [(4, 9, 200, 201)])
@pytest.mark.parametrize("flavor", FLAVOR_NAMES)
def test_unclipped_renorm_matches_the_papers_equations(shape, flavor):
    """Rolling statistics near the batch's keep r and d inside wide bounds: the layer follows the
    float64 reference of the paper, forward and backward."""
    b, c, h, w = shape
    x = make_data(shape, 3)
    x64 = x.astype(np.float64)
    rng = np.random.default_rng(4)
    layer = make_batchnorm_layer(b, w, h, c, flavor, renorm=True, rmax=10.0, dmax=10.0)
    sc, bi = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    rm = x64.mean(axis=(0, 2, 3)) + rng.uniform(-0.5, 0.5, c)
    rv = x64.var(axis=(0, 2, 3), ddof=1) * rng.uniform(0.5, 2, c)
    layer.scales[:], layer.biases[:], layer.rolling_mean[:], layer.rolling_variance[:] = sc, bi, rm, rv
    e = ref.forward_renorm(
        x, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, flavor, 10.0, 10.0
    )
    assert ((e["r"] > 0.1) & (e["r"] < 10)).all() and (np.abs(e["d"]) < 10).all()  # inside the bounds
    layer.forward(x)
    for k in FIELDS:
        assert_close(getattr(layer, k), e[k], name=k)
    assert_close(layer.r, e["r"], name="r")
    assert_close(layer.d, e["d"], scale=max(1.0, np.abs(e["d"]).max()), name="d")
    dy = make_data(shape, 5)
    layer.delta[:] = dy
    nd = layer.backward()
    g = ref.backward_renorm(x, dy, layer.scales, layer.mean, layer.variance, layer.r, layer.d, shape, flavor)
    fl = ref.FLAVORS[flavor]
    sigma = ref.denominator(layer.variance, fl["eps"], fl["eps_in_sqrt"])
    assert_close(nd, g["delta"], scale=np.abs(dy).max() * (sc * layer.r / sigma).max(), name="input delta")
    sums = np.abs(dy).sum(axis=(0, 2, 3)).max()
    assert_close(layer.bias_updates, g["bias_updates"], scale=sums, name="bias_updates")
    assert_close(layer.scale_updates, g["scale_updates"], scale=sums * np.abs(e["x_norm"]).max(), name="scale_updates")
    assert_close(layer.mean_delta, g["mean_delta"], scale=np.abs(g["mean_delta"]).max() + sums, name="mean_delta")


@pytest.mark.parametrize("flavor", FLAVOR_NAMES)
def test_clipping_bounds_r_and_d(flavor):
    shape = (8, 4, 3, 3)
    x = make_data(shape, 6)
    layer = make_batchnorm_layer(8, 3, 3, 4, flavor, renorm=True, rmax=1.5, dmax=0.25)
    layer.rolling_mean[:] = [-10, 0, 10, 0]  # d clipped both ways (channels 0, 2) ...
    layer.rolling_variance[:] = [1e-4, 1e4, 1, 1]  # ... and r (channels 0, 1)
    e = ref.forward_renorm(
        x, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, flavor, 1.5, 0.25
    )
    layer.forward(x)
    assert_close(layer.r, e["r"], name="r")
    assert_close(layer.d, e["d"], scale=0.25, name="d")
    assert layer.r[0] == pytest.approx(1.5) and layer.r[1] == pytest.approx(1 / 1.5)
    assert layer.d[0] == pytest.approx(0.25) and layer.d[2] == pytest.approx(-0.25)
    assert_close(layer.output, e["output"], name="output")


def test_backward_treats_r_and_d_as_constants():
    """Finite differences of sum(g * y(x)) with r and d frozen at the forward's values equal the
    torch-flavor layer's input delta (the exact gradient form)."""
    shape = (3, 2, 2, 3)
    b, c, h, w = shape
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    layer = make_batchnorm_layer(b, w, h, c, "torch", renorm=True, rmax=3.0, dmax=5.0)
    layer.scales[:], layer.biases[:] = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    layer.rolling_mean[:], layer.rolling_variance[:] = [0.5, -0.3], [2.5, 0.7]
    sc, bi = layer.scales.astype(np.float64), layer.biases.astype(np.float64)
    layer.forward(x)
    r, d = layer.r.astype(np.float64), layer.d.astype(np.float64)
    assert (r != 1).all() and (d != 0).all()
    layer.delta[:] = g
    dx = layer.backward()

    def y_sum(x64):
        xt = x64.reshape(b, c, h * w)
        mu = xt.mean(axis=(0, 2), keepdims=True)
        sig = np.sqrt(xt.var(axis=(0, 2), keepdims=True) + 1e-5)
        xh = (xt - mu) / sig * r[None, :, None] + d[None, :, None]
        return float((g.reshape(b, c, h * w) * (xh * sc[None, :, None] + bi[None, :, None])).sum())

    x64 = x.astype(np.float64)
    fd = np.zeros_like(x64)
    eps = 1e-6
    for i in range(x64.size):
        e = np.zeros(x64.size)
        e[i] = eps
        fd.reshape(-1)[i] = (y_sum(x64 + e.reshape(shape)) - y_sum(x64 - e.reshape(shape))) / (2 * eps)
    assert_close(dx, fd, rtol=1e-5, scale=np.abs(g).max() * (sc * r).max(), name="dx")

    # and it is not the gradient through r and d: differentiating them too gives a different answer
    def y_sum_full(x64):
        xt = x64.reshape(b, c, h * w)
        mu = xt.mean(axis=(0, 2), keepdims=True)
        sig = np.sqrt(xt.var(axis=(0, 2), keepdims=True) + 1e-5)
        sigma = np.sqrt(np.array([2.5, 0.7]) + 1e-5)[None, :, None]
        rr = np.clip(sig / sigma, 1 / 3, 3)
        dd = np.clip((mu - np.array([0.5, -0.3])[None, :, None]) / sigma, -5, 5)
        return float((g.reshape(b, c, h * w) * (((xt - mu) / sig * rr + dd) * sc[None, :, None])).sum())

    full = np.array(
        [
            (y_sum_full(x64 + e) - y_sum_full(x64 - e)) / (2 * eps)
            for e in (np.eye(x64.size)[i].reshape(shape) * eps for i in range(x64.size))
        ]
    ).reshape(shape)
    assert np.abs(full - fd).max() > 1e-3


def test_inference_is_unchanged_by_renorm():
    shape = (4, 3, 5, 5)
    plain, rn = _pair(shape, "alexeyab", rmax=2.0, dmax=1.0)
    x = make_data(shape, 9)
    assert np.array_equal(plain.forward(x, train=False), rn.forward(x, train=False))
    plain.delta[:] = 1
    rn.delta[:] = 1
    assert np.array_equal(plain.backward(), rn.backward())


def test_rmax_dmax_settable_and_checked():
    layer = make_batchnorm_layer(4, 3, 3, 2, "torch", renorm=True)
    assert layer.renorm and (layer.rmax, layer.dmax) == (3.0, 5.0)
    layer.rmax, layer.dmax = 1.0, 0.0
    assert (layer.rmax, layer.dmax) == (1.0, 0.0)
    with pytest.raises(ValueError, match="rmax"):
        layer.rmax = 0.5
    with pytest.raises(ValueError, match="dmax"):
        layer.dmax = -1
    with pytest.raises(ValueError, match="rmax"):
        layer.rmax = float("inf")
    with pytest.raises(TypeError):
        layer.dmax = "1"
    with pytest.raises(ValueError, match="rmax"):
        make_batchnorm_layer(4, 3, 3, 2, renorm=True, rmax=0.9)
    with pytest.raises(TypeError, match="renorm"):
        make_batchnorm_layer(4, 3, 3, 2, renorm="yes")
    plain = make_batchnorm_layer(4, 3, 3, 2)
    assert not plain.renorm and plain.rmax == 1.0 and plain.dmax == 0.0
    assert (plain.r == 1).all() and (plain.d == 0).all()
    with pytest.raises(ValueError, match="without renorm"):
        plain.rmax = 2.0
