"""A float64 numpy reference for batch normalization, written from the math and from Darknet's source.

It does not import darknet_bn: the tests compare the package against it. Tensors are NCHW arrays
(any shape with batch*filters*spatial elements is reshaped to [batch, filters, spatial]).

Each flavor's constants are restated here from their sources (pjreddie/darknet and AlexeyAB/darknet
src/blas.c and src/batchnorm_layer.c; PyTorch's documentation of BatchNorm2d) rather than taken from
darknet_bn.flavors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

F32_1e5 = float(np.float32(1e-5))  # Darknet's .00001f
F32_1e6 = float(np.float32(1e-6))  # Darknet's .000001f

# name: (momentum, eps, eps in sqrt, unbiased normalizing variance, backward eps, backward eps in sqrt,
#        mean/variance-delta eps, initial rolling variance)
FLAVORS = {
    "pjreddie": dict(
        momentum=float(np.float32(0.01)),
        eps=F32_1e6,
        eps_in_sqrt=False,
        unbiased=True,
        bwd_eps=F32_1e5,
        bwd_eps_in_sqrt=True,
        stat_eps=F32_1e5,
        init_rv=0.0,
    ),
    "alexeyab": dict(
        momentum=float(np.float32(0.1)),
        eps=F32_1e5,
        eps_in_sqrt=True,
        unbiased=True,
        bwd_eps=F32_1e5,
        bwd_eps_in_sqrt=False,
        stat_eps=F32_1e5,
        init_rv=0.0,
    ),
    "torch": dict(
        momentum=0.1,
        eps=1e-5,
        eps_in_sqrt=True,
        unbiased=False,
        bwd_eps=1e-5,
        bwd_eps_in_sqrt=True,
        stat_eps=1e-5,
        init_rv=1.0,
    ),
}


def _t(x, batch, filters, spatial):
    return np.asarray(x, dtype=np.float64).reshape(batch, filters, spatial)


def _c(v):
    """A per-channel array broadcast over [batch, filters, spatial]."""
    return np.asarray(v, dtype=np.float64)[None, :, None]


def denominator(var, eps, in_sqrt):
    var = np.asarray(var, dtype=np.float64)
    return np.sqrt(var + eps) if in_sqrt else np.sqrt(var) + eps


# ------------------------------------------------------------------------------------------------
# Darknet's named kernels


def mean_cpu(x, batch, filters, spatial):
    return _t(x, batch, filters, spatial).sum(axis=(0, 2)) / (batch * spatial)


def variance_cpu(x, mean, batch, filters, spatial):
    """The unbiased variance: undefined (NaN) for fewer than 2 values."""
    d = _t(x, batch, filters, spatial) - _c(mean)
    n = batch * spatial
    return (d * d).sum(axis=(0, 2)) / (n - 1) if n > 1 else np.full(filters, np.nan)


def normalize_cpu(x, mean, variance, batch, filters, spatial, eps, in_sqrt):
    return (_t(x, batch, filters, spatial) - _c(mean)) / _c(denominator(variance, eps, in_sqrt))


def scale_bias(output, scales, batch, n, size):
    return _t(output, batch, n, size) * _c(scales)


def add_bias(output, biases, batch, n, size):
    return _t(output, batch, n, size) + _c(biases)


def backward_bias(bias_updates, delta, batch, n, size):
    return np.asarray(bias_updates, np.float64) + _t(delta, batch, n, size).sum(axis=(0, 2))


def backward_scale_cpu(x_norm, delta, batch, n, size, scale_updates):
    return np.asarray(scale_updates, np.float64) + (_t(x_norm, batch, n, size) * _t(delta, batch, n, size)).sum(
        axis=(0, 2)
    )


def mean_delta_cpu(delta, variance, batch, filters, spatial):
    return -_t(delta, batch, filters, spatial).sum(axis=(0, 2)) / np.sqrt(np.asarray(variance, np.float64) + F32_1e5)


def variance_delta_cpu(x, delta, mean, variance, batch, filters, spatial):
    s = (_t(delta, batch, filters, spatial) * (_t(x, batch, filters, spatial) - _c(mean))).sum(axis=(0, 2))
    return s * -0.5 * (np.asarray(variance, np.float64) + F32_1e5) ** -1.5


def normalize_delta_cpu(x, mean, variance, mean_delta, variance_delta, batch, filters, spatial, delta, eps, in_sqrt):
    n = batch * spatial
    return (
        _t(delta, batch, filters, spatial) / _c(denominator(variance, eps, in_sqrt))
        + _c(variance_delta) * 2.0 * (_t(x, batch, filters, spatial) - _c(mean)) / n
        + _c(mean_delta) / n
    )


# ------------------------------------------------------------------------------------------------
# The layer's passes, per flavor. x: [batch, c, h, w] (or any shape of that size).


def forward(x, scales, biases, rolling_mean, rolling_variance, shape, flavor, train=True):
    """Returns a dict: output, x_norm, and for train also mean, variance, rolling_mean, rolling_variance."""
    fl = FLAVORS[flavor]
    batch, c, h, w = shape
    s = h * w
    xt = _t(x, batch, c, s)
    if train:
        n = batch * s
        mean = xt.sum(axis=(0, 2)) / n
        ss = ((xt - _c(mean)) ** 2).sum(axis=(0, 2))
        var_unbiased = ss / (n - 1)
        var = var_unbiased if fl["unbiased"] else ss / n
        m = fl["momentum"]
        rm = (1 - m) * np.asarray(rolling_mean, np.float64) + m * mean
        rv = (1 - m) * np.asarray(rolling_variance, np.float64) + m * var_unbiased
        x_norm = (xt - _c(mean)) / _c(denominator(var, fl["eps"], fl["eps_in_sqrt"]))
        out = x_norm * _c(scales) + _c(biases)
        return dict(
            output=out.reshape(shape),
            x_norm=x_norm.reshape(shape),
            mean=mean,
            variance=var,
            rolling_mean=rm,
            rolling_variance=rv,
        )
    x_norm = (xt - _c(rolling_mean)) / _c(denominator(rolling_variance, fl["eps"], fl["eps_in_sqrt"]))
    out = x_norm * _c(scales) + _c(biases)
    return dict(output=out.reshape(shape), x_norm=x_norm.reshape(shape))


def backward(x, delta, scales, mean, variance, shape, flavor, train=True):
    """Darknet's backward_batchnorm_layer for the flavor (train), or the exact gradient of the inference
    forward (train=False; mean, variance are then the rolling statistics).

    Returns a dict: delta (the input's delta), scale_updates and bias_updates (the increments),
    mean_delta, variance_delta."""
    fl = FLAVORS[flavor]
    batch, c, h, w = shape
    s = h * w
    n = batch * s
    xt, dt = _t(x, batch, c, s), _t(delta, batch, c, s)
    x_norm = (xt - _c(mean)) / _c(denominator(variance, fl["eps"], fl["eps_in_sqrt"]))
    bias_updates = dt.sum(axis=(0, 2))
    scale_updates = (dt * x_norm).sum(axis=(0, 2))
    ds = dt * _c(scales)  # Darknet: scale_bias(l.delta, l.scales, ...)
    if train:
        vs = np.asarray(variance, np.float64) + fl["stat_eps"]
        mean_delta = -ds.sum(axis=(0, 2)) / np.sqrt(vs)
        variance_delta = (ds * (xt - _c(mean))).sum(axis=(0, 2)) * -0.5 * vs**-1.5
        din = (
            ds / _c(denominator(variance, fl["bwd_eps"], fl["bwd_eps_in_sqrt"]))
            + _c(variance_delta) * 2.0 * (xt - _c(mean)) / n
            + _c(mean_delta) / n
        )
    else:
        mean_delta = np.zeros(c)
        variance_delta = np.zeros(c)
        din = ds / _c(denominator(variance, fl["eps"], fl["eps_in_sqrt"]))
    return dict(
        delta=din.reshape(shape),
        scale_updates=scale_updates,
        bias_updates=bias_updates,
        mean_delta=mean_delta,
        variance_delta=variance_delta,
    )


def exact_training_gradient(x, g, scales, shape, eps):
    """The textbook gradient of BN with biased variance: for output delta g (= -dL/dy),
    returns (dx, dscale, dbias) = d(sum g*y)/d(x, scale, bias). Independent of Darknet's decomposition."""
    batch, c, h, w = shape
    xt, gt = _t(x, batch, c, h * w), _t(g, batch, c, h * w)
    mu = xt.mean(axis=(0, 2), keepdims=True)
    var = xt.var(axis=(0, 2), keepdims=True)
    xhat = (xt - mu) / np.sqrt(var + eps)
    gs = gt * _c(scales)
    dx = (gs - gs.mean(axis=(0, 2), keepdims=True) - xhat * (gs * xhat).mean(axis=(0, 2), keepdims=True)) / np.sqrt(
        var + eps
    )
    return dx.reshape(shape), (gt * xhat).sum(axis=(0, 2)), gt.sum(axis=(0, 2))


def update(scales, scale_updates, biases, bias_updates, learning_rate, momentum, batch):
    """Darknet's update_batchnorm_layer. Returns (scales, scale_updates, biases, bias_updates)."""
    r = learning_rate / batch

    def f(a):
        return np.asarray(a, np.float64)

    return (
        f(scales) + r * f(scale_updates),
        f(scale_updates) * momentum,
        f(biases) + r * f(bias_updates),
        f(bias_updates) * momentum,
    )


# ------------------------------------------------------------------------------------------------
# Batch renormalization (Ioffe 2017, arXiv:1702.03275, Algorithm 1), per flavor


def forward_renorm(x, scales, biases, rolling_mean, rolling_variance, shape, flavor, rmax, dmax):
    """The paper's training forward with the flavor's statistics: sigma_B = the flavor's batch
    denominator, sigma = the same denominator of the rolling variance (before its update),
    r = clip(sigma_B/sigma, 1/rmax, rmax), d = clip((mu_B - mu)/sigma, -dmax, dmax),
    x_hat = (x - mu_B)/sigma_B * r + d. Returns forward()'s dict plus r, d; x_norm is x_hat."""
    fl = FLAVORS[flavor]
    e = forward(x, scales, biases, rolling_mean, rolling_variance, shape, flavor, True)
    sigma_b = denominator(e["variance"], fl["eps"], fl["eps_in_sqrt"])
    sigma = denominator(rolling_variance, fl["eps"], fl["eps_in_sqrt"])
    r = np.clip(sigma_b / sigma, 1.0 / rmax, rmax)
    d = np.clip((e["mean"] - np.asarray(rolling_mean, np.float64)) / sigma, -dmax, dmax)
    batch, c, h, w = shape
    x_hat = (_t(x, batch, c, h * w) - _c(e["mean"])) / _c(sigma_b) * _c(r) + _c(d)
    e.update(r=r, d=d, x_norm=x_hat.reshape(shape), output=(x_hat * _c(scales) + _c(biases)).reshape(shape))
    return e


def backward_renorm(x, delta, scales, mean, variance, r, d, shape, flavor):
    """The flavor's training backward with r and d constants: the normalized input is scaled by r, so
    the statistics' deltas see scale*r; scale_updates = sum delta*x_hat."""
    fl = FLAVORS[flavor]
    batch, c, h, w = shape
    s = h * w
    n = batch * s
    xt, dt = _t(x, batch, c, s), _t(delta, batch, c, s)
    x_hat = (xt - _c(mean)) / _c(denominator(variance, fl["eps"], fl["eps_in_sqrt"])) * _c(r) + _c(d)
    hs = dt * _c(np.asarray(scales, np.float64) * np.asarray(r, np.float64))
    vs = np.asarray(variance, np.float64) + fl["stat_eps"]
    mean_delta = -hs.sum(axis=(0, 2)) / np.sqrt(vs)
    variance_delta = (hs * (xt - _c(mean))).sum(axis=(0, 2)) * -0.5 * vs**-1.5
    din = (
        hs / _c(denominator(variance, fl["bwd_eps"], fl["bwd_eps_in_sqrt"]))
        + _c(variance_delta) * 2.0 * (xt - _c(mean)) / n
        + _c(mean_delta) / n
    )
    return dict(
        delta=din.reshape(shape),
        scale_updates=(dt * x_hat).sum(axis=(0, 2)),
        bias_updates=dt.sum(axis=(0, 2)),
        mean_delta=mean_delta,
        variance_delta=variance_delta,
    )


# ------------------------------------------------------------------------------------------------
# Inference BN, convolution and connected layers: the references of folding


def ref_denominator(rv: np.ndarray, flavor: str) -> np.ndarray:
    """The inference denominators as the issue states them (Darknet's constants are float literals):
    :func:`denominator` with the flavor's forward eps."""
    fl = FLAVORS[flavor]
    with np.errstate(invalid="ignore"):
        return denominator(rv, fl["eps"], fl["eps_in_sqrt"])


def ref_bn(z: np.ndarray, p: dict, flavor: str) -> np.ndarray:
    """Inference BN on (batch, channels, ...) float64: scales*(z - mean)/s + biases."""
    shape = (1, -1) + (1,) * (z.ndim - 2)
    g = lambda k: np.asarray(p[k], dtype=np.float64).reshape(shape)  # noqa: E731
    return g("scales") * (z - g("rolling_mean")) / ref_denominator(p["rolling_variance"], flavor).reshape(shape) + g(
        "biases"
    )


def ref_bn_abs(m: np.ndarray, p: dict, flavor: str) -> np.ndarray:
    """A bound on |the values ref_bn sums| given a bound m on |z| (for the float64 error term)."""
    shape = (1, -1) + (1,) * (m.ndim - 2)
    g = lambda k: np.abs(np.asarray(p[k], dtype=np.float64)).reshape(shape)  # noqa: E731
    return g("scales") * (m + g("rolling_mean")) / ref_denominator(p["rolling_variance"], flavor).reshape(shape) + g(
        "biases"
    )


def ref_conv(
    x: np.ndarray,
    w: np.ndarray,
    *,
    stride_x: int,
    stride_y: int,
    pad: int,
    dilation: int,
    groups: int,
    out_h: int,
    out_w: int,
) -> np.ndarray:
    """Darknet's convolution in float64 (im2col_cpu / AlexeyAB's im2col_cpu_ext): x (B, C, H, W), w
    (n, C/groups, k, k); output channel o of group g = o // (n/groups) sums input channels
    g*C/groups ... over kernel offsets (ky, kx) of x[b, c, oy*stride_y - P + ky*dilation, ox*stride_x - P +
    kx*dilation], zero outside the image, P = pad*dilation."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    b, c, h, wd = x.shape
    n, cg, k, _ = w.shape
    assert cg * groups == c and n % groups == 0
    ng = n // groups
    p = pad * dilation
    out = np.zeros((b, n, out_h, out_w))
    for ky, kx in itertools.product(range(k), range(k)):
        iy = np.arange(out_h) * stride_y - p + ky * dilation
        ix = np.arange(out_w) * stride_x - p + kx * dilation
        my, mx = (iy >= 0) & (iy < h), (ix >= 0) & (ix < wd)
        patch = x[:, :, np.clip(iy, 0, h - 1)][:, :, :, np.clip(ix, 0, wd - 1)] * (my[:, None] & mx[None, :])
        for g in range(groups):
            out[:, g * ng : (g + 1) * ng] += np.einsum(
                "bchw,oc->bohw", patch[:, g * cg : (g + 1) * cg], w[g * ng : (g + 1) * ng, :, ky, kx]
            )
    return out


def loop_conv(x, w, *, stride_x, stride_y, pad, dilation, groups, out_h, out_w):
    """The same convolution as plain loops over every output value (to check ref_conv on tiny sizes)."""
    b, c, h, wd = x.shape
    n, cg, k, _ = w.shape
    out = np.zeros((b, n, out_h, out_w))
    for bi, o, oy, ox in itertools.product(range(b), range(n), range(out_h), range(out_w)):
        g = o // (n // groups)
        s = 0.0
        for ci, ky, kx in itertools.product(range(cg), range(k), range(k)):
            yy = oy * stride_y - pad * dilation + ky * dilation
            xx = ox * stride_x - pad * dilation + kx * dilation
            if 0 <= yy < h and 0 <= xx < wd:
                s += float(w[o, ci, ky, kx]) * float(x[bi, g * cg + ci, yy, xx])
        out[bi, o, oy, ox] = s
    return out


def ref_connected(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Darknet's connected layer in float64: x (B, inputs), w (outputs, inputs) -> x @ w.T."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T


def binarize_weights(w: np.ndarray) -> np.ndarray:
    """Darknet's binarize_weights: per filter, mean |w| with w's sign (w > 0), in float64."""
    w = np.asarray(w, dtype=np.float64)
    mean = np.abs(w.reshape(w.shape[0], -1)).mean(axis=1).reshape((-1,) + (1,) * (w.ndim - 1))
    return np.where(w > 0, mean, -mean)


# ------------------------------------------------------------------------------------------------
# Darknet's activations

SELU_A, SELU_L = float(np.float32(1.0507)), float(np.float32(np.float32(1.0507) * np.float32(1.6732)))


def act64(name, x, alpha=None):
    """Darknet's activations (and PyTorch's hardswish and exact GELU), mathematically, in float64
    (softplus's thresholds of 20 change nothing at this precision but mish(x > 20) = x, which is kept).
    alpha: leaky's slope (default Darknet's .1f)."""
    x = np.asarray(x, np.float64)
    a = np.float32(0.1) if alpha is None else np.float32(alpha)
    with np.errstate(all="ignore"):

        def logistic(v):
            return 1.0 / (1.0 + np.exp(-v))

        return {
            "linear": lambda: x,
            "leaky": lambda: np.where(x > 0, x, a * x),
            "relu": lambda: x * (x > 0),
            "relu6": lambda: np.minimum(np.where(x > 0, x, 0.0), 6.0),
            "logistic": lambda: logistic(x),
            "tanh": lambda: np.tanh(x),
            "elu": lambda: np.where(x >= 0, x, np.expm1(x)),
            "selu": lambda: np.where(x >= 0, SELU_A * x, SELU_L * np.expm1(x)),
            # 0.5x (1 + tanh(u)) = x logistic(2u): the same function, without float64's cancellation
            "gelu": lambda: x * logistic(2 * (0.797885 * x + 0.035677 * x**3)),
            "swish": lambda: x * logistic(x),
            "mish": lambda: np.where(x > 20, x, x * np.tanh(np.logaddexp(0.0, x))),
            "hard_mish": lambda: np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0.0)),
            "hardswish": lambda: x * np.clip(x + 3, 0, 6) / 6,
            # Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation in the left tail
            "gelu_erf": lambda: x * _erfc(-x / math.sqrt(2)) / 2,
        }[name]()


# The kinds whose derivative Darknet writes as a function of the output a = act(z) (docs/backward.md)
FROM_OUTPUT = ("logistic", "tanh", "elu", "selu")


def dact64_from_output(name, a):
    """Darknet's derivative expressions of the output a = act(z), in float64, for the kinds it
    differentiates from the output: logistic (1 - a) a, tanh 1 - a^2, elu a >= 0 ? 1 : a + 1, selu
    a >= 0 ? lambda : a + lambda alpha. Mathematically dact64(z); in float32 the output carries its
    rounding, which (1 - a) turns into a large relative error where a is near 1 -- the backward is defined
    on that float32 output, so a reference of it must be evaluated there too."""
    a = np.asarray(a, np.float64)
    return {
        "logistic": lambda: (1 - a) * a,
        "tanh": lambda: 1 - a * a,
        "elu": lambda: np.where(a >= 0, 1.0, a + 1),
        "selu": lambda: np.where(a >= 0, SELU_A, a + SELU_L),
    }[name]()


def _erfc(v):
    return np.vectorize(lambda t: math.erfc(t) if not math.isnan(t) else math.nan, otypes=[np.float64])(v)


def dact64(name, x, alpha=None):
    """The derivative of act64(name, .) at x, from the math, in float64, with Darknet's (and PyTorch's)
    values at the kinks: relu and leaky take the negative side at 0, relu6 0 at 0 and 6, hard_mish the
    outer side at -2 (0) and the inner at 0 (1), hardswish PyTorch's (x < -3: 0, x <= 3: x/3 + 1/2,
    else 1), mish 1 above 20 (where mish is x)."""
    x = np.asarray(x, np.float64)
    a = np.float32(0.1) if alpha is None else np.float32(alpha)
    with np.errstate(all="ignore"):

        def logistic(v):
            return 1.0 / (1.0 + np.exp(-v))

        def gelu():
            u = 0.797885 * x + 0.035677 * x**3
            s, sc = logistic(2 * u), logistic(-2 * u)
            return s + 2 * x * s * sc * (0.797885 + 3 * 0.035677 * x * x)

        def mish():
            sp = np.logaddexp(0.0, x)
            t = np.tanh(sp)
            return np.where(x > 20, 1.0, t + x * (1 - t * t) * logistic(x))

        return {
            "linear": lambda: np.ones_like(x),
            "leaky": lambda: np.where(x > 0, 1.0, float(a)),
            "relu": lambda: (x > 0).astype(np.float64),
            "relu6": lambda: ((x > 0) & (x < 6)).astype(np.float64),
            "logistic": lambda: logistic(x) * logistic(-x),
            "tanh": lambda: 1 - np.tanh(x) ** 2,
            "elu": lambda: np.where(x >= 0, 1.0, np.exp(x)),
            "selu": lambda: np.where(x >= 0, SELU_A, SELU_L * np.exp(x)),
            "gelu": gelu,
            "swish": lambda: logistic(x) + x * logistic(x) * logistic(-x),
            "mish": mish,
            "hard_mish": lambda: np.where(x > 0, 1.0, np.where(x > -2, x + 1, 0.0)),
            "hardswish": lambda: np.where(x < -3, 0.0, np.where(x <= 3, x / 3 + 0.5, 1.0)),
            "gelu_erf": lambda: _erfc(-x / math.sqrt(2)) / 2 + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi),
        }[name]()
