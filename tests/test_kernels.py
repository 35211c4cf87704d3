"""Darknet's named kernels (darknet_bn.kernels) against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import SHAPES, assert_close, make_data
from hypothesis import given, settings
from hypothesis import strategies as st

from darknet_bn import kernels as K

FLAVOR_NAMES = ["pjreddie", "alexeyab", "torch"]


def _inputs(shape, seed=0):
    b, c, h, w = shape
    rng = np.random.default_rng(seed)
    x = make_data(shape, seed)
    delta = rng.standard_normal(shape).astype(np.float32)
    mean = x.astype(np.float64).mean(axis=(0, 2, 3)).astype(np.float32)
    var = rng.uniform(0.2, 4.0, c).astype(np.float32)

    def per():
        return rng.standard_normal(c).astype(np.float32)

    return x, delta, mean, var, per


def check_all_kernels(shape, flavor="pjreddie", seed=0):
    b, c, h, w = shape
    s = h * w
    x, delta, mean_in, var, per = _inputs(shape, seed)
    fl = ref.FLAVORS[flavor]

    mean = np.full(c, np.nan, np.float32)
    K.mean_cpu(x, b, c, s, mean)
    assert_close(mean, ref.mean_cpu(x, b, c, s), scale=np.abs(x).max(), name="mean_cpu")

    variance = np.full(c, np.nan, np.float32)
    K.variance_cpu(x, mean_in, b, c, s, variance)
    if b * s > 1:
        assert_close(variance, ref.variance_cpu(x, mean_in, b, c, s), name="variance_cpu")
    else:
        assert np.isnan(variance).all()

    xn = x.copy()
    K.normalize_cpu(xn, mean_in, var, b, c, s, flavor=flavor)
    assert_close(xn, ref.normalize_cpu(x, mean_in, var, b, c, s, fl["eps"], fl["eps_in_sqrt"]), name="normalize_cpu")

    sc = per()
    o = x.copy()
    K.scale_bias(o, sc, b, c, s)
    assert_close(o, ref.scale_bias(x, sc, b, c, s), rtol=1e-7, name="scale_bias")  # one float multiply: exact

    bi = per()
    o = x.copy()
    K.add_bias(o, bi, b, c, s)
    assert_close(o, ref.add_bias(x, bi, b, c, s), rtol=2e-7, name="add_bias")  # one float add: exact

    start = per()
    bu = start.copy()
    K.backward_bias(bu, delta, b, c, s)
    expect = ref.backward_bias(start, delta, b, c, s)
    assert_close(bu, expect, scale=np.abs(delta).sum(axis=(0, 2, 3)).max() + np.abs(start).max(), name="backward_bias")

    su = start.copy()
    K.backward_scale_cpu(xn, delta, b, c, s, su)
    expect = ref.backward_scale_cpu(xn, delta, b, c, s, start)
    assert_close(
        su, expect, scale=np.abs(xn * delta).sum(axis=(0, 2, 3)).max() + np.abs(start).max(), name="backward_scale_cpu"
    )

    md = np.full(c, np.nan, np.float32)
    K.mean_delta_cpu(delta, var, b, c, s, md)
    assert_close(
        md,
        ref.mean_delta_cpu(delta, var, b, c, s),
        scale=(np.abs(delta).sum(axis=(0, 2, 3)) / np.sqrt(var)).max(),
        name="mean_delta_cpu",
    )

    vd = np.full(c, np.nan, np.float32)
    K.variance_delta_cpu(x, delta, mean_in, var, b, c, s, vd)
    expect = ref.variance_delta_cpu(x, delta, mean_in, var, b, c, s)
    sc_vd = (np.abs(delta * (x - mean_in[None, :, None, None])).sum(axis=(0, 2, 3)) * var**-1.5).max()
    assert_close(vd, expect, scale=sc_vd, name="variance_delta_cpu")

    d = delta.copy()
    K.normalize_delta_cpu(x, mean_in, var, md, vd, b, c, s, d, flavor=flavor)
    # the scale of the result is that of its three terms (they may cancel)
    n = b * s
    terms = (
        np.abs(delta).max() / np.sqrt(var).min()
        + np.abs(vd).max() * 2 * np.abs(x - mean_in[None, :, None, None]).max() / n
        + np.abs(md).max() / n
    )
    assert_close(
        d,
        ref.normalize_delta_cpu(x, mean_in, var, md, vd, b, c, s, delta, fl["bwd_eps"], fl["bwd_eps_in_sqrt"]),
        scale=terms,
        name="normalize_delta_cpu",
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flavor", FLAVOR_NAMES)
def test_kernels_match_reference(shape, flavor):
    check_all_kernels(shape, flavor)


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 6),
    c=st.integers(1, 9),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    flavor=st.sampled_from(FLAVOR_NAMES),
    seed=st.integers(0, 2**31),
)
def test_kernels_random_shapes(b, c, h, w, flavor, seed):
    check_all_kernels((b, c, h, w), flavor, seed)


def test_normalize_variants_differ_as_darknet_forks():
    """pjreddie divides by sqrt(var) + 1e-6, AlexeyAB by sqrt(var + 1e-5): visible on a tiny variance."""
    x = np.array([0.0, 1e-3, 2e-3, 3e-3], np.float32)
    mean = np.array([1.5e-3], np.float32)
    var = np.array([x.astype(np.float64).var(ddof=1)], np.float32)
    a, b = x.copy(), x.copy()
    K.normalize_cpu(a, mean, var, 1, 1, 4, flavor="pjreddie")
    K.normalize_cpu(b, mean, var, 1, 1, 4, flavor="alexeyab")
    assert_close(a, (x - 1.5e-3) / (np.sqrt(var[0].astype(np.float64)) + ref.F32_1e6), name="pjreddie")
    assert_close(b, (x - 1.5e-3) / np.sqrt(var[0].astype(np.float64) + ref.F32_1e5), name="alexeyab")
    assert abs(a[0] / b[0] - 1) > 0.1


def test_large_mean_accuracy():
    """One channel of 2**22 values ~ 1000 + N(0, 1): mean and variance within 1e-6 relative of float64,
    where Darknet's float accumulation is off by about 2e-2 (mean) and a factor of ~400 (variance)."""
    n = 2**22
    x = (1000.0 + np.random.default_rng(7).standard_normal(n)).astype(np.float32)
    x64 = x.astype(np.float64)
    m64 = x64.mean()
    v64 = x64.var(ddof=1)

    mean = np.zeros(1, np.float32)
    K.mean_cpu(x, 1, 1, n, mean)
    assert abs(mean[0] - m64) / m64 < 1e-6

    variance = np.zeros(1, np.float32)
    K.variance_cpu(x, mean, 1, 1, n, variance)
    assert abs(variance[0] - v64) / v64 < 1e-6

    # The premise: a sequential float32 sum (what Darknet's loop does) is far off on the same data.
    darknet_sum = np.cumsum(x, dtype=np.float32)[-1]
    assert abs(darknet_sum / n - m64) / m64 > 1e-3


