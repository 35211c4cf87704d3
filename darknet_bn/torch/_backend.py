"""The one place where darknet_bn.torch touches darknet_bn's internals (cffi ``ffi``/``lib``, the
process-wide ``dbn_exec``). Everything else in this package calls the three passes below with
tensor data pointers (ints, from ``Tensor.data_ptr()``) and sizes; re-pointing the package at
another binding layer is an edit of this file only.

The passes trust their arguments (the callers in ``functional.py`` have checked dtype, device,
layout and sizes). They run the fused whole-layer passes of ``csrc/fused.c`` with PyTorch's
semantics (the "torch" flavor with the call's eps and momentum); the C calls release the GIL.

Threads: each call runs ``torch.get_num_threads()`` OpenMP threads unless :func:`set_num_threads`
(of this package) or :func:`darknet_bn.set_num_threads` fixed a count.
"""

from __future__ import annotations

import functools

import torch

from .._capi import EXEC as _numpy_exec  # the numpy side's settings (threads, instruction set)
from .._capi import ffi, lib  # one libgomp in the process whichever loads first (both name libgomp.so.1)

__all__ = [
    "forward_train",
    "forward_infer",
    "backward",
    "act_struct",
    "count_batch",
    "set_num_threads",
    "get_num_threads",
]

_cast = ffi.cast
_lib_train = lib.dbn_forward_train
_lib_infer = lib.dbn_forward_infer
_lib_bwd = lib.dbn_backward_into
_NULL = ffi.NULL
_torch_threads = torch.get_num_threads

# Our own dbn_exec structs: the thread count follows torch per call; the instruction set follows
# darknet_bn.set_isa (read from the numpy side's struct per call). Two store policies:
# - run_exec(): plain stores only, for outputs that may be fresh memory: a block the allocator has just
#   mapped (glibc mmaps blocks above its threshold, 32 MiB at most) has its pages zeroed by the kernel
#   through the cache on first touch, and non-temporal stores then write each line twice. Measured
#   (A/B, fresh outputs, 1 and 2 threads): streaming was 1.3-1.65x slower on 44-205 MB outputs
#   (8x32x208x208, 64x64x112x112). Also what the synchronized passes (in place in delta) use.
# - run_exec_streaming(): the engine's policy (non-temporal stores for outputs above its DBN_NT_*_BYTES
#   thresholds, 8-20 MiB), for outputs in memory written before (the output cache's blocks:
#   _passes._new_out says which): no read-for-ownership of lines the pass overwrites whole, and its
#   inputs stay in the caches. Measured (docs/performance.md section 16, 1 thread, interleaved):
#   training forward + backward 1.07-1.4x faster on 11-51 MB tensors, inference 1.3-1.7x; whole
#   training steps of the ResNet-style network 1.04-1.05x, the MobileNet-style 0.97-1.02x (noise).
_exec = ffi.new("dbn_exec *", {"nthreads": 0, "isa": 0, "plain_stores": 1})
_exec_nt = ffi.new("dbn_exec *", {"nthreads": 0, "isa": 0, "plain_stores": 0})
_user_threads = 0


def set_num_threads(n: int | None) -> None:
    """Fix the number of threads darknet_bn's kernels use inside PyTorch (``None`` or 0: follow
    ``torch.get_num_threads()`` on every call, the default)."""
    global _user_threads
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int or None, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n: expected a thread count >= 0 (0 = follow torch), got {n}")
    _user_threads = min(n, 2**31 - 1)


def get_num_threads() -> int:
    """The number of threads the next call will use."""
    if not lib.dbn_has_openmp():
        return 1
    return _user_threads or _numpy_exec.nthreads or _torch_threads()


def _synced(e):
    """e (a dbn_exec) with this call's thread count and instruction set."""
    n, isa = _user_threads or _numpy_exec.nthreads or _torch_threads(), _numpy_exec.isa
    if e.nthreads != n:  # (a cffi field read costs a third of a write: write only changes)
        e.nthreads = n
    if e.isa != isa:
        e.isa = isa
    return e


