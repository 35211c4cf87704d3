"""The fast kernels on tensors large enough to take every path of the engine (csrc/driver.c plans by
shape: fused channel groups, three phases with flat or grid reductions, per-element coefficients,
non-temporal stores, masked tails), on every instruction set the CPU has and several thread counts:
against the plain C references (csrc/reference.c) and the float64 reference, and bit for bit against
themselves across thread counts."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import assert_close, make_data

from darknet_bn import kernels as K
from darknet_bn import make_batchnorm_layer
from darknet_bn._capi import EXEC, ffi, lib

# (batch, c, h, w), and the plan each is chosen to exercise (checked in test_shapes_take_their_paths)
BIG = {
    (4, 9, 500, 401): "lane, fused (beyond the cache), non-temporal stores",
    (3, 5, 100, 97): "lane, three phases, flat reduction",
    (1, 3, 1500, 1700): "lane, few channels, flat reduction, long runs",
    (256, 1000, 5, 5): "block, fused channel groups",
    (4096, 300, 1, 1): "block, one tile split in row chunks, per-element coefficients",
    (64, 512, 7, 7): "block, fused channel groups that fit L2 (below the streaming size), masked tails",
    (64, 40, 7, 7): "block, narrow fused tiles of 5 channels x 49 values (the forward and the backward)",
    (500, 9, 11, 13): "block, one tile split in row chunks: grid reduction, flat map with masked tails (the "
    "backward: its tasks' two inputs exceed the narrow tiles' DBN_NARROW_TASK_MAX)",
    (8192, 16, 1, 1): "block, channels_last rows of one vector, three phases, grid map in registers",
    (512, 200, 2, 3): "block, tiny planes, per-element coefficients",
    (7, 1, 333, 333): "one channel: one long plane",
}


def plan(shape, bytes_per_value):
    b, c, h, w = shape
    info = ffi.new("dbn_plan_info *")
    lib.dbn_describe_plan(b, c, h * w, bytes_per_value, info)
    return info


def test_shapes_take_their_paths():
    seen = set()
    for shape in BIG:
        for bpv in (4, 8):
            i = plan(shape, bpv)
            seen.add(("fused" if i.fused else "flat" if i.reduce_flat else "grid", i.tile == 1, bool(i.expand)))
    assert ("fused", True, False) in seen  # lane groups
    assert ("fused", False, False) in seen  # block groups
    assert ("flat", True, False) in seen  # flat reduction
    assert ("grid", False, True) in seen  # grid reduction, per-element map
    assert ("grid", False, False) in seen  # grid reduction, per-plane map
    assert plan((4096, 300, 1, 1), 4).nchunks > 1
    assert plan((8192, 16, 1, 1), 8).nchunks > 1 and not plan((8192, 16, 1, 1), 8).fused


_cache: dict = {}


def data(shape):
    """x, dy and the float64 reference of the torch flavor's passes (computed once per shape)."""
    if shape not in _cache:
        x = make_data(shape, 3)
        dy = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
        c = shape[1]
        sc = np.linspace(0.5, 1.5, c).astype(np.float32)
        bi = np.linspace(-1, 1, c).astype(np.float32)
        rm = np.linspace(-0.5, 0.5, c).astype(np.float32)
        rv = np.linspace(0.5, 2, c).astype(np.float32)
        fwd = ref.forward(x, sc, bi, rm, rv, shape, "torch", True)
        inf = ref.forward(x, sc, bi, rm, rv, shape, "torch", False)
        _cache.clear()
        _cache[shape] = (x, dy, sc, bi, rm, rv, fwd, inf)
    return _cache[shape]


def _layer(shape, sc, bi, rm, rv):
    b, c, h, w = shape
    layer = make_batchnorm_layer(b, w, h, c, flavor="torch")
    layer.scales[:], layer.biases[:], layer.rolling_mean[:], layer.rolling_variance[:] = sc, bi, rm, rv
    return layer


