"""The passes of darknet_bn.torch on tensors: layouts, eligibility, and the C passes called with data
pointers -- shared by the eager path (:mod:`.functional`), the custom operators (:mod:`._ops`) and
:mod:`.sync`, which import it (it imports none of them).

Shapes: a kernel input ``xin`` is ``[batch, C, spatial]`` rows in memory (NCHW: batch = N, spatial =
H*W; channels_last: batch = N*H*W, spatial = 1); per-channel tensors are float32 ``(C,)``.
"""

from __future__ import annotations

import threading
from typing import overload

import torch
from torch import Tensor

from . import _backend

_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_PLAIN = frozenset((_Tensor, _Parameter))
_F32 = torch.float32
_CL = torch.channels_last
_CL3 = torch.channels_last_3d
_CONTIG = torch.contiguous_format
_empty = torch.empty
_empty_like = torch.empty_like
_zeros = torch.zeros
# torch.autograd.graph.increment_version without its Python wrapper (which only wraps a lone tensor in a
# tuple): ~0.1 us a call less
_bump = getattr(torch._C, "_increment_version", None) or torch.autograd.graph.increment_version


def _never_free(cdata: int) -> int:
    return 2


# A storage's reference count (private in torch: where it is missing, the output cache stays off)
_HAS_USE_COUNT = hasattr(torch._C, "_storage_Use_Count")
_use_count = getattr(torch._C, "_storage_Use_Count", _never_free)
_NULL = _backend._NULL

# ------------------------------------------------------------------------------------------------
# Layout


def _strides_like_channels_last(x: Tensor) -> bool:
    """PyTorch's test for strides that suggest channels_last(_3d) (c10's is_channels_last_strides_*)."""
    order = (1, 3, 2, 0) if x.dim() == 4 else (1, 4, 3, 2, 0)
    sizes, strides = x.shape, x.stride()
    if strides[1] == 0:
        return False
    m = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < m:
            return False
        if d == 0 and m == strides[1]:
            return False
        m = strides[d]
        if sizes[d] > 1:
            m *= sizes[d]
    return True


def _standard_view(x: Tensor) -> Tensor:
    """x (contiguous, with size-1 dims) as a view with the standard strides of the memory format
    PyTorch suggests for it (the same addresses: a size-1 dim's stride never moves one), so that
    outputs made with ``empty_like`` get the strides PyTorch's own outputs have."""
    shape, d = x.shape, x.dim()
    order = list(range(d - 1, -1, -1))  # innermost first
    if d in (4, 5) and _strides_like_channels_last(x):
        order = [1] + list(range(d - 1, 1, -1)) + [0]
    strides, m = [0] * d, 1
    for k in order:
        strides[k] = m
        m *= max(shape[k], 1)
    return x if tuple(strides) == x.stride() else x.as_strided(shape, strides)


def _kernel_input(x: Tensor):
    """``(xin, batch, spatial)``: the input as the kernels read it, [batch, C, spatial] rows. ``xin``
    is ``x`` when it is contiguous or channels_last(_3d) (no copy), else a copy of ``x`` in the
    memory format PyTorch would give its output. Traceable (no data pointers)."""
    shape = x.shape
    n, c, numel = shape[0], shape[1], x.numel()
    if x.is_contiguous():
        if 1 in shape:  # size-1 dims may carry any stride: give them the standard ones (a view)
            x = _standard_view(x)
        return x, n, numel // (n * c)
    d = x.dim()
    if (d == 4 and x.is_contiguous(memory_format=_CL)) or (d == 5 and x.is_contiguous(memory_format=_CL3)):
        return x, numel // c, 1
    if d in (4, 5) and _strides_like_channels_last(x):
        return x.contiguous(memory_format=_CL if d == 4 else _CL3), numel // c, 1
    return x.contiguous(), n, numel // (n * c)


# (shape, strides) of contiguous tensors with size-1 dims -> the standard strides _standard_view gives
# them, or None when they have them already (bounded; eager only: the keys are concrete sizes)
_STD_STRIDES: dict = {}


