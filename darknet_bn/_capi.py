"""The one module that touches the compiled library (cffi ``ffi``/``lib`` of ``darknet_bn._dbn``).

Everything else in darknet_bn reaches C through the names here:

- ``ffi``, ``lib``: the cffi binding (``csrc/darknet_bn.h`` declares what ``lib`` holds);
- :data:`EXEC`: the process-wide ``dbn_exec *`` (threads, instruction set) passed to every call, set by
  :func:`set_num_threads` / :func:`set_isa`; C keeps no state of its own. Results do not depend on the
  thread count (the work is split by shape only);
- the argument checks of the Python boundary: :func:`as_int`, :func:`as_size`, :func:`dims`,
  :func:`check_buffer` (a numpy float32 array -> a cffi ``float[]`` over its memory, no copy),
  :func:`explain_buffer` (the error that says why an array is not one), :func:`check_no_overlap`;
- :func:`c_flavor`: a :class:`~darknet_bn.flavors.Flavor` as the ``dbn_flavor`` struct C reads;
- :data:`ACTIVATIONS` and :func:`c_act`: an activation's name (and leaky's slope) as the ``dbn_act *``
  C reads.

Imports nothing of darknet_bn but :mod:`darknet_bn.flavors` (data).
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
from .flavors import Flavor

__all__ = [
    "ffi",
    "lib",
    "EXEC",
    "ISAS",
    "F32",
    "INT64_MAX",
    "set_num_threads",
    "get_num_threads",
    "has_openmp",
    "set_isa",
    "get_isa",
    "as_int",
    "as_size",
    "dims",
    "check_buffer",
    "explain_buffer",
    "check_no_overlap",
    "c_flavor",
    "ACTIVATIONS",
    "LEAKY_ALPHA",
    "c_act",
]

F32 = np.dtype(np.float32)
INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------------------------
# How C runs: one process-wide dbn_exec (threads, instruction set), passed to every call.
EXEC = ffi.new("dbn_exec *", {"nthreads": 0, "isa": 0})

ISAS = {"baseline": 1, "avx2": 2, "avx512": 3}
_ISA_NAMES = {v: k for k, v in ISAS.items()}


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the kernels use; ``None`` or 0 restores the default
    (``OMP_NUM_THREADS``, else the number of cores). Without OpenMP the kernels use one thread."""
    n = 0 if n is None else as_int("n", n)
    if n < 0:
        raise ValueError(f"n: expected a thread count >= 0 (0 = default), got {n}")
    EXEC.nthreads = min(n, 2**31 - 1)


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return (EXEC.nthreads or lib.dbn_max_threads()) if has_openmp() else 1


def has_openmp() -> bool:
    """Whether the C kernels were built with OpenMP."""
    return bool(lib.dbn_has_openmp())


def set_isa(isa: str | None) -> None:
    """Cap the instruction set the kernels use: ``"avx512"``, ``"avx2"``, ``"baseline"``, or ``None`` for
    the best this CPU has (the default). A cap above what the CPU has means what the CPU has."""
    if isa is None:
        EXEC.isa = 0
    elif isa in ISAS:
        EXEC.isa = ISAS[isa]
    else:
        raise ValueError(f"isa: expected one of {sorted(ISAS)} or None, got {isa!r}")


def get_isa() -> str:
    """The instruction set the kernels use now (``"avx512"``, ``"avx2"`` or ``"baseline"``)."""
    return _ISA_NAMES[lib.dbn_isa_selected(EXEC)]


# ------------------------------------------------------------------------------------------------
# Argument checks. The fast path is a few attribute reads; the slow path explains the failure.


def as_int(name: str, v: Any) -> int:
    """v as a Python int: ints and numpy integers, not bools, not floats (TypeError otherwise)."""
    if type(v) is int:
        return v
    if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    return operator.index(v)


def as_size(name: str, v: Any) -> int:
    """A size argument: an int in [0, 2**63) (TypeError: not an int; ValueError: out of range)."""
    v = as_int(name, v)
    if v < 0 or v > INT64_MAX:
        raise ValueError(f"{name}: expected a size >= 0 (and < 2**63), got {v}")
    return v


