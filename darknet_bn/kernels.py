"""Darknet's batch-normalization kernels on numpy arrays: the Python face of ``csrc/``.

Every function takes Darknet's arguments in Darknet's order and writes its outputs into the arrays
given: no copies. Tensors are float32 (native byte order), C-contiguous, aligned (address % 4 == 0), NCHW:
a tensor argument holds
``batch*filters*spatial`` elements (any shape), element ``(b, f, s)`` at flat index
``(b*filters + f)*spatial + s`` with ``spatial = h*w``; per-channel arguments hold ``filters`` elements.
Arguments are checked before C runs: anything else raises ``TypeError`` (not an ndarray, not float32,
byte-swapped float32, not an int) or ``ValueError`` (wrong size, negative size, not C-contiguous, not
aligned -- e.g. ``np.frombuffer(buf, np.float32, offset=1)`` --, read-only where written, an output sharing
memory with another argument), naming the argument, what was expected and what came. Nothing is copied
to make an argument fit: ``a.copy()`` gives a native, aligned, C-contiguous array.

Where Darknet's two forks differ (the eps of ``normalize_cpu`` and ``normalize_delta_cpu``), the
``flavor`` keyword picks the variant (see :mod:`darknet_bn.flavors`).

The C calls release the GIL. The number of OpenMP threads they use is :func:`get_num_threads`; the
instruction set, :func:`get_isa` (both set process-wide, in :mod:`darknet_bn._capi`, re-exported here).
"""

from __future__ import annotations

import numpy as np

from ._capi import (
    ACTIVATIONS,
    EXEC,
    ISAS,
    as_size,
    c_act,
    check_buffer,
    check_no_overlap,
    dims,
    get_isa,
    get_num_threads,
    has_openmp,
    lib,
    set_isa,
    set_num_threads,
)
from .flavors import Flavor, get_flavor

__all__ = [
    "mean_cpu",
    "variance_cpu",
    "normalize_cpu",
    "scale_bias",
    "add_bias",
    "backward_bias",
    "backward_scale_cpu",
    "mean_delta_cpu",
    "variance_delta_cpu",
    "normalize_delta_cpu",
    "activate_array",
    "gradient_array",
    "ACTIVATIONS",
    "set_num_threads",
    "get_num_threads",
    "has_openmp",
    "set_isa",
    "get_isa",
    "ISAS",
]


def _eps_of(flavor: str | Flavor, backward: bool):
    fl = get_flavor(flavor)
    return (fl.bwd_eps, fl.bwd_eps_in_sqrt) if backward else (fl.eps, fl.eps_in_sqrt)


# ------------------------------------------------------------------------------------------------
# The kernels, in Darknet's argument order.


def mean_cpu(x: np.ndarray, batch: int, filters: int, spatial: int, mean: np.ndarray) -> None:
    """Per-channel mean. x: [batch, filters, spatial] float32; writes mean: [filters] float32.

    ``mean[f] = sum(x[:, f, :]) / (batch*spatial)``, accumulated in double (NaN when batch*spatial = 0).
    """
    b, f, s, n, what = dims(batch, filters, spatial)
    px = check_buffer("x", x, n, what)
    pm = check_buffer("mean", mean, f, "filters", True)
    check_no_overlap("mean", mean, x=x)
    lib.mean_cpu(px, b, f, s, pm, EXEC)


def variance_cpu(x: np.ndarray, mean: np.ndarray, batch: int, filters: int, spatial: int, variance: np.ndarray) -> None:
    """Per-channel unbiased variance around ``mean``. x: [batch, filters, spatial]; mean: [filters];
    writes variance: [filters] float32.

    ``variance[f] = sum((x[:, f, :] - mean[f])**2) / (batch*spatial - 1)`` in double, as Darknet divides
    by N-1 (NaN when batch*spatial < 2).
    """
    b, f, s, n, what = dims(batch, filters, spatial)
    px = check_buffer("x", x, n, what)
    pm = check_buffer("mean", mean, f, "filters")
    pv = check_buffer("variance", variance, f, "filters", True)
    check_no_overlap("variance", variance, x=x, mean=mean)
    lib.variance_cpu(px, pm, b, f, s, pv, EXEC)