def _kernel_input_eager(x: Tensor):
    """:func:`_kernel_input` for a real (not fake, not traced) tensor: the same result, with the view
    of a contiguous input with size-1 dims (e.g. N x C x 1 x 1) decided once per (shape, strides)
    instead of on every call (~1.7 us of Python on such shapes)."""
    shape = x.shape
    if not x.is_contiguous():
        return _kernel_input(x)
    n = shape[0]
    if 1 not in shape:  # (the common case, without _kernel_input's frame and second checks)
        return x, n, x.numel() // (n * shape[1])
    key = (shape, x.stride())
    st = _STD_STRIDES.get(key, _STD_STRIDES)
    if st is _STD_STRIDES:  # first sight of this geometry
        if len(_STD_STRIDES) >= 1024:
            _STD_STRIDES.clear()
        v = _standard_view(x)
        st = _STD_STRIDES[key] = None if v is x else v.stride()
    if st is not None:
        x = x.as_strided(shape, st)
    return x, n, x.numel() // (n * shape[1])


# ------------------------------------------------------------------------------------------------
# Eligibility: can the kernels run this call? (cheap attribute reads; anything else goes to torch)


def aligned(*ts: Tensor | None) -> bool:
    """Every tensor given (None skipped) starts at a 4-byte aligned address: the C kernels read
    ``float *`` (a tensor made by ``torch.frombuffer(..., offset=1)`` is not one)."""
    for t in ts:
        if t is not None and t.data_ptr() & 3:
            return False
    return True


@overload
def aligned_copy(t: Tensor) -> Tensor: ...
@overload
def aligned_copy(t: None) -> None: ...
def aligned_copy(t: Tensor | None) -> Tensor | None:
    """t, or an aligned copy of it (same layout) when its address is not 4-byte aligned."""
    return t if t is None or not t.data_ptr() & 3 else t.clone()


def chan_ok(t: Tensor | None, c: int, traced: bool = False) -> bool:
    """A per-channel argument the kernels can take: None, or a float32 CPU tensor of shape (c,),
    contiguous -- and, eagerly, a plain Tensor or Parameter (no subclass). ``traced``: the test as
    torch.compile traces it (fake tensors: no type test, the device by name). No data pointer is
    read: :func:`aligned` checks the address eagerly, :func:`aligned_copy` in the custom operators."""
    if t is None:
        return True
    if traced:
        return t.dtype == _F32 and t.device.type == "cpu" and t.dim() == 1 and t.shape[0] == c and t.is_contiguous()
    return (
        (type(t) is _Tensor or type(t) is _Parameter)
        and t.dtype is _F32
        and t.is_cpu
        and t.dim() == 1
        and t.shape[0] == c
        and t.is_contiguous()
    )


def chans_ok(c: int, *ts: Tensor | None) -> bool:
    """``chan_ok(t, c)`` and :func:`aligned` for each of ts, in one call (the eager module path)."""
    for t in ts:
        if t is not None and not (
            type(t) in _PLAIN
            and t.dtype is _F32
            and t.is_cpu
            and t.shape == (c,)  # (one comparison for dim() == 1 and shape[0] == c)
            and t.is_contiguous()
            and not t.data_ptr() & 3
        ):
            return False
    return True


_ONES: dict = {}
_ZEROS: dict = {}
_SCRATCH: dict = {}


def _ones_ptr(c: int) -> int:
    t = _ONES.get(c)
    if t is None:
        t = _ONES[c] = torch.ones(c, dtype=_F32)
    return t.data_ptr()


def _zeros_ptr(c: int) -> int:
    t = _ZEROS.get(c)
    if t is None:
        t = _ZEROS[c] = torch.zeros(c, dtype=_F32)
    return t.data_ptr()


def _scratch_ptr(c: int) -> int:
    """4*c floats that the C passes write and nobody reads (statistics nobody asked for, the
    backward's mean_delta/variance_delta): shared by every call with this c, even concurrent ones --
    whatever ends up in them is never used."""
    t = _SCRATCH.get(c)
    if t is None:
        t = _SCRATCH[c] = torch.zeros(4 * c, dtype=_F32)
    return t.data_ptr()


_SCRATCH_H: dict = {}


def _scratch_handles(c: int) -> tuple:
    """The four c-float quarters of the scratch buffer (:func:`_scratch_ptr`) as the raw entry points'
    handles (``_backend.ptr``): the unwanted grad_weight, grad_bias, mean_delta, variance_delta."""
    h = _SCRATCH_H.get(c)
    if h is None:
        a = _scratch_ptr(c)
        h = _SCRATCH_H[c] = tuple(_backend.ptr(a + 4 * c * k) for k in range(4))
    return h