def explain_buffer(name: str, a: Any, n: int, what: str, writable: bool) -> None:
    """Raise the error that says why ``a`` is not a usable float32 buffer of n elements (call it only
    when :func:`check_buffer`'s conditions fail)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of float32, got {type(a).__name__}")
    if a.dtype != F32:
        swapped = a.dtype.kind == "f" and a.dtype.itemsize == 4
        raise TypeError(
            f"{name}: expected dtype float32 (native byte order), got {a.dtype.str} ({a.dtype})"
            + (", byte-swapped (a.astype(np.float32) makes a native copy)" if swapped else "")
        )
    if a.size != n:
        raise ValueError(f"{name}: expected {n} float32 elements ({what}), got {a.size} (shape {a.shape})")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{name}: expected a C-contiguous array, got strides {a.strides} for shape {a.shape}"
            " (np.ascontiguousarray makes a contiguous copy)"
        )
    if not a.flags.aligned:
        raise ValueError(
            f"{name}: expected an aligned float32 array (address % 4 == 0), got address offset "
            f"{a.ctypes.data % 4} (a.copy() makes an aligned copy)"
        )
    if writable and not a.flags.writeable:
        raise ValueError(f"{name}: this argument is written, but the array is read-only")
    raise AssertionError("unreachable")  # pragma: no cover


def check_buffer(name: str, a: Any, n: int, what: str, writable: bool = False) -> Any:
    """A cffi ``float[]`` over a's memory (no copy), after checking a holds n native float32 values in C
    order at an address C may hold as a ``float *`` (4-byte aligned: anything else is undefined
    behaviour), writable when ``writable``. ``what`` says what n is, for the error message."""
    if (
        isinstance(a, np.ndarray)
        and a.dtype == F32
        and a.size == n
        and (fl := a.flags).c_contiguous
        and fl.aligned
        and (fl.writeable or not writable)
    ):
        return ffi.from_buffer("float[]", a)
    explain_buffer(name, a, n, what, writable)


def check_no_overlap(out_name: str, out: np.ndarray, **others: np.ndarray) -> None:
    """An output array must not share memory with another argument (the C code assumes so)."""
    for name, other in others.items():
        if out.size and other.size and np.may_share_memory(out, other):
            raise ValueError(f"{out_name}: shares memory with {name}; an output must not overlap another argument")


def dims(
    batch: Any, filters: Any, spatial: Any, names: tuple[str, str, str] = ("batch", "filters", "spatial")
) -> tuple[int, int, int, int, str]:
    """Three size arguments checked: (b, f, s, b*f*s, a text saying what b*f*s is for error messages)."""
    b, f, s = as_size(names[0], batch), as_size(names[1], filters), as_size(names[2], spatial)
    n = b * f * s
    if n > INT64_MAX:
        raise ValueError(f"{names[0]}*{names[1]}*{names[2]} = {n} is not a possible array size")
    what = f"{names[0]}*{names[1]}*{names[2]} = {b}*{f}*{s}"
    return b, f, s, n, what


# ------------------------------------------------------------------------------------------------
# Flavors as C reads them.

_C_FLAVORS: dict[Flavor, Any] = {}


def c_flavor(fl: Flavor) -> Any:
    """The ``dbn_flavor *`` struct for a Flavor (made once per distinct flavor, kept alive here)."""
    cd = _C_FLAVORS.get(fl)
    if cd is None:
        cd = ffi.new(
            "dbn_flavor *",
            {
                "momentum": fl.momentum,
                "eps": fl.eps,
                "eps_in_sqrt": fl.eps_in_sqrt,
                "unbiased": fl.unbiased,
                "bwd_eps": fl.bwd_eps,
                "bwd_eps_in_sqrt": fl.bwd_eps_in_sqrt,
                "stat_eps": fl.stat_eps,
            },
        )
        _C_FLAVORS[fl] = cd
    return cd


# ------------------------------------------------------------------------------------------------
# Activations as C reads them (csrc/darknet_bn.h, enum dbn_activation).

#: The activations the passes apply (forward) and differentiate (backward) in the same passes: Darknet's
#: (AlexeyAB's src/activations.h) and PyTorch's ``hardswish`` (``torch.nn.Hardswish``) and ``gelu_erf``
#: (``torch.nn.GELU()``, the exact erf form; Darknet's ``gelu`` is the tanh approximation).
ACTIVATIONS = {
    name: i
    for i, name in enumerate(
        (
            "linear",
            "leaky",
            "relu",
            "relu6",
            "logistic",
            "tanh",
            "elu",
            "selu",
            "gelu",
            "swish",
            "mish",
            "hard_mish",
            "hardswish",
            "gelu_erf",
        )
    )
}

#: Darknet's leaky slope (``.1f``).
LEAKY_ALPHA = float(np.float32(0.1))

# name -> dbn_act * with Darknet's constants (None and "linear": NULL, which C reads as linear).
_ACTS: dict[Any, Any] = {None: ffi.NULL, "linear": ffi.NULL}
for _name, _kind in ACTIVATIONS.items():
    if _kind:
        _ACTS[_name] = ffi.new("dbn_act *", {"kind": _kind, "alpha": LEAKY_ALPHA})
_ACTS_ALPHA: dict[float, Any] = {}


def c_act(activation: Any, alpha: Any = None) -> Any:
    """The ``dbn_act *`` for an activation name of :data:`ACTIVATIONS` (``None``: linear, NULL) and, for
    ``"leaky"`` only, its negative slope ``alpha`` (a finite real; ``None``: Darknet's 0.1). The structs are
    made once and kept here. TypeError: not a str / not a real; ValueError: an unknown name, a non-finite
    alpha, or alpha with another activation."""
    if alpha is None:
        try:
            return _ACTS[activation]
        except (KeyError, TypeError):
            pass
    if activation is not None and not isinstance(activation, str):
        raise TypeError(
            f"activation: expected a str (one of {', '.join(ACTIVATIONS)}) or None, got {type(activation).__name__}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)} or None, got {activation!r}")
    if activation != "leaky":
        raise ValueError(f"alpha: the negative slope of 'leaky' only, got alpha={alpha!r} with {activation!r}")
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha: expected a real number, got {type(alpha).__name__} {alpha!r}")
    a = float(np.float32(alpha))
    if not np.isfinite(a):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}")
    p = _ACTS_ALPHA.get(a)
    if p is None:
        if len(_ACTS_ALPHA) >= 256:
            _ACTS_ALPHA.clear()
        p = _ACTS_ALPHA[a] = ffi.new("dbn_act *", {"kind": ACTIVATIONS["leaky"], "alpha": a})
    return p