_ex = functools.partial(_synced, _exec)  # the exec struct of plain stores
_ex_nt = functools.partial(_synced, _exec_nt)  # the one with the engine's non-temporal policy


class _Flavors(dict):
    """dbn_flavor structs for PyTorch's semantics, per (momentum, eps); kept alive here (bounded: the
    cumulative average, momentum=None, makes a new momentum every step)."""

    def __missing__(self, key):
        if len(self) > 256:
            self.clear()
        momentum, eps = key
        # momentum, eps, eps_in_sqrt, unbiased, bwd_eps, bwd_eps_in_sqrt, stat_eps: torch_flavor()
        fl = self[key] = ffi.new("dbn_flavor *", [momentum, eps, 1, 0, eps, 1, eps])
        return fl


_FLAVORS = _Flavors()


def _flavor(momentum: float, eps: float):
    return _FLAVORS[(momentum, eps)]


class _Ptrs(dict):
    """The C pointers (of type ``ctype``) of recent addresses, at most ``bound`` of them. ffi.cast
    costs ~0.3 us; a hit here is one dict lookup in C (``_p = _PTRS.__getitem__``: no Python frame,
    ~0.05 us -- a Python helper function cost ~0.25 us a pointer, 2 us a call)."""

    def __init__(self, ctype: str, bound: int):
        super().__init__()
        self.ctype, self.bound = ctype, bound

    def __missing__(self, addr: int):
        if len(self) >= self.bound:
            self.clear()
        p = self[addr] = _cast(self.ctype, addr)
        return p


# float * of parameters, buffers and the allocator's recycled blocks
_PTRS = _Ptrs("float *", 4096)
_p = _PTRS.__getitem__


class _Acts(dict):
    """``dbn_act`` structs per (kind, alpha), kept alive here (bounded)."""

    def __missing__(self, key):
        if len(self) > 256:
            self.clear()
        kind, alpha = key
        a = self[key] = ffi.new("dbn_act *", {"kind": kind, "alpha": alpha})
        return a


_ACTS = _Acts()


def act_struct(kind: int, alpha: float = 0.0):
    """The ``const dbn_act *`` for a DBN_ACT_* kind (alpha: LeakyReLU's negative slope); linear: NULL."""
    return _NULL if kind == 0 else _ACTS[(kind, float(alpha))]


_PTRS64 = _Ptrs("int64_t *", 1024)  # num_batches_tracked buffers


def count_batch(addr: int) -> None:
    """``num_batches_tracked += 1`` on the int64 at addr (as ``nbt.add_(1)``, without its ~1.8 us of
    dispatch; the caller bumps the tensor's version)."""
    _PTRS64[addr][0] += 1


def forward_train(
    x: int,
    out: int,
    weight: int,
    bias: int,
    mean: int,
    var: int,
    running_mean: int,
    running_var: int,
    batch: int,
    c: int,
    spatial: int,
    momentum: float,
    eps: float,
    act=_NULL,
    streaming: bool = False,
):
    """Training forward over [batch, c, spatial] float32 (addresses of float32 buffers; per-channel
    ones hold c values). Writes out = act(BN(x)), mean and the biased variance var; updates
    running_mean and running_var (unbiased variance) with momentum. act: a ``dbn_act *`` from
    :func:`act_struct` (NULL: none). Requires batch*spatial >= 2. streaming: out is memory written
    before (the engine's non-temporal store policy may apply; else plain stores).

    mean = var = 0: the statistics go to a new C array of 2*c floats (the mean, then the variance),
    returned, for :func:`backward` (``mean=`` that array, ``var=0``); it lives as long as the
    returned object (a ``float[]`` cdata costs ~0.12 us, a torch.empty(2*c) and its pointers ~0.8 us).
    Otherwise returns None."""
    if mean:
        st, pm, pv = None, _p(mean), _p(var)
    else:
        st = pm = _new_floats(_F32_ARRAY, 2 * c)
        pv = st + c
    _lib_train(
        _p(x),
        _p(out),
        _p(weight),
        _p(bias),
        pm,
        pv,
        _p(running_mean),
        _p(running_var),
        batch,
        c,
        spatial,
        _FLAVORS[(momentum, eps)],
        _NULL,
        act,
        _ex_nt() if streaming else _ex(),
    )
    return st


