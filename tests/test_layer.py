"""darknet_bn.Layer against the float64 reference: forward, backward and update for every flavor."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import SHAPES, assert_close, make_data
from hypothesis import given, settings
from hypothesis import strategies as st

import darknet_bn
from darknet_bn import Flavor, make_batchnorm_layer, torch_flavor

FLAVOR_NAMES = ["pjreddie", "alexeyab", "torch"]


def _layer_with_params(shape, flavor, seed=0):
    b, c, h, w = shape
    rng = np.random.default_rng(seed + 99)
    layer = make_batchnorm_layer(b, w, h, c, flavor=flavor)
    layer.scales[:] = rng.uniform(0.5, 1.5, c)
    layer.biases[:] = rng.standard_normal(c)
    layer.rolling_mean[:] = rng.standard_normal(c)
    layer.rolling_variance[:] = rng.uniform(0.5, 2.0, c)
    layer.scale_updates[:] = rng.standard_normal(c)
    layer.bias_updates[:] = rng.standard_normal(c)
    return layer


def check_layer(shape, flavor, seed=0, train=True):
    b, c, h, w = shape
    layer = _layer_with_params(shape, flavor, seed)
    x = make_data(shape, seed)
    p0 = {
        k: getattr(layer, k).copy()
        for k in ("scales", "biases", "rolling_mean", "rolling_variance", "scale_updates", "bias_updates")
    }

    out = layer.forward(x, train=train)
    e = ref.forward(x, p0["scales"], p0["biases"], p0["rolling_mean"], p0["rolling_variance"], shape, flavor, train)
    assert out is layer.output
    assert_close(layer.output, e["output"], name="output")
    # x_norm is Darknet's normalize_cpu with the float32 statistics the layer stored (the backward below
    # too): against the exact mean, x - mean would carry the stored mean's rounding (2^-24 |mean|),
    # amplified by 1/sigma where a channel's values lie close together (N = 2: x - mean = +-d/2)
    fl = ref.FLAVORS[flavor]
    xn = ref.normalize_cpu(x, layer.mean, layer.variance, b, c, h * w, fl["eps"], fl["eps_in_sqrt"])
    assert_close(layer.x_norm, xn if train else e["x_norm"], name="x_norm")
    assert np.shares_memory(layer.x, x)
    if train:
        for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
            assert_close(getattr(layer, k), e[k], name=k)
        mean, var = e["mean"], e["variance"]
    else:
        mean, var = p0["rolling_mean"], p0["rolling_variance"]
        for k in ("rolling_mean", "rolling_variance"):
            assert np.array_equal(getattr(layer, k), p0[k]), k

    rng = np.random.default_rng(seed + 1)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer.delta[:] = dy
    net_delta = np.full(shape, np.nan, np.float32)
    r = layer.backward(net_delta)
    assert r is net_delta
    # The reference backward uses the float32 statistics the layer stored, as Darknet's does.
    g = ref.backward(
        x, dy, p0["scales"], layer.mean if train else mean, layer.variance if train else var, shape, flavor, train
    )
    # the input's delta is a sum of terms of size |dy| * scale / sigma, which may cancel (N = 2)
    sigma = ref.denominator(var, fl["eps"], fl["eps_in_sqrt"])
    assert_close(net_delta, g["delta"], scale=np.abs(dy).max() * (p0["scales"] / sigma).max(), name="net_delta")
    assert np.array_equal(layer.delta, net_delta)
    gs = np.abs(dy).sum(axis=(0, 2, 3))
    assert_close(layer.bias_updates, p0["bias_updates"] + g["bias_updates"], scale=gs.max() + 3, name="bias_updates")
    assert_close(
        layer.scale_updates,
        p0["scale_updates"] + g["scale_updates"],
        scale=np.abs(dy * e["x_norm"]).sum(axis=(0, 2, 3)).max() + 3,
        name="scale_updates",
    )
    if train:
        assert_close(
            layer.mean_delta,
            g["mean_delta"],
            scale=np.abs(g["mean_delta"]).max() + gs.max() / np.sqrt(var).min(),
            name="mean_delta",
        )
        assert_close(layer.variance_delta, g["variance_delta"], name="variance_delta")
    else:
        assert not layer.mean_delta.any() and not layer.variance_delta.any()

    su, bu = layer.scale_updates.copy(), layer.bias_updates.copy()
    sc, bi = layer.scales.copy(), layer.biases.copy()
    layer.update(0.01, 0.9, 0.0005, b)
    es, esu, eb, ebu = ref.update(sc, su, bi, bu, 0.01, 0.9, b)
    assert_close(layer.scales, es, rtol=1e-6, name="scales")
    assert_close(layer.scale_updates, esu, rtol=1e-6, name="scale_updates after update")
    assert_close(layer.biases, eb, rtol=1e-6, name="biases")
    assert_close(layer.bias_updates, ebu, rtol=1e-6, name="bias_updates after update")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flavor", FLAVOR_NAMES)
@pytest.mark.parametrize("train", [True, False])
def test_layer_matches_reference(shape, flavor, train):
    check_layer(shape, flavor, train=train)


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 6),
    c=st.integers(1, 9),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    flavor=st.sampled_from(FLAVOR_NAMES),
    train=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_layer_random_shapes(b, c, h, w, flavor, train, seed):
    if train and b * h * w < 2:
        return
    check_layer((b, c, h, w), flavor, seed, train)


def test_new_layer_fields():
    layer = make_batchnorm_layer(2, 5, 3, 4)
    assert (layer.batch, layer.w, layer.h, layer.c) == (2, 5, 3, 4)
    assert (layer.out_w, layer.out_h, layer.out_c, layer.inputs, layer.outputs) == (5, 3, 4, 60, 60)
    assert layer.output.shape == layer.delta.shape == layer.x.shape == layer.x_norm.shape == (2, 4, 3, 5)
    for name in (
        "scales",
        "biases",
        "scale_updates",
        "bias_updates",
        "mean",
        "variance",
        "rolling_mean",
        "rolling_variance",
        "mean_delta",
        "variance_delta",
    ):
        a = getattr(layer, name)
        assert a.shape == (4,) and a.dtype == np.float32, name
        assert (a == (1 if name == "scales" else 0)).all(), name
    assert not layer.output.any() and not layer.delta.any()
    assert (make_batchnorm_layer(2, 5, 3, 4, "torch").rolling_variance == 1).all()
    assert layer.flavor.name == "pjreddie"
    assert "Layer(batch=2" in repr(layer)


def test_fields_are_the_layers_buffers():
    layer = make_batchnorm_layer(2, 3, 3, 2)
    assert layer.scales is layer.scales
    layer.scales[:] = 2.0
    layer.biases[:] = 0.5
    x = make_data((2, 2, 3, 3), 3)
    layer.forward(x)
    e = ref.forward(x, [2, 2], [0.5, 0.5], [0, 0], [0, 0], (2, 2, 3, 3), "pjreddie")
    assert_close(layer.output, e["output"], name="output")
    with pytest.raises(AttributeError):
        layer.scales = np.ones(2, np.float32)
    with pytest.raises(AttributeError):
        layer.batch = 3


def test_forward_accepts_any_shape_and_returns_it():
    layer = make_batchnorm_layer(8, 1, 1, 32)
    x = make_data((8, 32, 1, 1), 5).reshape(8, 32)
    y = layer.forward(x)
    assert y.shape == (8, 32) and np.shares_memory(y, layer.output)
    layer.delta[:] = 1
    assert layer.backward().shape == (8, 32)


def test_backward_in_place_on_delta():
    shape = (3, 4, 5, 6)
    a, b = _layer_with_params(shape, "pjreddie"), _layer_with_params(shape, "pjreddie")
    x = make_data(shape, 11)
    a.forward(x)
    b.forward(x)
    dy = make_data(shape, 12)
    a.delta[:] = dy
    b.delta[:] = dy
    r = a.backward(a.delta)
    assert r is a.delta
    expect = b.backward()
    assert np.array_equal(a.delta, expect)
    assert np.array_equal(a.scale_updates, b.scale_updates)


def test_training_forward_in_place_on_output_keeps_x():
    """Darknet's convolutional layers normalize l.output in place; feeding the layer its own output works."""
    shape = (2, 3, 4, 4)
    layer = _layer_with_params(shape, "alexeyab")
    x = make_data(shape, 21)
    layer.output[:] = x
    layer.forward(layer.output)
    e = ref.forward(
        x, *(np.asarray(v) for v in (layer.scales, layer.biases)), np.zeros(3), np.zeros(3), shape, "alexeyab"
    )
    assert_close(layer.output, e["output"], name="output")
    assert np.array_equal(layer.x, x)  # x was saved before the output overwrote it