def normalize_cpu(
    x: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    batch: int,
    filters: int,
    spatial: int,
    *,
    flavor: str | Flavor = "pjreddie",
) -> None:
    """Normalize x in place. x: [batch, filters, spatial]; mean, variance: [filters].

    ``x = (x - mean) / (sqrt(variance) + 1e-6)`` (pjreddie) or ``(x - mean) / sqrt(variance + 1e-5)``
    (alexeyab, torch): the flavor's forward denominator.
    """
    b, f, s, n, what = dims(batch, filters, spatial)
    eps, in_sqrt = _eps_of(flavor, backward=False)
    px = check_buffer("x", x, n, what, True)
    pm = check_buffer("mean", mean, f, "filters")
    pv = check_buffer("variance", variance, f, "filters")
    check_no_overlap("x", x, mean=mean, variance=variance)
    lib.normalize_cpu(px, pm, pv, b, f, s, eps, in_sqrt, EXEC)


def scale_bias(output: np.ndarray, scales: np.ndarray, batch: int, n: int, size: int) -> None:
    """Multiply in place. output: [batch, n, size]; scales: [n]. ``output *= scales`` per channel."""
    b, f, s, cnt, what = dims(batch, n, size, ("batch", "n", "size"))
    po = check_buffer("output", output, cnt, what, True)
    ps = check_buffer("scales", scales, f, "n")
    check_no_overlap("output", output, scales=scales)
    lib.scale_bias(po, ps, b, f, s, EXEC)


def add_bias(output: np.ndarray, biases: np.ndarray, batch: int, n: int, size: int) -> None:
    """Add in place. output: [batch, n, size]; biases: [n]. ``output += biases`` per channel."""
    b, f, s, cnt, what = dims(batch, n, size, ("batch", "n", "size"))
    po = check_buffer("output", output, cnt, what, True)
    pb = check_buffer("biases", biases, f, "n")
    check_no_overlap("output", output, biases=biases)
    lib.add_bias(po, pb, b, f, s, EXEC)


def backward_bias(bias_updates: np.ndarray, delta: np.ndarray, batch: int, n: int, size: int) -> None:
    """Accumulate bias gradients. delta: [batch, n, size]; ``bias_updates[f] += sum(delta[:, f, :])``
    (adds into bias_updates: [n], as Darknet)."""
    b, f, s, cnt, what = dims(batch, n, size, ("batch", "n", "size"))
    pu = check_buffer("bias_updates", bias_updates, f, "n", True)
    pd = check_buffer("delta", delta, cnt, what)
    check_no_overlap("bias_updates", bias_updates, delta=delta)
    lib.backward_bias(pu, pd, b, f, s, EXEC)


def backward_scale_cpu(
    x_norm: np.ndarray, delta: np.ndarray, batch: int, n: int, size: int, scale_updates: np.ndarray
) -> None:
    """Accumulate scale gradients. x_norm, delta: [batch, n, size];
    ``scale_updates[f] += sum(delta * x_norm)`` over channel f (adds into scale_updates: [n])."""
    b, f, s, cnt, what = dims(batch, n, size, ("batch", "n", "size"))
    px = check_buffer("x_norm", x_norm, cnt, what)
    pd = check_buffer("delta", delta, cnt, what)
    pu = check_buffer("scale_updates", scale_updates, f, "n", True)
    check_no_overlap("scale_updates", scale_updates, x_norm=x_norm, delta=delta)
    lib.backward_scale_cpu(px, pd, b, f, s, pu, EXEC)


def mean_delta_cpu(
    delta: np.ndarray, variance: np.ndarray, batch: int, filters: int, spatial: int, mean_delta: np.ndarray
) -> None:
    """Delta of the batch mean. delta: [batch, filters, spatial]; variance: [filters];
    writes ``mean_delta = -sum(delta) / sqrt(variance + 1e-5)``: [filters] (every fork)."""
    b, f, s, n, what = dims(batch, filters, spatial)
    pd = check_buffer("delta", delta, n, what)
    pv = check_buffer("variance", variance, f, "filters")
    pm = check_buffer("mean_delta", mean_delta, f, "filters", True)
    check_no_overlap("mean_delta", mean_delta, delta=delta, variance=variance)
    lib.mean_delta_cpu(pd, pv, b, f, s, pm, EXEC)