@pytest.mark.parametrize("shape", list(BIG))
def test_layer_passes_on_every_isa(shape, isa):
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    layer = _layer(shape, sc, bi, rm, rv)
    layer.forward(x, train=False)
    assert_close(layer.output, inf["output"], name=f"{isa} infer")
    layer.forward(x, train=True)
    assert_close(layer.output, fwd["output"], name=f"{isa} train output")
    for k in ("mean", "variance", "rolling_mean", "rolling_variance"):
        assert_close(getattr(layer, k), fwd[k], name=f"{isa} {k}")
    assert_close(layer.x_norm, fwd["x_norm"], name=f"{isa} x_norm")
    layer.delta[:] = dy
    nd = np.empty_like(x)
    layer.backward(nd)
    g = ref.backward(x, dy, sc, layer.mean, layer.variance, shape, "torch", True)
    sigma = np.sqrt(fwd["variance"] + 1e-5)
    assert_close(nd, g["delta"], scale=np.abs(dy).max() * (sc / sigma).max(), name=f"{isa} input delta")
    assert np.array_equal(layer.delta, nd)
    n_per = np.abs(dy).sum(axis=(0, 2, 3)).max()
    assert_close(layer.bias_updates, g["bias_updates"], scale=n_per, name=f"{isa} bias_updates")
    assert_close(
        layer.scale_updates, g["scale_updates"], scale=n_per * np.abs(fwd["x_norm"]).max(), name=f"{isa} scale_updates"
    )


@pytest.mark.parametrize("shape", list(BIG))
def test_results_do_not_depend_on_thread_count(shape):
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    runs = []
    try:
        for n in (1, 2, 3):
            K.set_num_threads(n)
            layer = _layer(shape, sc, bi, rm, rv)
            layer.forward(x, train=True)
            layer.delta[:] = dy
            layer.backward(layer.delta)
            runs.append(
                [
                    layer.output.copy(),
                    layer.delta.copy(),
                    layer.mean.copy(),
                    layer.variance.copy(),
                    layer.scale_updates.copy(),
                    layer.bias_updates.copy(),
                ]
            )
    finally:
        K.set_num_threads(None)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)


def _ptr(a):
    return ffi.from_buffer("float[]", a)