def test_zero_sizes_are_no_ops_or_nan():
    x = np.zeros(0, np.float32)
    mean = np.full(3, 7, np.float32)
    K.mean_cpu(x, 0, 3, 5, mean)  # no values: the mean is undefined
    assert np.isnan(mean).all()
    K.scale_bias(x, np.ones(3, np.float32), 0, 3, 5)
    K.add_bias(x, np.ones(0, np.float32), 4, 0, 5)
    bu = np.ones(3, np.float32)
    K.backward_bias(bu, x, 3, 3, 0)  # nothing to add
    assert (bu == 1).all()


def test_outputs_written_in_place_no_copy():
    x, delta, mean, var, per = _inputs((2, 3, 4, 5))
    view = x.reshape(2, 3, 20)  # any shape of the right size, the caller's memory
    K.normalize_cpu(view, mean, var, 2, 3, 20)
    assert np.shares_memory(view, x) and not np.allclose(x, make_data((2, 3, 4, 5), 0))


# ------------------------------------------------------------------------------------------------
# Bad input: a clear TypeError/ValueError naming the argument, and nothing written.


def _good():
    x = make_data((2, 3, 4, 5), 1)
    return dict(x=x, mean=np.zeros(3, np.float32), variance=np.ones(3, np.float32))


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        ([1.0] * 120, TypeError, "numpy.ndarray"),
        (np.zeros(120, np.float64), TypeError, "float32"),
        (np.zeros(120, ">f4"), TypeError, "float32"),
        (np.zeros(119, np.float32), ValueError, "120"),
        (np.zeros((120, 2), np.float32)[:, 0], ValueError, "C-contiguous"),
        ("abc", TypeError, "ndarray"),
        (None, TypeError, "ndarray"),
    ],
)
def test_bad_tensor_argument(bad, exc, words):
    g = _good()
    before = g["mean"].copy()
    with pytest.raises(exc, match=words) as e:
        K.mean_cpu(bad, 2, 3, 20, g["mean"])
    assert "x" in str(e.value)
    assert np.array_equal(g["mean"], before)