def forward_infer(
    x: int,
    out: int,
    weight: int,
    bias: int,
    running_mean: int,
    running_var: int,
    batch: int,
    c: int,
    spatial: int,
    eps: float,
    act=_NULL,
    streaming: bool = False,
) -> None:
    """Inference forward: out = act(weight * (x - running_mean) / sqrt(running_var + eps) + bias);
    weight and bias may be 0 (NULL: 1 and 0); act and streaming as in :func:`forward_train`."""
    _lib_infer(
        _p(x),
        _p(out),
        _p(weight) if weight else _NULL,
        _p(bias) if bias else _NULL,
        _p(running_mean),
        _p(running_var),
        batch,
        c,
        spatial,
        _FLAVORS[(0.0, eps)],
        act,
        _ex_nt() if streaming else _ex(),
    )


_new_floats = ffi.new  # (ffi.new(_F32_ARRAY, n): n zeroed floats, freed with the cdata; ~0.12 us)
_F32_ARRAY = ffi.typeof("float[]")


def backward(
    x: int,
    delta: int,
    dx: int,
    weight: int,
    mean: int,
    var: int,
    grad_weight: int,
    grad_bias: int,
    scratch: int,
    batch: int,
    c: int,
    spatial: int,
    eps: float,
    train: bool,
    bias: int = 0,
    act=_NULL,
    streaming: bool = False,
) -> None:
    """Backward, out of place: reads delta (the output's gradient, left unchanged) and writes the
    input's gradient into dx (not overlapping x or delta). mean/var: the statistics the forward
    normalized with (the batch's, var biased, when train; the running ones otherwise). grad_weight
    and grad_bias are *added to* (zero them first); scratch: 2*c floats. act: the forward's
    activation (delta is then its output's gradient); bias (its pre-activation's) is read only then.
    mean may be the statistics array :func:`forward_train` returned, var then 0. streaming: dx is
    memory written before (as in :func:`forward_train`)."""
    _lib_bwd(
        _p(x),
        _p(delta),
        _p(dx),
        _p(weight),
        _p(bias) if bias else _NULL,
        _p(mean) if var else mean,
        _p(var) if var else mean + c,
        _NULL,
        _NULL,
        _p(grad_weight),
        _p(grad_bias),
        _p(scratch),
        _p(scratch + 4 * c),
        batch,
        c,
        spatial,
        _FLAVORS[(0.0, eps)],
        1 if train else 0,
        act,
        _ex_nt() if streaming else _ex(),
    )


# ------------------------------------------------------------------------------------------------
# The raw entry points, for the two hot paths of functional.py (the module's training call and its
# backward, where a Python frame per pass and 16 converted arguments cost as much as the C pass on
# small tensors). They take handles made here -- opaque values, not addresses:
#
# - ``ptr(address)``: the ``float *`` of a float32 buffer (bounded cache; ``int64_ptr``: ``int64_t *``);
# - ``new_stats(2 * c)``: a zeroed float array (the batch's [mean; biased var]), freed with the handle;
#   ``stats + c`` is the handle of its second half;
# - ``flavor_of((momentum, eps))``: PyTorch's semantics with that momentum and eps;
# - ``run_exec()``: the ``dbn_exec *`` with this call's thread count and instruction set and plain
#   stores (what every pass above passes by default); ``run_exec_streaming()``: the same with the
#   engine's non-temporal store policy, for outputs in reused memory (see _exec above);
# - ``NULL``.
#
# forward_train_raw(x, out, weight, bias, mean, var, running_mean, running_var, batch, c, spatial,
#                   flavor, NULL, act, run_exec())
# forward_infer_raw(x, out, weight or NULL, bias or NULL, running_mean, running_var, batch, c, spatial,
#                   flavor_of((0.0, eps)), act, run_exec())
# backward_raw(x, delta, dx, weight, bias or NULL, mean, var, NULL, NULL, grad_weight, grad_bias,
#              scratch, scratch + 4 * c, batch, c, spatial, flavor_of((0.0, eps)), train, act, run_exec())
#
# with the same meaning (and trust in their arguments) as forward_train, forward_infer and backward.