def test_inference_forward_in_place_on_output():
    shape = (2, 3, 4, 4)
    layer = _layer_with_params(shape, "torch")
    x = make_data(shape, 22)
    layer.output[:] = x
    layer.forward(layer.output, train=False)
    e = ref.forward(x, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, "torch", False)
    assert_close(layer.output, e["output"], name="output")


def test_n_equal_one_training_raises_and_changes_nothing():
    layer = make_batchnorm_layer(1, 1, 1, 3)
    before = {k: getattr(layer, k).copy() for k in ("mean", "variance", "rolling_mean", "rolling_variance", "output")}
    x = np.ones((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="batch\\*h\\*w >= 2"):
        layer.forward(x)
    for k, v in before.items():
        assert np.array_equal(getattr(layer, k), v), k
    layer.forward(x, train=False)  # inference is defined


@pytest.mark.parametrize(
    "bad, exc",
    [
        (np.zeros((2, 3, 4, 4), np.float64), TypeError),
        (np.zeros(95, np.float32), ValueError),
        (np.zeros((2, 3, 4, 8), np.float32)[..., ::3], ValueError),  # strided, and 72 values, not 96
        (np.zeros(95, ">f4"), ValueError),  # byte-swapped: copyable, but 95 values
        ([0.0] * 96, TypeError),
        (None, TypeError),
    ],
)
def test_forward_bad_input(bad, exc):
    layer = make_batchnorm_layer(2, 4, 4, 3)
    before = layer.output.copy()
    with pytest.raises(exc, match="input"):
        layer.forward(bad)
    assert np.array_equal(layer.output, before)


def _misaligned(a, offset):
    """A copy of a at `offset` bytes past an aligned address (np.frombuffer over a bytearray)."""
    raw = np.frombuffer(bytearray(a.nbytes + 64), np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = np.frombuffer(raw.data, a.dtype, count=a.size, offset=start).reshape(a.shape)
    out[...] = a
    return out


def _read_only(a):
    a.flags.writeable = False
    return a


ODD_INPUTS = {  # each: a float32 array that C cannot take in place, and whether forward copies it
    "big_endian": lambda x: x.astype(">f4"),
    "fortran": lambda x: np.asfortranarray(x),
    "strided": lambda x: np.repeat(x.reshape(-1), 2)[::2].reshape(x.shape),
    "misaligned_1": lambda x: _misaligned(x, 1),
    "misaligned_2": lambda x: _misaligned(x, 2),
    "misaligned_3": lambda x: _misaligned(x, 3),
    "transposed": lambda x: np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
}


@pytest.mark.parametrize("how", list(ODD_INPUTS))
@pytest.mark.parametrize("train", [True, False])
def test_forward_copies_an_odd_float32_input_once(how, train):
    """A float32 input that is byte-swapped, misaligned or not C-contiguous is copied once into the
    layer (x is then that copy, aligned, native, C-contiguous): the same outputs and backward as the
    plain array, against the reference; the odd array itself is not changed."""
    shape = (3, 4, 5, 7)
    x = make_data(shape, 5)
    odd = ODD_INPUTS[how](x)
    assert np.array_equal(odd, x) and not (odd.dtype == np.float32 and odd.flags.c_contiguous and odd.flags.aligned)
    before = odd.tobytes()
    layer = _layer_with_params(shape, "alexeyab", 3)
    p0 = {k: getattr(layer, k).copy() for k in ("scales", "biases", "rolling_mean", "rolling_variance")}
    out = layer.forward(odd, train=train)
    assert out.shape == odd.shape and odd.tobytes() == before
    e = ref.forward(x, p0["scales"], p0["biases"], p0["rolling_mean"], p0["rolling_variance"], shape, "alexeyab", train)
    assert_close(layer.output, e["output"], name="output")
    assert not np.shares_memory(layer.x, odd)
    assert layer.x.dtype == np.float32 and layer.x.flags.c_contiguous and layer.x.flags.aligned
    assert np.array_equal(layer.x, x)
    dy = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    layer.delta[:] = dy
    got = layer.backward()
    g = ref.backward(
        x,
        dy,
        p0["scales"],
        layer.mean if train else p0["rolling_mean"],
        layer.variance if train else p0["rolling_variance"],
        shape,
        "alexeyab",
        train,
    )
    assert_close(got, g["delta"], rtol=1e-4, name="input delta")
    assert odd.tobytes() == before


def test_forward_odd_input_that_is_a_view_of_the_layers_buffers():
    """Non-contiguous views of output and delta are copied before C runs, so they are right (not a
    partial overlap); the copy never lands in the memory of the input itself."""
    shape = (2, 3, 4, 4)
    layer = _layer_with_params(shape, "pjreddie", 1)
    x = make_data(shape, 2)
    layer.output[:] = x
    p0 = {k: getattr(layer, k).copy() for k in ("scales", "biases", "rolling_mean", "rolling_variance")}
    view = layer.output.transpose(0, 1, 3, 2)  # 96 values of output, not C-contiguous
    want = ref.forward(
        view.copy(), p0["scales"], p0["biases"], p0["rolling_mean"], p0["rolling_variance"], shape, "pjreddie", True
    )
    xt = view.copy()
    layer.forward(view, train=True)
    assert_close(layer.output.reshape(-1), want["output"].reshape(-1), name="output")
    assert np.array_equal(layer.x.reshape(-1), xt.reshape(-1))
    # feeding the layer its own (copied) x in an odd form again: copied into the other buffer
    again = layer.x.transpose(0, 1, 3, 2)
    want2 = ref.forward(
        again.copy(), layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, shape, "pjreddie", False
    )
    expect_x = again.copy()
    layer.forward(again, train=False)
    assert np.array_equal(layer.x.reshape(-1), expect_x.reshape(-1))
    assert_close(layer.output.reshape(-1), want2["output"].reshape(-1), name="output again")


def test_forward_read_only_input_is_used_in_place():
    shape = (2, 3, 4, 4)
    layer = make_batchnorm_layer(2, 4, 4, 3)
    x = _read_only(make_data(shape, 3))
    layer.forward(x)
    assert np.shares_memory(layer.x, x)


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_backward_misaligned_or_swapped_net_delta_raises(offset):
    """net_delta is written: a misaligned, byte-swapped or Fortran-ordered one raises, naming it, and is
    never silently copied (the caller's array would not receive the result)."""
    layer = make_batchnorm_layer(2, 4, 4, 3)
    layer.forward(make_data((2, 3, 4, 4), 1))
    layer.delta[:] = 1.0
    before = (layer.delta.copy(), layer.scale_updates.copy(), layer.bias_updates.copy())
    nd = _misaligned(np.zeros((2, 3, 4, 4), np.float32), offset)
    with pytest.raises(
        ValueError,
        match=r"^net_delta: expected an aligned float32 array \(address % 4 == 0\), "
        rf"got address offset {offset}",
    ):
        layer.backward(nd)
    with pytest.raises(TypeError, match="^net_delta: .*byte-swapped"):
        layer.backward(np.zeros((2, 3, 4, 4), ">f4"))
    with pytest.raises(ValueError, match="^net_delta: expected a C-contiguous"):
        layer.backward(np.zeros((2, 3, 4, 4), np.float32, order="F"))
    for a, b in zip(before, (layer.delta, layer.scale_updates, layer.bias_updates)):
        assert np.array_equal(a, b)
    assert not nd.any()


def test_backward_errors():
    layer = make_batchnorm_layer(2, 4, 4, 3)
    with pytest.raises(ValueError, match="forward first"):
        layer.backward()
    x = make_data((2, 3, 4, 4), 1)
    layer.forward(x)
    with pytest.raises(TypeError, match="net_delta"):
        layer.backward(np.zeros(96, np.float64))
    with pytest.raises(ValueError, match="net_delta"):
        layer.backward(np.zeros(95, np.float32))
    ro = np.zeros(96, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        layer.backward(ro)
    with pytest.raises(ValueError, match="partially overlaps"):
        layer.backward(_shifted_view(layer.delta))
    with pytest.raises(ValueError, match="x"):
        layer.backward(x)


def _shifted_view(a):
    """A 96-element view of a's memory starting one element in (needs a larger base)."""
    base = a.base if a.base is not None else a
    flat = base.reshape(-1)
    start = (a.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // 4
    if start + 1 + a.size <= flat.size:
        return flat[start + 1 : start + 1 + a.size]
    return flat[start - 1 : start - 1 + a.size]


def test_update_arguments():
    layer = make_batchnorm_layer(2, 4, 4, 3)
    with pytest.raises(ValueError, match="batch"):
        layer.update(0.1, 0.9, 0.0, 0)
    with pytest.raises(TypeError, match="learning_rate"):
        layer.update("0.1", 0.9, 0.0, 2)
    with pytest.raises(ValueError, match="momentum"):
        layer.update(0.1, float("nan"), 0.0, 2)
    with pytest.raises(TypeError, match="batch"):
        layer.update(0.1, 0.9, 0.0, 2.0)


@pytest.mark.parametrize(
    "args, exc",
    [
        ((0, 4, 4, 3), ValueError),
        ((2, 4, -4, 3), ValueError),
        ((2, 4, 4, 3.0), TypeError),
        ((2, 4, 4, None), TypeError),
    ],
)
def test_make_layer_bad_arguments(args, exc):
    with pytest.raises(exc):
        make_batchnorm_layer(*args)
    with pytest.raises(ValueError, match="flavor"):
        make_batchnorm_layer(2, 4, 4, 3, flavor="caffe")


def test_custom_flavor_and_torch_eps():
    fl = torch_flavor(eps=1e-3, momentum=0.01)
    assert fl.exact_gradient and not darknet_bn.FLAVORS["pjreddie"].exact_gradient
    layer = make_batchnorm_layer(4, 3, 3, 2, flavor=fl)
    x = make_data((4, 2, 3, 3), 8)
    layer.forward(x)
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    e = (x64 - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-3)
    assert_close(layer.output, e, name="output")
    assert_close(layer.rolling_variance, 0.99 + 0.01 * x64.var(axis=(0, 2, 3), ddof=1), name="rolling_variance")
    with pytest.raises(ValueError):
        Flavor(
            "bad",
            momentum=2.0,
            eps=1e-5,
            eps_in_sqrt=True,
            unbiased=False,
            bwd_eps=1e-5,
            bwd_eps_in_sqrt=True,
            stat_eps=1e-5,
        )


# ------------------------------------------------------------------------------------------------
# Gradients


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (6, 3, 1, 1), (1, 2, 3, 3)])
def test_reference_torch_flavor_gradient_by_finite_differences(shape):
    """In float64: the reference's torch-flavor backward is the gradient of its forward (and matches
    the textbook formula)."""
    rng = np.random.default_rng(5)
    b, c, h, w = shape
    x = rng.standard_normal(shape) * 2 + 1
    sc, bi = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    g = rng.standard_normal(shape)  # the output's delta

    def f():
        return float((g * ref.forward(x, sc, bi, np.zeros(c), np.ones(c), shape, "torch")["output"]).sum())

    dx_fd = _fd_grad(f, x)
    e = ref.forward(x, sc, bi, np.zeros(c), np.ones(c), shape, "torch")
    bw = ref.backward(x, g, sc, e["mean"], e["variance"], shape, "torch")
    assert_close(bw["delta"], dx_fd, rtol=1e-7, name="dx")
    dsc = _fd_grad(
        lambda: float((g * ref.forward(x, sc, bi, np.zeros(c), np.ones(c), shape, "torch")["output"]).sum()), sc
    )
    dbi = _fd_grad(
        lambda: float((g * ref.forward(x, sc, bi, np.zeros(c), np.ones(c), shape, "torch")["output"]).sum()), bi
    )
    assert_close(bw["scale_updates"], dsc, rtol=1e-7, name="dscale")
    assert_close(bw["bias_updates"], dbi, rtol=1e-7, name="dbias")
    tx, ts, tb = ref.exact_training_gradient(x, g, sc, shape, 1e-5)
    assert_close(bw["delta"], tx, rtol=1e-10, name="textbook dx")


@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (6, 3, 1, 1), (2, 4, 5, 5)])
def test_c_torch_flavor_gradient_matches_finite_differences(shape):
    """The C backward (float32) against the float64 finite-difference gradient of the forward."""
    rng = np.random.default_rng(6)
    b, c, h, w = shape
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    layer = make_batchnorm_layer(b, w, h, c, flavor="torch")
    layer.scales[:] = rng.uniform(0.5, 1.5, c)
    layer.biases[:] = rng.standard_normal(c)
    g = rng.standard_normal(shape).astype(np.float32)
    layer.forward(x)
    layer.delta[:] = g
    dx = layer.backward()
    x64 = x.astype(np.float64)
    sc, bi = layer.scales.astype(np.float64), layer.biases.astype(np.float64)

    def f():
        return float((g * ref.forward(x64, sc, bi, np.zeros(c), np.ones(c), shape, "torch")["output"]).sum())

    dx_fd = _fd_grad(f, x64)
    assert_close(dx, dx_fd, rtol=1e-5, name="dx")
    assert_close(layer.scale_updates, _fd_grad(f, sc), rtol=1e-5, name="scale_updates")
    assert_close(layer.bias_updates, _fd_grad(f, bi), rtol=1e-5, name="bias_updates")


def test_inference_backward_is_the_gradient_of_inference_forward():
    shape = (2, 3, 2, 2)
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    for flavor in FLAVOR_NAMES:
        layer = _layer_with_params(shape, flavor)
        layer.scale_updates[:] = 0
        layer.bias_updates[:] = 0
        g = rng.standard_normal(shape).astype(np.float32)
        layer.forward(x, train=False)
        layer.delta[:] = g
        dx = layer.backward()
        args = [a.astype(np.float64) for a in (layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance)]
        x64 = x.astype(np.float64)

        def f(g=g, x64=x64, args=args, flavor=flavor):
            return float((g * ref.forward(x64, *args, shape, flavor, False)["output"]).sum())

        assert_close(dx, _fd_grad(f, x64), rtol=1e-5, name=f"{flavor} dx")
        assert_close(layer.scale_updates, _fd_grad(f, args[0]), rtol=1e-5, name=f"{flavor} scale_updates")