def test_read_only_output_rejected():
    g = _good()
    g["mean"].flags.writeable = False
    with pytest.raises(ValueError, match="mean.*read-only"):
        K.mean_cpu(g["x"], 2, 3, 20, g["mean"])
    ro = g["x"].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="x.*read-only"):
        K.normalize_cpu(ro, g["mean"], g["variance"], 2, 3, 20)


def test_read_only_inputs_accepted():
    g = _good()
    g["x"].flags.writeable = False
    K.mean_cpu(g["x"], 2, 3, 20, g["mean"])
    assert_close(g["mean"], ref.mean_cpu(g["x"], 2, 3, 20), name="mean")


@pytest.mark.parametrize(
    "sizes, exc, words",
    [
        ((-2, 3, 20), ValueError, "batch.*>= 0"),
        ((2, -3, 20), ValueError, "filters"),
        ((2, 3, 20.0), TypeError, "spatial.*int"),
        ((2, 3, "20"), TypeError, "spatial"),
        ((True, 3, 20), TypeError, "batch"),
        ((2, 3, 2**63), ValueError, "spatial"),
        ((2, 3, 19), ValueError, "x: expected 114"),
        ((2, 4, 15), ValueError, "mean: expected 4"),
    ],
)
def test_bad_sizes(sizes, exc, words):
    g = _good()
    with pytest.raises(exc, match=words):
        K.mean_cpu(g["x"], *sizes, g["mean"])


def test_numpy_integer_sizes_accepted():
    g = _good()
    K.mean_cpu(g["x"], np.int64(2), np.int32(3), np.uint8(20), g["mean"])
    assert_close(g["mean"], ref.mean_cpu(g["x"], 2, 3, 20), name="mean")


def test_output_overlapping_input_rejected():
    g = _good()
    x = g["x"]
    with pytest.raises(ValueError, match="mean: shares memory with x"):
        K.mean_cpu(x, 2, 3, 20, x.reshape(-1)[:3])
    with pytest.raises(ValueError, match="delta: shares memory"):
        K.normalize_delta_cpu(x, g["mean"], g["variance"], g["mean"], g["variance"], 2, 3, 20, x.reshape(-1))


def test_bad_flavor():
    g = _good()
    with pytest.raises(ValueError, match="flavor"):
        K.normalize_cpu(g["x"], g["mean"], g["variance"], 2, 3, 20, flavor="caffe")
    with pytest.raises(TypeError, match="flavor"):
        K.normalize_cpu(g["x"], g["mean"], g["variance"], 2, 3, 20, flavor=3)