ptr = _p
int64_ptr = _PTRS64.__getitem__
flavor_of = _FLAVORS.__getitem__
NULL = _NULL
forward_train_raw = _lib_train
forward_infer_raw = _lib_infer
backward_raw = _lib_bwd
run_exec = _ex
run_exec_streaming = _ex_nt


def address(handle) -> int:
    """The address a handle points to (tests: which buffer a raw pass was given)."""
    return int(ffi.cast("uintptr_t", handle))


# new_stats(n): a zeroed float[n] (its handle is also the float * of its first element; no Python frame)
new_stats = functools.partial(ffi.new, ffi.typeof("float[]"))

# ------------------------------------------------------------------------------------------------
# Synchronized BN (darknet_bn.torch.sync): the split passes of csrc/fused.c around a collective.
# moments: 3*c doubles (count, mean, M2 per channel); sums: 2*c doubles (sum delta, sum delta*(x - mean)).

_lib_moments = lib.dbn_forward_moments
_lib_merge = lib.dbn_merge_moments
_lib_apply = lib.dbn_forward_apply
_lib_bsums = lib.dbn_backward_sums
_lib_bapply = lib.dbn_backward_apply


def _d(addr: int):
    return _cast("double *", addr)


def forward_moments(x: int, moments: int, batch: int, c: int, spatial: int) -> None:
    """This slice's (count, mean, M2) per channel of [batch, c, spatial] float32, into 3*c doubles."""
    _lib_moments(_p(x), batch, c, spatial, _d(moments), _ex())


def merge_moments(a: int, b: int, c: int) -> None:
    """a = merge(a, b) (Chan's formula; a holds the lower ranks), c channels of 3 doubles."""
    _lib_merge(_d(a), _d(b), c)


def forward_apply(
    x: int,
    out: int,
    weight: int,
    bias: int,
    mean: int,
    var: int,
    running_mean: int,
    running_var: int,
    moments: int,
    batch: int,
    c: int,
    spatial: int,
    momentum: float,
    eps: float,
) -> None:
    """The training forward with the given (global) moments: as forward_train."""
    _lib_apply(
        _p(x),
        _p(out),
        _p(weight),
        _p(bias),
        _p(mean),
        _p(var),
        _p(running_mean),
        _p(running_var),
        _d(moments),
        batch,
        c,
        spatial,
        _FLAVORS[(momentum, eps)],
        _NULL,
        _NULL,
        _ex(),
    )


def backward_sums(x: int, delta: int, mean: int, sums: int, batch: int, c: int, spatial: int) -> None:
    """This slice's (sum delta, sum delta*(x - mean)) per channel, into 2*c doubles."""
    _lib_bsums(
        _p(x), _p(delta), _NULL, _NULL, _p(mean), _NULL, _NULL, _NULL, batch, c, spatial, _d(sums), _NULL, _NULL, _ex()
    )


def backward_apply(
    x: int,
    delta: int,
    weight: int,
    mean: int,
    var: int,
    local_sums: int,
    global_sums: int,
    count: float,
    grad_weight: int,
    grad_bias: int,
    scratch: int,
    batch: int,
    c: int,
    spatial: int,
    eps: float,
) -> None:
    """The training backward, in place in delta, from the global sums over count values per channel;
    grad_weight/grad_bias are *added* this slice's contribution (local_sums); scratch: 2*c floats."""
    _lib_bapply(
        _p(x),
        _p(delta),
        _NULL,
        _p(weight),
        _NULL,
        _p(mean),
        _p(var),
        _NULL,
        _NULL,
        _d(local_sums),
        _d(global_sums),
        count,
        _p(grad_weight),
        _p(grad_bias),
        _p(scratch),
        _p(scratch + 4 * c),
        batch,
        c,
        spatial,
        _FLAVORS[(0.0, eps)],
        _NULL,
        _ex(),
    )
