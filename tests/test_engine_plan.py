"""The engine's plan choices added for speed (csrc/driver.c, internal.h): the narrow fused tiles of a
training forward (and of the backward, where a task's data fits) over many channels of tiny planes (the
MLP case, 128x1024x1x1) and the three phases in one parallel region. Each shape: the path it takes, the
float64 reference, and the same bits on 1, 2 and 3 threads."""

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
    ((128, 1024, 1, 1), True),  # the MLP case: one tile of 1024 channels -> 8 tiles of 128 (4 KiB rows), fused
    ((2048, 1024, 1, 1), True),  # 1 MiB per task: still narrow tiles (the backward's 1 MiB: three phases)
    ((4096, 1024, 1, 1), False),  # three phases (row chunks), the map as the reduction's grid tasks
    ((600, 160, 2, 2), False),  # 8 tiles of 20 channels x 4 values: rows too short, three phases
    ((300, 256, 2, 2), True),  # spatial 4: tile 256 -> 8 tiles of 32 channels (128 values a row: 4 KiB rows)
    ((200, 344, 3, 1), True),  # spatial 3: 21 channels a tile, 63 values (a masked last vector)
    ((160, 48, 5, 5), True),  # spatial 25 (> 16): the tiles of 1/8 of the channels (6 x 25 values)
    ((128, 1032, 1, 1), True),  # rows of 4128 bytes (not a multiple of 4 KiB): 17 tiles of 64 channels
    ((8192, 16, 1, 1), False),  # channels_last with few channels: three phases, rows of one AVX-512 vector
]

NARROW_ROW = 64  # internal.h DBN_NARROW_ROW: values a row of a narrow tile over planes of <= 16 values
NARROW_ROW_4K = 128  # internal.h DBN_NARROW_ROW_4K: the same where c * spatial floats are a multiple of 4 KiB
NARROW_TASK_MAX = 1 << 20  # internal.h DBN_NARROW_TASK_MAX: bytes a narrow tile's task reads at most


def test_narrow_tiles_are_taken_where_expected():
    for shape, narrow in SHAPES:
        b, c, h, w = shape
        s = h * w
        fwd, bwd = plan(shape, 4), plan(shape, 8)
        if narrow:
            assert fwd.fused and fwd.nchunks == 1 and fwd.ntiles >= 8 and fwd.tile * fwd.ntiles >= c, shape
            if s <= 16:
                row = NARROW_ROW_4K if c * s * 4 % 4096 == 0 else NARROW_ROW
                assert fwd.tile * s <= row and (fwd.tile + 1) * s > row, shape
            else:
                assert fwd.ntiles == 8, shape
        else:
            assert not (fwd.fused and fwd.nchunks == 1 and fwd.tile < c), shape
        # the backward (two inputs, 8 bytes a value) takes the same narrow tiles while a task's data stays
        # within internal.h's DBN_NARROW_TASK_MAX, else three phases
        if narrow and -(-c // 8) * b * s * 8 <= NARROW_TASK_MAX:
            assert bwd.fused and bwd.nchunks == 1 and (bwd.tile, bwd.ntiles) == (fwd.tile, fwd.ntiles), shape
        else:
            assert not bwd.fused, shape


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


# The rows path with an activation: the narrow fused tiles (registers), three-phase maps as grid tasks
# (rows of one vector: channels_last with few channels; rows of many vectors), and both with non-temporal
# stores (outputs beyond internal.h's DBN_NT_* sizes).
ROWS = [
    (128, 1024, 1, 1),  # narrow fused tiles of 128 channels
    (300, 256, 2, 2),  # narrow fused tiles of 32 channels x 4 values
    (8192, 16, 1, 1),  # three phases, grid map of one-vector rows
    (4096, 1024, 1, 1),  # three phases, rows of 64 vectors: the flat map
]
ROWS_STREAMED = [
    (270000, 16, 1, 1),  # 17 MB: the three-phase grid map of one-vector rows streams
    (17000, 256, 1, 1),  # 17 MB: rows of 16 vectors stream
]


def test_rows_shapes_take_their_paths():
    for shape in ROWS[2:] + ROWS_STREAMED:
        fwd, bwd = plan(shape, 4), plan(shape, 8)
        assert not fwd.fused and not fwd.reduce_flat and fwd.tile > 1, shape
        assert not bwd.fused and not bwd.reduce_flat and bwd.tile > 1, shape
        assert fwd.nchunks > 1 and fwd.ntiles == 1, shape  # row chunks of one tile of every channel


@pytest.mark.parametrize("name", ["leaky", "swish"])
@pytest.mark.parametrize("shape", ROWS + ROWS_STREAMED)
def test_rows_with_activation_against_float64(shape, name, isa):
    from test_train_activation import _assert_fused_matches_reference

    _assert_fused_matches_reference(shape, name, isa)


@pytest.mark.parametrize("name", ["leaky", "swish", "mish"])
@pytest.mark.parametrize("shape", ROWS + ROWS_STREAMED[:1])
def test_rows_with_activation_same_bits_on_1_and_2_threads(shape, name):
    from test_train_activation import _assert_same_bits_on_1_and_2_threads

    _assert_same_bits_on_1_and_2_threads(shape, name, make_data(shape, 5), make_data(shape, 6), "bias_updates")


@pytest.mark.parametrize("name", ["leaky", "logistic"])
@pytest.mark.parametrize("shape", ROWS[:3])
def test_rows_fused_backward_is_gradient_array_then_plain(shape, name, isa):
    from test_train_activation import _assert_fused_backward_is_gradient_array_then_plain

    _assert_fused_backward_is_gradient_array_then_plain(shape, name)