@pytest.mark.parametrize(
    "fn, args",
    [
        ("variance_cpu", lambda g: (g["x"], g["mean"], 2, 3, 20, np.zeros(2, np.float32))),
        ("normalize_cpu", lambda g: (g["x"], g["mean"], np.ones(4, np.float32), 2, 3, 20)),
        ("scale_bias", lambda g: (g["x"], np.ones(3, np.float64), 2, 3, 20)),
        ("add_bias", lambda g: (g["x"], np.ones(3, np.float32), 2, 3, 21)),
        ("backward_bias", lambda g: (np.ones(3, np.float32), g["x"][:1], 2, 3, 20)),
        ("backward_scale_cpu", lambda g: (g["x"], g["x"], 2, 3, 20, [0.0, 0.0, 0.0])),
        ("mean_delta_cpu", lambda g: (g["x"], g["variance"], 2, 3, 20, np.zeros(3, np.int32))),
        ("variance_delta_cpu", lambda g: (g["x"], g["x"], g["mean"], g["variance"], 2, 3, 20, None)),
        (
            "normalize_delta_cpu",
            lambda g: (
                g["x"],
                g["mean"],
                g["variance"],
                g["mean"],
                g["variance"],
                2,
                3,
                20,
                np.zeros((2, 3, 20), np.float32).transpose(0, 2, 1),
            ),
        ),
    ],
)
def test_every_kernel_checks_its_arguments(fn, args):
    g = _good()
    x_before = g["x"].copy()
    with pytest.raises((TypeError, ValueError)):
        getattr(K, fn)(*args(g))
    assert np.array_equal(g["x"], x_before)


def test_threads_setting():
    n0 = K.get_num_threads()
    assert n0 >= 1
    try:
        K.set_num_threads(1)
        assert K.get_num_threads() == 1
        check_all_kernels((3, 4, 5, 6))
        with pytest.raises(ValueError):
            K.set_num_threads(-1)
        with pytest.raises(TypeError):
            K.set_num_threads(1.5)
    finally:
        K.set_num_threads(None)
    assert K.get_num_threads() == n0


# ------------------------------------------------------------------------------------------------
# Misaligned memory (issue 12): a float* that is not 4-byte aligned is undefined in C, and the
# engine's store-alignment peel loops never met an aligned address: the process crashed.


def test_issue_12_misaligned_array_raises():
    """The issue's snippet, exactly: a ValueError naming the argument (add_bias calls it ``output``,
    Darknet's name) and its address offset, instead of SIGSEGV; nothing written."""
    x = np.frombuffer(bytearray(4 * 4000 + 8), np.float32, count=4000, offset=1)  # x.flags.aligned is False
    with pytest.raises(
        ValueError,
        match=r"^output: expected an aligned float32 array \(address % 4 == 0\), "
        r"got address offset 1",
    ):
        K.add_bias(x, np.ones(4, np.float32), 1, 4, 1000)  # SIGSEGV
    assert not x.any()


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_misaligned_input_named_x(offset):
    """The same array as the argument named x (mean_cpu), at each offset: ValueError naming x."""
    raw = bytearray(4 * 4000 + 8)
    x = np.frombuffer(raw, np.float32, count=4000, offset=offset)
    mean = np.full(4, 7, np.float32)
    with pytest.raises(
        ValueError,
        match=rf"^x: expected an aligned float32 array \(address % 4 == 0\), "
        rf"got address offset {offset}",
    ):
        K.mean_cpu(x, 1, 4, 1000, mean)
    assert (mean == 7).all() and not any(raw)


def test_aligned_to_4_but_not_to_a_vector_is_fine():
    """4-byte aligned but 4..60 bytes off every vector boundary: accepted, right (the peel loops)."""
    raw = np.zeros(4000 + 32, np.float32)
    for k in range(1, 16):
        x = raw[k : k + 4000]
        x[:] = np.arange(4000, dtype=np.float32)
        K.add_bias(x, np.arange(4, dtype=np.float32), 1, 4, 1000)
        assert np.array_equal(x, np.arange(4000) + np.repeat(np.arange(4), 1000))
