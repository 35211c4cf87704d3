"""The engine's plan choices added for speed (csrc/driver.c, internal.h): the narrow fused tiles of a
training forward over many channels of tiny planes (the MLP case, 128x1024x1x1) and the three phases
in one parallel region. Each shape: the path it takes, the float64 reference, and the same bits on
1, 2 and 3 threads."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import assert_close, make_data

from darknet_bn import kernels as K
from darknet_bn import make_batchnorm_layer
from darknet_bn._capi import ffi, lib


def plan(shape, bytes_per_value):
    b, c, h, w = shape
    info = ffi.new("dbn_plan_info *")
    lib.dbn_describe_plan(b, c, h * w, bytes_per_value, info)
    return info


# (shape, whether its training forward takes the narrow fused tiles)
SHAPES = [
    ((128, 1024, 1, 1), True),  # the MLP case: one tile of 1024 channels -> 8 tiles of 128, fused
    ((2048, 1024, 1, 1), True),  # 1 MiB per task: still narrow tiles
    ((4096, 1024, 1, 1), False),  # 2 MiB per task: three phases (row chunks)
    ((600, 160, 2, 2), False),  # 8 tiles of 20 channels x 4 values: rows too short, three phases
    ((300, 256, 2, 2), True),  # spatial 4: tile 256 -> 8 tiles of 32 channels (128 values a row)
]


def test_narrow_tiles_are_taken_where_expected():
    for shape, narrow in SHAPES:
        fwd, bwd = plan(shape, 4), plan(shape, 8)
        if narrow:
            assert fwd.fused and fwd.ntiles == 8 and fwd.tile * 8 >= shape[1], shape
        else:
            assert not (fwd.fused and fwd.ntiles == 8 and fwd.nchunks == 1 and fwd.tile < shape[1]), shape
        assert not bwd.fused, shape  # the backward (two inputs) keeps three phases on these shapes


def _params(c):
    return (
        np.linspace(0.5, 1.5, c).astype(np.float32),
        np.linspace(-1, 1, c).astype(np.float32),
        np.linspace(-0.5, 0.5, c).astype(np.float32),
        np.linspace(0.5, 2, c).astype(np.float32),
    )


@pytest.mark.parametrize("shape", [s for s, _ in SHAPES])
def test_training_passes_against_float64_and_across_threads(shape):
    b, c, h, w = shape
    x = make_data(shape, 7)
    dy = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    sc, bi, rm, rv = _params(c)
    fwd = ref.forward(x, sc, bi, rm, rv, shape, "torch", True)
    runs = []
    try:
        for n in (1, 2, 3):
            K.set_num_threads(n)
            layer = make_batchnorm_layer(b, w, h, c, "torch")
            layer.scales[:], layer.biases[:], layer.rolling_mean[:], layer.rolling_variance[:] = sc, bi, rm, rv
            out = layer.forward(x, train=True).copy()
            stats = [layer.mean.copy(), layer.variance.copy(), layer.rolling_mean.copy(), layer.rolling_variance.copy()]
            layer.delta[:] = dy
            dx = layer.backward(np.empty_like(x))
            runs.append([out, *stats, dx, layer.scale_updates.copy(), layer.bias_updates.copy()])
    finally:
        K.set_num_threads(None)
    out, mean, var, rmean, rvar, dx, su, bu = runs[0]
    assert_close(out, fwd["output"], name="output")
    for k, v in (("mean", mean), ("variance", var), ("rolling_mean", rmean), ("rolling_variance", rvar)):
        assert_close(v, fwd[k], name=k)
    g = ref.backward(x, dy, sc, mean, var, shape, "torch", True)
    sigma = np.sqrt(fwd["variance"] + 1e-5)
    assert_close(dx, g["delta"], scale=np.abs(dy).max() * (sc / sigma).max(), name="input delta")
    n_per = np.abs(dy).sum(axis=(0, 2, 3)).max()
    assert_close(bu, g["bias_updates"], scale=n_per, name="bias_updates")
    for other in runs[1:]:
        for a, e in zip(runs[0], other):
            assert np.array_equal(a, e)