@pytest.mark.parametrize("shape", list(BIG))
def test_named_kernels_match_their_plain_references(shape, isa):
    """Every fast named kernel against its plain twin in csrc/reference.c."""
    b, c, h, w = shape
    s = h * w
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    mean = fwd["mean"].astype(np.float32)
    var = fwd["variance"].astype(np.float32)
    xs = np.abs(x).max()

    def pair(fast, plain, outs, scale=None, **kw):
        """Run fast(*args) and plain(*args) on copies of the outputs; compare."""
        got = [o.copy() for o in outs]
        exp = [o.copy() for o in outs]
        fast(got)
        plain(exp)
        for gv, ev in zip(got, exp):
            assert_close(gv, ev, scale=scale, **kw)

    def z(n):
        return np.zeros(n, np.float32)

    pair(
        lambda o: K.mean_cpu(x, b, c, s, o[0]),
        lambda o: lib.mean_cpu_ref(_ptr(x), b, c, s, _ptr(o[0]), ffi.NULL),
        [z(c)],
        scale=xs,
        name="mean_cpu",
    )
    pair(
        lambda o: K.variance_cpu(x, mean, b, c, s, o[0]),
        lambda o: lib.variance_cpu_ref(_ptr(x), _ptr(mean), b, c, s, _ptr(o[0]), ffi.NULL),
        [z(c)],
        name="variance_cpu",
    )
    pair(
        lambda o: K.normalize_cpu(o[0], mean, var, b, c, s, flavor="pjreddie"),
        lambda o: lib.normalize_cpu_ref(_ptr(o[0]), _ptr(mean), _ptr(var), b, c, s, ref.F32_1e6, 0, ffi.NULL),
        [x],
        name="normalize_cpu",
    )
    pair(
        lambda o: K.scale_bias(o[0], sc, b, c, s),
        lambda o: lib.scale_bias_ref(_ptr(o[0]), _ptr(sc), b, c, s, ffi.NULL),
        [x],
        rtol=1e-7,
        name="scale_bias",
    )
    pair(
        lambda o: K.add_bias(o[0], bi, b, c, s),
        lambda o: lib.add_bias_ref(_ptr(o[0]), _ptr(bi), b, c, s, ffi.NULL),
        [x],
        rtol=2e-7,
        name="add_bias",
    )
    sums = np.abs(dy).sum(axis=(0, 2, 3)).max()
    pair(
        lambda o: K.backward_bias(o[0], dy, b, c, s),
        lambda o: lib.backward_bias_ref(_ptr(o[0]), _ptr(dy), b, c, s, ffi.NULL),
        [bi],
        scale=sums,
        name="backward_bias",
    )
    pair(
        lambda o: K.backward_scale_cpu(x, dy, b, c, s, o[0]),
        lambda o: lib.backward_scale_cpu_ref(_ptr(x), _ptr(dy), b, c, s, _ptr(o[0]), ffi.NULL),
        [sc],
        scale=sums * xs,
        name="backward_scale_cpu",
    )
    pair(
        lambda o: K.mean_delta_cpu(dy, var, b, c, s, o[0]),
        lambda o: lib.mean_delta_cpu_ref(_ptr(dy), _ptr(var), b, c, s, _ptr(o[0]), ffi.NULL),
        [z(c)],
        scale=sums / np.sqrt(var.min()),
        name="mean_delta_cpu",
    )
    pair(
        lambda o: K.variance_delta_cpu(x, dy, mean, var, b, c, s, o[0]),
        lambda o: lib.variance_delta_cpu_ref(_ptr(x), _ptr(dy), _ptr(mean), _ptr(var), b, c, s, _ptr(o[0]), ffi.NULL),
        [z(c)],
        scale=sums * xs * var.min() ** -1.5,
        name="variance_delta_cpu",
    )
    md = np.linspace(-1, 1, c).astype(np.float32)
    vd = np.linspace(1, -1, c).astype(np.float32)
    pair(
        lambda o: K.normalize_delta_cpu(x, mean, var, md, vd, b, c, s, o[0], flavor="alexeyab"),
        lambda o: lib.normalize_delta_cpu_ref(
            _ptr(x), _ptr(mean), _ptr(var), _ptr(md), _ptr(vd), b, c, s, _ptr(o[0]), ref.F32_1e5, 0, ffi.NULL
        ),
        [dy],
        name="normalize_delta_cpu",
    )


@pytest.mark.parametrize("offset", [1, 3, 8])
def test_unaligned_arrays(offset, isa):
    """Views that start off the vector alignment (the stores peel to alignment; the non-temporal path
    must not assume it)."""
    shape = (3, 20, 300, 301)  # 21 MB: both forwards' maps stream (non-temporal); the in-place backward never does
    b, c, h, w = shape
    n = b * c * h * w
    raw = np.empty(n + offset, np.float32)
    x = raw[offset:].reshape(shape)
    x[...] = make_data(shape, 9)
    layer = make_batchnorm_layer(b, w, h, c, flavor="torch")
    layer.forward(x)
    e = ref.forward(x, np.ones(c), np.zeros(c), np.zeros(c), np.ones(c), shape, "torch")
    assert_close(layer.output, e["output"], name="output")
    rawd = np.empty(n + offset, np.float32)
    nd = rawd[offset:].reshape(shape)
    layer.delta[:] = 1.0
    layer.delta[:, :, 0, :] = -3.0
    layer.backward(nd)
    g = ref.backward(
        x,
        np.where(np.arange(h)[None, None, :, None] == 0, -3.0, 1.0) * np.ones(shape),
        np.ones(c),
        layer.mean,
        layer.variance,
        shape,
        "torch",
    )
    assert_close(nd, g["delta"], scale=3.0 / np.sqrt(e["variance"].min() + 1e-5), name="input delta")
    bias = np.linspace(-1, 1, c).astype(np.float32)
    y = x.copy()
    K.add_bias(x, bias, b, c, h * w)  # in place on the unaligned view
    assert np.array_equal(x, y + bias[None, :, None, None])


