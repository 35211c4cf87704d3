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

The C calls release the GIL. The number of OpenMP threads they use is :func:`get_num_threads`; the instruction set, :func:`get_isa`.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

try:
    from ._dbn import ffi, lib
except ImportError as e:  # pragma: no cover - an install problem, not a code path
    raise ImportError(
        f"darknet_bn's compiled kernels (darknet_bn._dbn) are missing: {e}. Build them with "
        "`pip install .` (or `pip install -e .`); when running from a source checkout, do not let the "
        "checkout's darknet_bn/ directory shadow the installed package (run pytest, not python -m pytest)."
    ) from e
from .flavors import Flavor, get_flavor

__all__ = [
    "mean_cpu", "variance_cpu", "normalize_cpu", "scale_bias", "add_bias", "backward_bias",
    "backward_scale_cpu", "mean_delta_cpu", "variance_delta_cpu", "normalize_delta_cpu",
    "set_num_threads", "get_num_threads", "has_openmp", "set_isa", "get_isa", "ISAS",
]

_F32 = np.dtype(np.float32)
_INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------------------------
# How C runs: one process-wide dbn_exec (threads, instruction set), passed to every call; C keeps no
# state of its own. Results do not depend on the thread count (the work is split by shape only).
_exec = ffi.new("dbn_exec *", {"nthreads": 0, "isa": 0})

ISAS = {"baseline": 1, "avx2": 2, "avx512": 3}
_ISA_NAMES = {v: k for k, v in ISAS.items()}


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the kernels use; ``None`` or 0 restores the default
    (``OMP_NUM_THREADS``, else the number of cores). Without OpenMP the kernels use one thread."""
    n = 0 if n is None else _int("n", n)
    if n < 0:
        raise ValueError(f"n: expected a thread count >= 0 (0 = default), got {n}")
    _exec.nthreads = min(n, 2**31 - 1)


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return (_exec.nthreads or lib.dbn_max_threads()) if has_openmp() else 1


def has_openmp() -> bool:
    """Whether the C kernels were built with OpenMP."""
    return bool(lib.dbn_has_openmp())


def set_isa(isa: str | None) -> None:
    """Cap the instruction set the kernels use: ``"avx512"``, ``"avx2"``, ``"baseline"``, or ``None`` for
    the best this CPU has (the default). A cap above what the CPU has means what the CPU has."""
    if isa is None:
        _exec.isa = 0
    elif isa in ISAS:
        _exec.isa = ISAS[isa]
    else:
        raise ValueError(f"isa: expected one of {sorted(ISAS)} or None, got {isa!r}")


def get_isa() -> str:
    """The instruction set the kernels use now (``"avx512"``, ``"avx2"`` or ``"baseline"``)."""
    return _ISA_NAMES[lib.dbn_isa_selected(_exec)]


# ------------------------------------------------------------------------------------------------
# Argument checks. The fast path is a few attribute reads; the slow path explains the failure.

def _int(name: str, v: Any) -> int:
    """v as a Python int: ints and numpy integers, not bools, not floats."""
    if type(v) is int:
        return v
    if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    return operator.index(v)


def _size(name: str, v: Any) -> int:
    """A size argument: an int in [0, 2**63)."""
    v = _int(name, v)
    if v < 0 or v > _INT64_MAX:
        raise ValueError(f"{name}: expected a size >= 0 (and < 2**63), got {v}")
    return v


def _explain(name: str, a: Any, n: int, what: str, writable: bool) -> None:
    """Raise the error that says why ``a`` is not a usable float32 buffer of n elements."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of float32, got {type(a).__name__}")
    if a.dtype != _F32:
        swapped = a.dtype.kind == "f" and a.dtype.itemsize == 4
        raise TypeError(f"{name}: expected dtype float32 (native byte order), got {a.dtype.str} ({a.dtype})"
                        + (", byte-swapped (a.astype(np.float32) makes a native copy)" if swapped else ""))
    if a.size != n:
        raise ValueError(f"{name}: expected {n} float32 elements ({what}), got {a.size} (shape {a.shape})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides} for shape {a.shape}"
                         " (np.ascontiguousarray makes a contiguous copy)")
    if not a.flags.aligned:
        raise ValueError(f"{name}: expected an aligned float32 array (address % 4 == 0), got address offset "
                         f"{a.ctypes.data % 4} (a.copy() makes an aligned copy)")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name}: this argument is written, but the array is read-only")
    raise AssertionError("unreachable")  # pragma: no cover


def _buf(name: str, a: Any, n: int, what: str, writable: bool = False):
    """A cffi ``float[]`` over a's memory (no copy), after checking a holds n native float32 values in C
    order at an address C may hold as a ``float *`` (4-byte aligned: anything else is undefined behaviour)."""
    if (isinstance(a, np.ndarray) and a.dtype == _F32 and a.size == n and (fl := a.flags).c_contiguous
            and fl.aligned and (fl.writeable or not writable)):
        return ffi.from_buffer("float[]", a)
    _explain(name, a, n, what, writable)