def variance_delta_cpu(
    x: np.ndarray,
    delta: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    batch: int,
    filters: int,
    spatial: int,
    variance_delta: np.ndarray,
) -> None:
    """Delta of the batch variance. x, delta: [batch, filters, spatial]; mean, variance: [filters];
    writes ``variance_delta = sum(delta*(x - mean)) * -1/2 * (variance + 1e-5)**-1.5``: [filters]."""
    b, f, s, n, what = dims(batch, filters, spatial)
    px = check_buffer("x", x, n, what)
    pd = check_buffer("delta", delta, n, what)
    pm = check_buffer("mean", mean, f, "filters")
    pv = check_buffer("variance", variance, f, "filters")
    pvd = check_buffer("variance_delta", variance_delta, f, "filters", True)
    check_no_overlap("variance_delta", variance_delta, x=x, delta=delta, mean=mean, variance=variance)
    lib.variance_delta_cpu(px, pd, pm, pv, b, f, s, pvd, EXEC)


def normalize_delta_cpu(
    x: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    mean_delta: np.ndarray,
    variance_delta: np.ndarray,
    batch: int,
    filters: int,
    spatial: int,
    delta: np.ndarray,
    *,
    flavor: str | Flavor = "pjreddie",
) -> None:
    """The input's delta, in place in delta: [batch, filters, spatial]; x the same shape; the rest
    [filters]. With N = batch*spatial:
    ``delta = delta / D + variance_delta * 2 * (x - mean) / N + mean_delta / N`` where D is
    ``sqrt(variance + 1e-5)`` (pjreddie, torch) or ``sqrt(variance) + 1e-5`` (alexeyab)."""
    b, f, s, n, what = dims(batch, filters, spatial)
    eps, in_sqrt = _eps_of(flavor, backward=True)
    px = check_buffer("x", x, n, what)
    pm = check_buffer("mean", mean, f, "filters")
    pv = check_buffer("variance", variance, f, "filters")
    pmd = check_buffer("mean_delta", mean_delta, f, "filters")
    pvd = check_buffer("variance_delta", variance_delta, f, "filters")
    pd = check_buffer("delta", delta, n, what, True)
    check_no_overlap(
        "delta", delta, x=x, mean=mean, variance=variance, mean_delta=mean_delta, variance_delta=variance_delta
    )
    lib.normalize_delta_cpu(px, pm, pv, pmd, pvd, b, f, s, pd, eps, in_sqrt, EXEC)


# ------------------------------------------------------------------------------------------------
# Activations (Darknet's src/activations.c), vectorized and threaded.


def activate_array(x: np.ndarray, n: int, a: str, *, alpha: float | None = None) -> None:
    """Darknet's ``activate_array``: ``x = a(x)`` in place over the n float32 values of x.

    a: a name of :data:`ACTIVATIONS` (Darknet's definitions; ``"hardswish"`` and ``"gelu_erf"`` are
    PyTorch's). alpha: ``"leaky"``'s negative slope (default Darknet's 0.1).
    """
    cnt = as_size("n", n)
    act = c_act(a, alpha)
    px = check_buffer("x", x, cnt, "n", True)
    lib.activate_array(px, cnt, act, EXEC)


def gradient_array(x: np.ndarray, n: int, a: str, delta: np.ndarray, *, alpha: float | None = None) -> None:
    """Darknet's ``gradient_array``: ``delta *= a'`` over n float32 values, in place in delta.

    x is what Darknet gives its gradient: the activation's OUTPUT for ``linear``, ``leaky``, ``relu``,
    ``relu6``, ``logistic``, ``tanh``, ``elu`` and ``selu`` (Darknet's ``gradient_array(l.output, ...)``),
    and its INPUT for ``gelu``, ``swish``, ``mish``, ``hard_mish``, ``hardswish`` and ``gelu_erf`` (where
    Darknet keeps the input, or -- gelu -- where its derivative of the output is wrong; docs/backward.md).
    ``"leaky"`` from the output needs alpha >= 0 (ValueError otherwise). delta must not overlap x.
    """
    cnt = as_size("n", n)
    act = c_act(a, alpha)
    if alpha is not None and act.alpha < 0:
        raise ValueError(
            f"alpha: gradient_array reads leaky's derivative from the output, which needs alpha >= 0, got {alpha!r}"
        )
    px = check_buffer("x", x, cnt, "n")
    pd = check_buffer("delta", delta, cnt, "n", True)
    check_no_overlap("delta", delta, x=x)
    lib.gradient_array(px, cnt, act, pd, EXEC)