# ------------------------------------------------------------------------------------------------
# Large outputs: a cache of their memory
#
# glibc serves every block above its mmap threshold (32 MiB at most) with a fresh mmap and unmaps it on
# free, so each such output -- PyTorch's and ours alike -- is page-faulted in (and zeroed by the kernel)
# on every call: on this machine kind writing a fresh 49 MiB tensor took 17 ms, the same write into
# reused memory 2 ms. Below the threshold glibc's heap may still return memory to the system (its trim
# threshold) and fault it in again: torch.nn's BN rows of 6-11 MB took 180-670 page faults a call
# (docs/performance.md section 16). The passes below take outputs of CACHE_MIN_BYTES and more from
# this cache instead: a block (a torch storage) is handed out again once nothing but the cache holds
# it (its use count is 1: no tensor, view, numpy array or autograd graph refers to it any more). The
# output is a plain tensor on that storage (not a view). The cache keeps at most _limit bytes (blocks
# in use count too); beyond it, outputs are allocated as PyTorch's are. set_output_cache(0) turns it
# off, empty_output_cache() releases the free blocks.
#
# A block handed out again is memory written before, so the passes stream their stores into it (the
# engine's non-temporal policy, _backend.run_exec_streaming: above 8-20 MiB, DBN_NT_*_BYTES in
# csrc/internal.h); fresh memory gets plain stores. CACHE_MIN_BYTES is the smallest of those
# thresholds (8 MiB, the backward's), so every output that may stream comes from the cache and its
# freshness is known.

CACHE_MIN_BYTES = 8 << 20
_cache_lock = threading.Lock()
_cache: list = []  # (UntypedStorage, its size in bytes when cached), oldest first
_cache_bytes = 0
_limit = (1 << 30) if _HAS_USE_COUNT else 0