def test_large_mean_accuracy_fused_layer():
    """The foundation's accuracy case through the layer's fused training forward (2**22 values of one
    channel ~ 1000 + N(0,1)): mean, variance and output within 1e-6 relative of float64."""
    n = 2**22
    x = (1000.0 + np.random.default_rng(7).standard_normal(n)).astype(np.float32).reshape(1, 1, 1, n)
    x64 = x.astype(np.float64)
    layer = make_batchnorm_layer(1, n, 1, 1, flavor="torch")
    layer.forward(x)
    assert abs(layer.mean[0] / x64.mean() - 1) < 1e-6
    assert abs(layer.variance[0] / x64.var() - 1) < 1e-6
    e = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5)
    assert_close(layer.output, e, rtol=1e-5, name="output")


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab", "torch"])
def test_darknet_sequence_references(flavor):
    """forward_batchnorm_layer_ref / backward_batchnorm_layer_ref (Darknet's sequence of plain kernels,
    the benchmark's baseline) compute the flavor's passes too."""
    from darknet_bn._capi import c_flavor
    from darknet_bn.flavors import get_flavor

    shape = (3, 4, 5, 6)
    b, c, h, w = shape
    x = make_data(shape, 1)
    dy = make_data(shape, 2)
    sc, bi = np.linspace(0.5, 1.5, c).astype(np.float32), np.linspace(-1, 1, c).astype(np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    out, xs, xn, nd = (np.zeros_like(x) for _ in range(4))
    mean, var, su, bu, md, vd = (np.zeros(c, np.float32) for _ in range(6))
    cf = c_flavor(get_flavor(flavor))
    lib.forward_batchnorm_layer_ref(
        _ptr(x),
        _ptr(out),
        _ptr(xs),
        _ptr(xn),
        _ptr(sc),
        _ptr(bi),
        _ptr(mean),
        _ptr(var),
        _ptr(rm),
        _ptr(rv),
        b,
        c,
        h * w,
        cf,
        1,
    )
    e = ref.forward(x, sc, bi, np.zeros(c), np.ones(c), shape, flavor)
    for got, key in (
        (out, "output"),
        (xn, "x_norm"),
        (mean, "mean"),
        (var, "variance"),
        (rm, "rolling_mean"),
        (rv, "rolling_variance"),
    ):
        assert_close(got, e[key], name=key)
    assert np.array_equal(xs, x)
    delta = dy.copy()
    lib.backward_batchnorm_layer_ref(
        _ptr(xs),
        _ptr(xn),
        _ptr(delta),
        _ptr(nd),
        _ptr(sc),
        _ptr(mean),
        _ptr(var),
        _ptr(su),
        _ptr(bu),
        _ptr(md),
        _ptr(vd),
        b,
        c,
        h * w,
        cf,
    )
    g = ref.backward(x, dy, sc, mean, var, shape, flavor)
    assert_close(nd, g["delta"], name="delta")
    assert_close(md, g["mean_delta"], name="mean_delta")


# Shapes for the whole-pass references: tiny fused planes, block rows, per-element coefficients, odd
# tails, three phases (flat and grid reductions), one channel.
REF_SHAPES = [
    (1, 1, 1, 2),
    (16, 8, 1, 1),
    (3, 5, 7, 11),
    (2, 13, 17, 19),
    (9, 40, 3, 2),
    (3, 5, 100, 97),
    (64, 512, 7, 7),
    (7, 1, 33, 33),
]


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab", "torch"])
@pytest.mark.parametrize("shape", REF_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_whole_pass_references(shape, flavor):
    """The plain whole-pass references (dbn_forward_train_ref, dbn_forward_infer_ref, dbn_backward_ref,
    dbn_normalize_into_ref in csrc/reference.c) against the float64 reference, and the fast passes (the
    layer's) against them."""
    from darknet_bn._capi import c_flavor
    from darknet_bn.flavors import get_flavor

    b, c, h, w = shape
    s = h * w
    cf = c_flavor(get_flavor(flavor))
    fl = ref.FLAVORS[flavor]
    x = make_data(shape, 5)
    dy = make_data(shape, 6, offset=False)
    sc, bi = np.linspace(0.5, 1.5, c).astype(np.float32), np.linspace(-1, 1, c).astype(np.float32)
    rm0, rv0 = np.linspace(-0.5, 0.5, c).astype(np.float32), np.linspace(0.5, 2, c).astype(np.float32)
    xs = float(np.abs(x).max())
    layer = make_batchnorm_layer(b, w, h, c, flavor=flavor)
    layer.scales[:], layer.biases[:], layer.rolling_mean[:], layer.rolling_variance[:] = sc, bi, rm0, rv0

    # training forward
    out, mean, var, rm, rv = np.zeros_like(x), np.zeros(c, np.float32), np.zeros(c, np.float32), rm0.copy(), rv0.copy()
    lib.dbn_forward_train_ref(
        _ptr(x), _ptr(out), _ptr(sc), _ptr(bi), _ptr(mean), _ptr(var), _ptr(rm), _ptr(rv), b, c, s, cf, ffi.NULL
    )
    e = ref.forward(x, sc, bi, rm0, rv0, shape, flavor, True)
    layer.forward(x, train=True)
    for got, fast, key, scale in (
        (out, layer.output, "output", None),
        (mean, layer.mean, "mean", xs),
        (var, layer.variance, "variance", None),
        (rm, layer.rolling_mean, "rolling_mean", xs),
        (rv, layer.rolling_variance, "rolling_variance", None),
    ):
        assert_close(got, e[key], rtol=1e-6, scale=scale, name=f"train_ref {key}")
        assert_close(fast, got, scale=scale, name=f"train fast/ref {key}")

    # x_norm of that forward
    xn = np.zeros_like(x)
    lib.dbn_normalize_into_ref(
        _ptr(x), _ptr(xn), _ptr(mean), _ptr(var), b, c, s, fl["eps"], fl["eps_in_sqrt"], ffi.NULL
    )
    assert_close(
        xn, ref.normalize_cpu(x, mean, var, b, c, s, fl["eps"], fl["eps_in_sqrt"]), rtol=1e-6, name="normalize_into_ref"
    )
    assert_close(layer.x_norm, xn, name="x_norm fast/ref")

    # training backward, from the forward's statistics
    n_per = float(np.abs(dy).sum(axis=(0, 2, 3)).max())  # the largest sum of |delta| over a channel

    def backward_pair(train, m, v, tag):
        delta, nd = dy.copy(), np.zeros_like(dy)
        su, bu, md, vd = (np.zeros(c, np.float32) for _ in range(4))
        lib.dbn_backward_ref(
            _ptr(x),
            _ptr(delta),
            _ptr(nd),
            _ptr(sc),
            _ptr(m),
            _ptr(v),
            _ptr(su),
            _ptr(bu),
            _ptr(md),
            _ptr(vd),
            b,
            c,
            s,
            cf,
            train,
            ffi.NULL,
        )
        g = ref.backward(x, dy, sc, m, v, shape, flavor, bool(train))
        layer.scale_updates[:] = 0
        layer.bias_updates[:] = 0
        layer.delta[:] = dy
        fast = layer.backward(np.empty_like(dy))
        assert np.array_equal(delta, nd), f"{tag}: net_delta is not delta"
        sv = float(np.sqrt(v.astype(np.float64).min() + 1e-5))  # the smallest denominator, about
        x_norm_max = float(np.abs(x - m[None, :, None, None]).max()) / sv
        scales = {
            "delta": float(np.abs(dy).max()) * float(sc.max()) / sv,
            "bias_updates": n_per,
            "scale_updates": n_per * x_norm_max,
            "mean_delta": n_per * float(sc.max()) / sv,
            "variance_delta": n_per * float(sc.max()) * x_norm_max / sv**2,
        }
        for key, got, fst in (
            ("delta", delta, fast),
            ("bias_updates", bu, layer.bias_updates),
            ("scale_updates", su, layer.scale_updates),
            ("mean_delta", md, layer.mean_delta),
            ("variance_delta", vd, layer.variance_delta),
        ):
            assert_close(got, g[key], rtol=1e-6, scale=scales[key], name=f"{tag} backward_ref {key}")
            assert_close(fst, got, scale=scales[key], name=f"{tag} backward fast/ref {key}")

    backward_pair(1, mean, var, "train")

    # inference forward, and the backward of inference (rolling statistics as constants)
    out_i = np.zeros_like(x)
    lib.dbn_forward_infer_ref(_ptr(x), _ptr(out_i), _ptr(sc), _ptr(bi), _ptr(rm0), _ptr(rv0), b, c, s, cf, ffi.NULL)
    assert_close(
        out_i, ref.forward(x, sc, bi, rm0, rv0, shape, flavor, False)["output"], rtol=1e-6, name="infer_ref output"
    )
    layer.rolling_mean[:], layer.rolling_variance[:] = rm0, rv0
    layer.forward(x, train=False)
    assert_close(layer.output, out_i, name="infer fast/ref output")
    backward_pair(0, rm0, rv0, "infer")


# ------------------------------------------------------------------------------------------------
# dbn_backward_into (out of place) and dbn_exec.plain_stores (no non-temporal stores): the same bits

_FLAVORS = {  # momentum, eps, eps_in_sqrt, unbiased, bwd_eps, bwd_eps_in_sqrt, stat_eps
    "torch": [0.1, 1e-5, 1, 0, 1e-5, 1, 1e-5],
    "pjreddie": [0.01, float(ref.F32_1e6), 0, 1, float(ref.F32_1e5), 1, float(ref.F32_1e5)],
}


def _exec(plain_stores=0, nthreads=2):
    return ffi.new("dbn_exec *", {"nthreads": nthreads, "isa": EXEC.isa, "plain_stores": plain_stores})


def _backward_outputs(fn, shape, train, renorm, ex, out_of_place, flavor, offset=0):
    """(input delta, scale_updates, bias_updates, mean_delta, variance_delta, dy after the call)."""
    b, c, h, w = shape
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    mean = (fwd["mean"] if train else rm).astype(np.float32)
    var = (fwd["variance"] if train else rv).astype(np.float32)
    r = np.linspace(0.8, 1.2, c).astype(np.float32) if renorm else None
    d = np.linspace(-0.1, 0.1, c).astype(np.float32) if renorm else None
    delta = np.empty(dy.size + offset, np.float32)[offset:].reshape(shape)
    delta[...] = dy
    upd = [np.full(c, 0.25, np.float32) for _ in range(4)]
    fl = ffi.new("dbn_flavor *", _FLAVORS[flavor])

    def opt(a):
        return ffi.NULL if a is None else _ptr(a)

    args = (_ptr(sc), ffi.NULL, _ptr(mean), _ptr(var), opt(r), opt(d), *map(_ptr, upd), b, c, h * w, fl, int(train))
    args = (*args, ffi.NULL, ex)  # biases and act: NULL (linear)
    if out_of_place:
        dx = np.full(dy.size + offset, np.nan, np.float32)[offset:].reshape(shape)
        fn(_ptr(x), _ptr(delta), _ptr(dx), *args)
    else:
        fn(_ptr(x), _ptr(delta), ffi.NULL, *args)
        dx = delta
    return [dx.copy(), *upd, delta.copy()]


@pytest.mark.parametrize("shape", list(BIG))
def test_backward_into_equals_backward_bit_for_bit(shape, isa):
    x, dy, *_ = data(shape)
    for train, renorm, flavor, offset in [(1, 0, "torch", 0), (1, 1, "pjreddie", 1), (0, 0, "torch", 3)]:
        ex = _exec()
        inplace = _backward_outputs(lib.dbn_backward, shape, train, renorm, ex, False, flavor, offset)
        into = _backward_outputs(lib.dbn_backward_into, shape, train, renorm, ex, True, flavor, offset)
        assert np.array_equal(into[-1], dy), "dbn_backward_into changed delta"
        assert not np.array_equal(inplace[-1], dy)  # (the in-place pass did write its delta)
        for name, a, e in zip(["dx", "scale_updates", "bias_updates", "mean_delta", "variance_delta"], into, inplace):
            assert np.array_equal(a, e, equal_nan=False), f"{name}: train={train} renorm={renorm} {flavor}"


@pytest.mark.parametrize("shape", list(BIG))
def test_plain_stores_give_the_same_bits(shape, isa):
    """exec.plain_stores = 1 (no non-temporal stores) changes no bit of any pass, in place or not."""
    b, c, h, w = shape
    s = h * w
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    fl = ffi.new("dbn_flavor *", _FLAVORS["torch"])
    runs = []
    for plain in (0, 1):
        ex = _exec(plain)
        out = np.full_like(x, np.nan)
        st = [np.zeros(c, np.float32), np.zeros(c, np.float32), rm.copy(), rv.copy()]
        lib.dbn_forward_train(
            _ptr(x), _ptr(out), _ptr(sc), _ptr(bi), *map(_ptr, st), b, c, s, fl, ffi.NULL, ffi.NULL, ex
        )
        inf_out = np.full_like(x, np.nan)
        lib.dbn_forward_infer(_ptr(x), _ptr(inf_out), _ptr(sc), _ptr(bi), _ptr(rm), _ptr(rv), b, c, s, fl, ffi.NULL, ex)
        bwd = _backward_outputs(lib.dbn_backward_into, shape, 1, 0, ex, True, "torch")
        bwd_in = _backward_outputs(lib.dbn_backward, shape, 1, 0, ex, False, "torch")
        runs.append([out, *st, inf_out, *bwd, *bwd_in])
    for a, e in zip(*runs):
        assert np.array_equal(a, e)
    assert np.isfinite(runs[0][0]).all() and np.isfinite(runs[0][5]).all()


def test_backward_into_against_float64_reference():
    """The out-of-place pass is the backward (independent check, not only against its twin)."""
    shape = (3, 5, 100, 97)
    x, dy, sc, bi, rm, rv, fwd, inf = data(shape)
    dx, su, bu, md, vd, after = _backward_outputs(lib.dbn_backward_into, shape, 1, 0, _exec(), True, "torch")
    mean, var = fwd["mean"].astype(np.float32), fwd["variance"].astype(np.float32)
    g = ref.backward(x, dy, sc, mean, var, shape, "torch", True)
    sigma = np.sqrt(fwd["variance"] + 1e-5)
    assert_close(dx, g["delta"], scale=np.abs(dy).max() * (sc / sigma).max(), name="input delta")
    n_per = np.abs(dy).sum(axis=(0, 2, 3)).max()
    assert_close(bu - 0.25, g["bias_updates"], scale=n_per, name="bias_updates")
