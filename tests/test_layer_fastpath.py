"""The wrapper's shortcuts for the common call (layer.py): the last forward's input passed again skips
its overlap checks, ``backward(layer.delta)`` skips the buffer checks. Each shortcut must still refuse
what the full checks refuse: an array changed in place between calls, a read-only delta."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import make_data

from darknet_bn import make_batchnorm_layer


def _layer(shape=(8, 3, 2, 2)):
    b, c, h, w = shape
    return make_batchnorm_layer(b, w, h, c, "torch")


def test_same_input_again_gives_the_same_results_as_a_fresh_array():
    x = make_data((8, 3, 2, 2), 0)
    a, b = _layer(), _layer()
    for _ in range(3):  # the same object each step (a shortcut from the second step on)
        out_a = a.forward(x, train=True).copy()
        out_b = b.forward(x.copy(), train=True).copy()
        assert np.array_equal(out_a, out_b)
        assert np.array_equal(a.mean, b.mean)


def test_same_input_changed_in_place_is_checked_again():
    layer = _layer()
    x = make_data((8, 3, 2, 2), 1)
    layer.forward(x, train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy deprecates setting dtype/strides
        y = x.view()
        layer.forward(y, train=True)
        y.dtype = np.int32  # same memory, now int32: must raise, not be read as float
        with pytest.raises(TypeError, match="float32"):
            layer.forward(y, train=True)
    z = x.reshape(-1)
    layer.forward(z, train=True)
    z.shape = (8, 12)  # the same values in another shape: still fine, and shaped as passed
    assert layer.forward(z, train=True).shape == (8, 12)


def test_same_input_after_inference_in_place_is_not_taken_as_clean():
    layer = _layer()
    x = make_data((8, 3, 2, 2), 2)
    layer.forward(x, train=True)
    layer.output[...] = x
    layer.forward(layer.output, train=False)  # in place: x is lost
    with pytest.raises(ValueError, match="in place"):
        layer.backward()
    # the output again, now for training: must be copied (the output overwrites it), not used in place
    expected = _layer().forward(layer.output.copy(), train=True).copy()
    got = layer.forward(layer.output, train=True)
    assert np.array_equal(got, expected)


def test_backward_on_own_delta_refuses_read_only():
    layer = _layer()
    x = make_data((8, 3, 2, 2), 3)
    layer.forward(x, train=True)
    layer.delta[...] = 1.0
    layer.backward(layer.delta)
    layer.delta.flags.writeable = False
    try:
        with pytest.raises(ValueError, match="read-only"):
            layer.backward(layer.delta)
    finally:
        layer.delta.flags.writeable = True


def test_backward_on_own_delta_equals_backward_into_another_array():
    x = make_data((8, 3, 2, 2), 4)
    g = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    a, b = _layer(), _layer()
    a.forward(x, train=True)
    b.forward(x, train=True)
    a.delta[...] = g
    b.delta[...] = g
    ra = a.backward(a.delta)
    rb = b.backward(np.empty_like(x))
    assert ra is a.delta
    assert np.array_equal(ra, rb)
    assert np.array_equal(a.scale_updates, b.scale_updates)


def test_same_input_restrided_is_read_in_its_new_layout():
    # the inlined call of forward() checks the layout of the last input again: after its strides change
    # (same memory, now not C-contiguous) it must be read as what it shows, i.e. copied, not read raw
    z = make_data((8, 3, 2, 2), 6).reshape(8, 12)
    layer = make_batchnorm_layer(8, 2, 2, 3, "torch")
    layer.forward(z, train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2.4 deprecates setting strides
        z.strides = (4, 32)  # z[i, j] is now the value at i + 8j: a column-major view of the same floats
    assert not z.flags.c_contiguous
    expected = make_batchnorm_layer(8, 2, 2, 3, "torch").forward(np.ascontiguousarray(z), train=True).copy()
    assert np.array_equal(layer.forward(z, train=True), expected)


def test_same_input_training_forward_still_needs_two_values_per_channel():
    layer = make_batchnorm_layer(1, 1, 1, 4, "torch")
    x = make_data((1, 4, 1, 1), 7)
    layer.forward(x, train=False)
    layer.forward(x, train=False)  # the inlined call for inference
    with pytest.raises(ValueError, match="batch\\*h\\*w >= 2"):
        layer.forward(x, train=True)


def test_same_input_with_numpy_bool_train_gives_the_same_results():
    x = make_data((8, 3, 2, 2), 8)
    a, b = _layer(), _layer()
    for _ in range(2):
        out_a = a.forward(x, train=np.True_, activation="leaky").copy()
        out_b = b.forward(x, train=True, activation="leaky").copy()
        assert np.array_equal(out_a, out_b)
    assert np.array_equal(a.forward(x, train=np.False_), b.forward(x, train=False))


def test_backward_on_own_delta_refuses_a_retyped_delta():
    layer = _layer()
    layer.forward(make_data((8, 3, 2, 2), 9), train=True)
    layer.delta[...] = 1.0
    layer.backward(layer.delta)
    d = layer.delta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy deprecates setting dtype
        d.dtype = np.int32
        try:
            with pytest.raises(TypeError, match="float32"):
                layer.backward(d)
        finally:
            d.dtype = np.float32


def test_backward_after_inlined_mode_switch_takes_that_modes_backward():
    # the inlined forward switches the backward's call struct (_c_bwd_now) with the mode: after an inference
    # forward of the same input the backward is the inference one (mean_delta 0, the rolling statistics'
    # gradient), after a training forward again the training one -- compared with fresh layers
    x = make_data((8, 3, 2, 2), 7)
    dy = make_data((8, 3, 2, 2), 8)
    layer = _layer()
    layer.forward(x, train=True)  # full path; the next forwards of x take the inlined one
    modes = [True]
    for train in (False, True, False):
        modes.append(train)
        ref = _layer()
        for m in modes:  # the same forwards (the rolling statistics), each on a new array: the full path
            ref.forward(x.copy(), train=m)
        layer.forward(x, train=train)
        layer.delta[...] = dy
        ref.delta[...] = dy
        got, want = layer.backward(layer.delta).copy(), ref.backward(ref.delta)
        assert np.array_equal(got, want), train
        assert np.array_equal(layer.mean_delta, ref.mean_delta), train
        if not train:
            assert not layer.mean_delta.any()


def test_none_input_raises_before_and_after_a_forward():
    # the inlined test compares the input with the last clean input (a sentinel when there is none):
    # None must never pass it
    layer = _layer()
    with pytest.raises(TypeError):
        layer.forward(None, train=True)
    layer.forward(make_data((8, 3, 2, 2), 9), train=True)
    with pytest.raises(TypeError):
        layer.forward(None, train=False)