def set_output_cache(max_bytes: int) -> None:
    """Cap (in bytes) the memory darknet_bn.torch keeps for reuse as outputs of 8 MiB and more
    (default 1 GiB; 0 turns the cache off and releases it). Blocks in use stay alive until their
    tensors die, as any tensor's memory does."""
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes: expected an int, got {type(max_bytes).__name__} {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes: expected a byte count >= 0, got {max_bytes}")
    with _cache_lock:
        _limit = max_bytes if _HAS_USE_COUNT else 0
        _trim(0)


def empty_output_cache() -> None:
    """Release the cached blocks no tensor uses (their memory returns to the system)."""
    global _cache_bytes
    with _cache_lock:
        keep = [e for e in _cache if _use_count(e[0]._cdata) > 1]
        _cache[:] = keep
        _cache_bytes = sum(e[1] for e in keep)


def output_cache_bytes() -> int:
    """The bytes the cache holds now (in use or free)."""
    return _cache_bytes


def _trim(need: int) -> None:
    """Drop blocks, busy ones first (their tensors keep them alive), until need more bytes fit."""
    global _cache_bytes
    for busy in (True, False):
        i = 0
        while _cache_bytes + need > _limit and i < len(_cache):
            st, n = _cache[i]
            if (_use_count(st._cdata) > 1) is busy:
                del _cache[i]
                _cache_bytes -= n
            else:
                i += 1


# Stream the stores of outputs in reused memory (the engine's non-temporal policy; see _backend's
# run_exec_streaming). A switch for A/B measurements.
STREAM_REUSED = True


def _new_out(xin: Tensor) -> tuple[Tensor, bool]:
    """``(out, reused)``: an uninitialized tensor with xin's shape and strides (xin: dense, contiguous or
    channels_last), and whether its memory is a cache block written before -- the passes may then
    stream their stores into it (never into fresh memory: see _backend.run_exec)."""
    nbytes = 4 * xin.numel()
    if nbytes < CACHE_MIN_BYTES or not _limit:
        return _empty_like(xin), False
    global _cache_bytes
    with _cache_lock:
        for st, n in _cache:
            # free: only the cache refers to it; and still what the cache put out (not resized or moved
            # to shared memory by a user since)
            if n == nbytes and _use_count(st._cdata) == 1 and st.nbytes() == n and not st.is_shared():
                return _empty(0, dtype=_F32).set_(st, 0, xin.shape, xin.stride()), STREAM_REUSED
        out = _empty_like(xin)
        if nbytes <= _limit:
            _trim(nbytes)
            _cache.append((out.untyped_storage(), nbytes))
            _cache_bytes += nbytes
        return out, False


def _new_like(xin: Tensor) -> Tensor:
    """An uninitialized tensor with xin's shape and strides (xin: dense, contiguous or channels_last)."""
    return _new_out(xin)[0]


# ------------------------------------------------------------------------------------------------
# The passes on tensors (eager)


def _train_forward(
    xin: Tensor,
    weight,
    bias,
    running_mean,
    running_var,
    b: int,
    c: int,
    s: int,
    momentum: float,
    eps: float,
    keep: bool = True,
    nbt: Tensor | None = None,
    act=_NULL,
):
    """Training forward; returns (out, stats) with stats = [mean; biased var] (2*c floats; None
    unless keep: then the batch statistics go to the scratch buffer). nbt: a num_batches_tracked
    (int64 CPU scalar) the caller has incremented in place: its version is bumped with the running
    statistics'. act: a ``dbn_act *`` (_backend.act_struct) applied in the same pass; NULL: none."""
    out, reused = _new_out(xin)
    if keep:
        stats = _empty(2 * c, dtype=_F32)
        ps = stats.data_ptr()
    else:
        stats, ps = None, _scratch_ptr(c)
    if running_mean is None:  # no running statistics: update scratch ones with momentum 0
        prm = _scratch_ptr(c) + 8 * c
        prv, momentum = prm + 4 * c, 0.0
    else:
        prm, prv = running_mean.data_ptr(), running_var.data_ptr()
    _backend.forward_train(
        xin.data_ptr(),
        out.data_ptr(),
        _ones_ptr(c) if weight is None else weight.data_ptr(),
        _zeros_ptr(c) if bias is None else bias.data_ptr(),
        ps,
        ps + 4 * c,
        prm,
        prv,
        b,
        c,
        s,
        momentum,
        eps,
        act,
        reused,
    )
    if running_mean is not None:  # an in-place update, as PyTorch's (autograd's version check)
        _bump((running_mean, running_var) if nbt is None else (running_mean, running_var, nbt))
    return out, stats


def _infer_forward(xin: Tensor, weight, bias, running_mean, running_var, b: int, c: int, s: int, eps: float, act=_NULL):
    out, reused = _new_out(xin)
    _backend.forward_infer(
        xin.data_ptr(),
        out.data_ptr(),
        0 if weight is None else weight.data_ptr(),
        0 if bias is None else bias.data_ptr(),
        running_mean.data_ptr(),
        running_var.data_ptr(),
        b,
        c,
        s,
        eps,
        act,
        reused,
    )
    return out


def _backward(
    g: Tensor,
    xin: Tensor,
    weight,
    pmean: int,
    pvar: int,
    b: int,
    c: int,
    s: int,
    eps: float,
    train: bool,
    need_w: bool = True,
    need_b: bool = True,
    bias=None,
    act=_NULL,
):
    """(grad_input, grad_weight, grad_bias) from darknet_bn's backward; grad_input in xin's layout;
    grad_weight/grad_bias None unless needed. act: the forward's activation (g is then the gradient of
    its output; bias, the forward's, recomputes the pre-activation)."""
    # the output's gradient in xin's layout, read as it is (a copy only if autograd hands other strides)
    if xin.is_contiguous():
        if not g.is_contiguous() or g.data_ptr() & 3:  # a misaligned gradient: copied too
            g = g.clone(memory_format=_CONTIG)
    else:
        fmt = _CL if xin.dim() == 4 else _CL3
        if not g.is_contiguous(memory_format=fmt) or g.data_ptr() & 3:
            g = g.clone(memory_format=fmt)
    gi, reused = _new_out(xin)
    scratch = _scratch_ptr(c)
    gw = xin.new_zeros(c) if need_w else None  # (float32 CPU, as xin; ~0.2 us less than torch.zeros)
    gb = xin.new_zeros(c) if need_b else None
    _backend.backward(
        xin.data_ptr(),
        g.data_ptr(),
        gi.data_ptr(),
        _ones_ptr(c) if weight is None else weight.data_ptr(),
        pmean,
        pvar,
        scratch if gw is None else gw.data_ptr(),
        scratch + 4 * c if gb is None else gb.data_ptr(),
        scratch + 8 * c,
        b,
        c,
        s,
        eps,
        train,
        0 if act is _NULL else _zeros_ptr(c) if bias is None else bias.data_ptr(),
        act,
        reused,
    )
    return gi, gw, gb