def _no_overlap(out_name: str, out: np.ndarray, **others: np.ndarray) -> None:
    """An output array must not share memory with another argument (the C code assumes so)."""
    for name, other in others.items():
        if out.size and other.size and np.may_share_memory(out, other):
            raise ValueError(f"{out_name}: shares memory with {name}; an output must not overlap another argument")


def _dims(batch: Any, filters: Any, spatial: Any, names=("batch", "filters", "spatial")):
    b, f, s = _size(names[0], batch), _size(names[1], filters), _size(names[2], spatial)
    n = b * f * s
    if n > _INT64_MAX:
        raise ValueError(f"{names[0]}*{names[1]}*{names[2]} = {n} is not a possible array size")
    what = f"{names[0]}*{names[1]}*{names[2]} = {b}*{f}*{s}"
    return b, f, s, n, what


def _eps_of(flavor: str | Flavor, backward: bool):
    fl = get_flavor(flavor)
    return (fl.bwd_eps, fl.bwd_eps_in_sqrt) if backward else (fl.eps, fl.eps_in_sqrt)


# ------------------------------------------------------------------------------------------------
# The kernels, in Darknet's argument order.

def mean_cpu(x: np.ndarray, batch: int, filters: int, spatial: int, mean: np.ndarray) -> None:
    """Per-channel mean. x: [batch, filters, spatial] float32; writes mean: [filters] float32.

    ``mean[f] = sum(x[:, f, :]) / (batch*spatial)``, accumulated in double (NaN when batch*spatial = 0).
    """
    b, f, s, n, what = _dims(batch, filters, spatial)
    px = _buf("x", x, n, what)
    pm = _buf("mean", mean, f, "filters", True)
    _no_overlap("mean", mean, x=x)
    lib.mean_cpu(px, b, f, s, pm, _exec)


def variance_cpu(x: np.ndarray, mean: np.ndarray, batch: int, filters: int, spatial: int,
                 variance: np.ndarray) -> None:
    """Per-channel unbiased variance around ``mean``. x: [batch, filters, spatial]; mean: [filters];
    writes variance: [filters] float32.

    ``variance[f] = sum((x[:, f, :] - mean[f])**2) / (batch*spatial - 1)`` in double, as Darknet divides
    by N-1 (NaN when batch*spatial < 2).
    """
    b, f, s, n, what = _dims(batch, filters, spatial)
    px = _buf("x", x, n, what)
    pm = _buf("mean", mean, f, "filters")
    pv = _buf("variance", variance, f, "filters", True)
    _no_overlap("variance", variance, x=x, mean=mean)
    lib.variance_cpu(px, pm, b, f, s, pv, _exec)


def normalize_cpu(x: np.ndarray, mean: np.ndarray, variance: np.ndarray, batch: int, filters: int,
                  spatial: int, *, flavor: str | Flavor = "pjreddie") -> None:
    """Normalize x in place. x: [batch, filters, spatial]; mean, variance: [filters].

    ``x = (x - mean) / (sqrt(variance) + 1e-6)`` (pjreddie) or ``(x - mean) / sqrt(variance + 1e-5)``
    (alexeyab, torch): the flavor's forward denominator.
    """
    b, f, s, n, what = _dims(batch, filters, spatial)
    eps, in_sqrt = _eps_of(flavor, backward=False)
    px = _buf("x", x, n, what, True)
    pm = _buf("mean", mean, f, "filters")
    pv = _buf("variance", variance, f, "filters")
    _no_overlap("x", x, mean=mean, variance=variance)
    lib.normalize_cpu(px, pm, pv, b, f, s, eps, in_sqrt, _exec)


def scale_bias(output: np.ndarray, scales: np.ndarray, batch: int, n: int, size: int) -> None:
    """Multiply in place. output: [batch, n, size]; scales: [n]. ``output *= scales`` per channel."""
    b, f, s, cnt, what = _dims(batch, n, size, ("batch", "n", "size"))
    po = _buf("output", output, cnt, what, True)
    ps = _buf("scales", scales, f, "n")
    _no_overlap("output", output, scales=scales)
    lib.scale_bias(po, ps, b, f, s, _exec)


def add_bias(output: np.ndarray, biases: np.ndarray, batch: int, n: int, size: int) -> None:
    """Add in place. output: [batch, n, size]; biases: [n]. ``output += biases`` per channel."""
    b, f, s, cnt, what = _dims(batch, n, size, ("batch", "n", "size"))
    po = _buf("output", output, cnt, what, True)
    pb = _buf("biases", biases, f, "n")
    _no_overlap("output", output, biases=biases)
    lib.add_bias(po, pb, b, f, s, _exec)


def backward_bias(bias_updates: np.ndarray, delta: np.ndarray, batch: int, n: int, size: int) -> None:
    """Accumulate bias gradients. delta: [batch, n, size]; ``bias_updates[f] += sum(delta[:, f, :])``
    (adds into bias_updates: [n], as Darknet)."""
    b, f, s, cnt, what = _dims(batch, n, size, ("batch", "n", "size"))
    pu = _buf("bias_updates", bias_updates, f, "n", True)
    pd = _buf("delta", delta, cnt, what)
    _no_overlap("bias_updates", bias_updates, delta=delta)
    lib.backward_bias(pu, pd, b, f, s, _exec)


def backward_scale_cpu(x_norm: np.ndarray, delta: np.ndarray, batch: int, n: int, size: int,
                       scale_updates: np.ndarray) -> None:
    """Accumulate scale gradients. x_norm, delta: [batch, n, size];
    ``scale_updates[f] += sum(delta * x_norm)`` over channel f (adds into scale_updates: [n])."""
    b, f, s, cnt, what = _dims(batch, n, size, ("batch", "n", "size"))
    px = _buf("x_norm", x_norm, cnt, what)
    pd = _buf("delta", delta, cnt, what)
    pu = _buf("scale_updates", scale_updates, f, "n", True)
    _no_overlap("scale_updates", scale_updates, x_norm=x_norm, delta=delta)
    lib.backward_scale_cpu(px, pd, b, f, s, pu, _exec)


def mean_delta_cpu(delta: np.ndarray, variance: np.ndarray, batch: int, filters: int, spatial: int,
                   mean_delta: np.ndarray) -> None:
    """Delta of the batch mean. delta: [batch, filters, spatial]; variance: [filters];
    writes ``mean_delta = -sum(delta) / sqrt(variance + 1e-5)``: [filters] (every fork)."""
    b, f, s, n, what = _dims(batch, filters, spatial)
    pd = _buf("delta", delta, n, what)
    pv = _buf("variance", variance, f, "filters")
    pm = _buf("mean_delta", mean_delta, f, "filters", True)
    _no_overlap("mean_delta", mean_delta, delta=delta, variance=variance)
    lib.mean_delta_cpu(pd, pv, b, f, s, pm, _exec)


def variance_delta_cpu(x: np.ndarray, delta: np.ndarray, mean: np.ndarray, variance: np.ndarray,
                       batch: int, filters: int, spatial: int, variance_delta: np.ndarray) -> None:
    """Delta of the batch variance. x, delta: [batch, filters, spatial]; mean, variance: [filters];
    writes ``variance_delta = sum(delta*(x - mean)) * -1/2 * (variance + 1e-5)**-1.5``: [filters]."""
    b, f, s, n, what = _dims(batch, filters, spatial)
    px = _buf("x", x, n, what)
    pd = _buf("delta", delta, n, what)
    pm = _buf("mean", mean, f, "filters")
    pv = _buf("variance", variance, f, "filters")
    pvd = _buf("variance_delta", variance_delta, f, "filters", True)
    _no_overlap("variance_delta", variance_delta, x=x, delta=delta, mean=mean, variance=variance)
    lib.variance_delta_cpu(px, pd, pm, pv, b, f, s, pvd, _exec)


def normalize_delta_cpu(x: np.ndarray, mean: np.ndarray, variance: np.ndarray, mean_delta: np.ndarray,
                        variance_delta: np.ndarray, batch: int, filters: int, spatial: int,
                        delta: np.ndarray, *, flavor: str | Flavor = "pjreddie") -> None:
    """The input's delta, in place in delta: [batch, filters, spatial]; x the same shape; the rest
    [filters]. With N = batch*spatial:
    ``delta = delta / D + variance_delta * 2 * (x - mean) / N + mean_delta / N`` where D is
    ``sqrt(variance + 1e-5)`` (pjreddie, torch) or ``sqrt(variance) + 1e-5`` (alexeyab)."""
    b, f, s, n, what = _dims(batch, filters, spatial)
    eps, in_sqrt = _eps_of(flavor, backward=True)
    px = _buf("x", x, n, what)
    pm = _buf("mean", mean, f, "filters")
    pv = _buf("variance", variance, f, "filters")
    pmd = _buf("mean_delta", mean_delta, f, "filters")
    pvd = _buf("variance_delta", variance_delta, f, "filters")
    pd = _buf("delta", delta, n, what, True)
    _no_overlap("delta", delta, x=x, mean=mean, variance=variance, mean_delta=mean_delta,
                variance_delta=variance_delta)
    lib.normalize_delta_cpu(px, pm, pv, pmd, pvd, b, f, s, pd, eps, in_sqrt, _exec)
