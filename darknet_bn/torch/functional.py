"""``batch_norm``: ``torch.nn.functional.batch_norm`` on darknet_bn's kernels.

Same signature and semantics as :func:`torch.nn.functional.batch_norm`: PyTorch's normalization
(biased batch variance, ``sqrt(var + eps)``), running statistics updated with the unbiased variance,
the exact gradient. Shapes: ``input`` is ``(N, C, *)``; ``running_mean``, ``running_var``,
``weight``, ``bias`` are ``(C,)`` or None.

Where darknet_bn has a kernel -- float32 tensors on the CPU -- one fused C pass does the forward and
one the backward. Everything else does exactly what PyTorch does, by calling
``torch.nn.functional.batch_norm``:

- dtypes other than float32 (float64, float16, bfloat16 -- e.g. a bfloat16 activation under CPU
  autocast) and non-CPU devices: darknet_bn has no kernel for them;
- zero-sized inputs, and anything PyTorch rejects (wrong channel count, one value per channel in
  training, ...): PyTorch's result or PyTorch's error;
- tensor subclasses, functorch transforms (``torch.func.vmap``/``grad``/``jvp``) and forward-mode AD
  (``torch.autograd.forward_ad``): the C kernels cannot see through them.

Layouts: a contiguous ``(N, C, *)`` input is N rows of C planes; a channels_last (4-D) or
channels_last_3d (5-D) input is N*H*W(*D) rows of C values, used as it is: no copy, and the output
(and the input's gradient) has the input's memory format. Any other strides cost one copy of the
input into the layout PyTorch's own output would have (contiguous, or channels_last for strides
that look like it) -- the output has that layout, as PyTorch's does.

Autograd: the backward is darknet_bn's exact one (one fused pass, out of place: it reads the
output's gradient and writes the new input gradient; the output's gradient is copied only when its
strides differ from the input's layout). Double backward works: when a
graph of the backward is requested (``create_graph=True``), the backward is computed with PyTorch
operations instead, so it is differentiable.

Under ``torch.compile`` the same kernels run as custom operators (:mod:`darknet_bn.torch._ops`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _backend, _passes
from ._acts import torch_act
from ._passes import (
    _CL,
    _CL3,
    _CONTIG,
    _SCRATCH_H,
    _backward,
    _bump,
    _infer_forward,
    _kernel_input_eager,
    _new_out,
    _scratch_handles,
    _train_forward,
    aligned,
    chan_ok,
    chans_ok,
)

__all__ = ["batch_norm"]

_Tensor = torch.Tensor
_F32 = torch.float32
_torch_bn = F.batch_norm
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_peek = torch._C._functorch.peek_interpreter_stack
import torch.autograd.forward_ad as _fwd_ad  # noqa: E402


def _saved_changed(n: int, c: int, saved) -> bool:
    """Whether a tensor saved for a backward no longer has the size or dtype its forward pass saw:
    ``.data =`` (or ``set_`` under ``no_grad``) may replace a tensor's memory between the forward and
    the backward without autograd's version check noticing; the C pass would then read or write past
    it. saved: the input (n values), then per-channel tensors (c values) or None. (Another device is
    refused by ``.data =`` itself.)"""
    x = saved[0]
    if x.dtype is not _F32 or x.numel() != n:
        return True
    return any(t is not None and (t.dtype is not _F32 or t.numel() != c) for t in saved[1:])


def _saved_error() -> ValueError:
    return ValueError(
        "darknet_bn.torch.batch_norm: a tensor saved for the backward changed its size or dtype "
        "between the forward and the backward (e.g. by a .data = assignment); expected the input and "
        "per-channel float32 tensors of the forward's sizes"
    )


def _torch_backward(g: Tensor, x: Tensor, weight, running_mean, running_var, train: bool, eps: float):
    """The same gradients with PyTorch operations, differentiable (double backward)."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if train:
        mean = x.mean(dims, keepdim=True)
        invstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    else:
        mean = running_mean.view(shape)
        invstd = torch.rsqrt(running_var.view(shape) + eps)
    xhat = (x - mean) * invstd
    gb = g.sum(dims)
    gw = (g * xhat).sum(dims)
    scale = invstd if weight is None else invstd * weight.view(shape)
    if train:
        m = x.numel() // x.shape[1]
        gi = scale * (g - gb.view(shape) / m - xhat * (gw.view(shape) / m))
    else:
        gi = g * scale
    return gi, gw, gb


def _torch_backward_act(
    g: Tensor, x: Tensor, weight, bias, running_mean, running_var, train: bool, eps: float, act, need
):
    """The gradients of act(BN(x)) with PyTorch operations, differentiable (double backward): the
    forward rebuilt from the saved tensors (the batch's statistics again when training), then
    autograd.grad with create_graph."""
    y = torch_act(
        act[0],
        act[1],
        _torch_bn(x, None if train else running_mean, None if train else running_var, weight, bias, train, 0.0, eps),
    )
    wrt = [t for t, n in ((x, need[0]), (weight, need[1]), (bias, need[2])) if n and t is not None]
    grads = iter(torch.autograd.grad(y, wrt, g, create_graph=True, allow_unused=True))
    return tuple(
        next(grads) if n and t is not None else None for t, n in ((x, need[0]), (weight, need[1]), (bias, need[2]))
    )


class _BatchNormFn(torch.autograd.Function):
    """Eager autograd for the kernels (cheaper per call than a custom operator's dispatch)."""

    @staticmethod
    def forward(ctx, xin, weight, bias, running_mean, running_var, meta):
        # meta: (training, momentum, eps, batch, c, spatial, num_batches_tracked or None, act) with act
        # None or (kind, alpha, dbn_act *) -- an activation applied in the same passes
        training, momentum, eps, b, c, s, nbt, act = meta
        pact = _NULL if act is None else act[2]
        if training:
            out, stats = _train_forward(
                xin, weight, bias, running_mean, running_var, b, c, s, momentum, eps, True, nbt, pact
            )
            ctx.meta = (meta, stats)
            if act is None:
                ctx.save_for_backward(xin, weight)
            else:
                ctx.save_for_backward(xin, weight, None, None, bias)
        else:
            out = _infer_forward(xin, weight, bias, running_mean, running_var, b, c, s, eps, pact)
            ctx.meta = (meta, None)
            if act is None:
                ctx.save_for_backward(xin, weight, running_mean, running_var)
            else:
                ctx.save_for_backward(xin, weight, running_mean, running_var, bias)
        return out

    @staticmethod
    def backward(ctx, g):
        (training, _m, eps, b, c, s, _n, act), stats = ctx.meta
        saved = ctx.saved_tensors
        xin, weight = saved[0], saved[1]
        if _saved_changed(b * c * s, c, saved):
            raise _saved_error()
        need = ctx.needs_input_grad
        if act is not None:
            bias = saved[4]
            if _grad_enabled():  # create_graph=True: a differentiable backward
                gi, gw, gb = _torch_backward_act(g, xin, weight, bias, saved[2], saved[3], training, eps, act, need)
            else:
                if training:
                    pm = stats.data_ptr()
                    pv = pm + 4 * c
                else:
                    pm, pv = saved[2].data_ptr(), saved[3].data_ptr()
                gi, gw, gb = _backward(g, xin, weight, pm, pv, b, c, s, eps, training, need[1], need[2], bias, act[2])
        elif _grad_enabled():  # create_graph=True: a differentiable backward
            gi, gw, gb = _torch_backward(
                g, xin, weight, None if training else saved[2], None if training else saved[3], training, eps
            )
        elif training:
            ps = stats.data_ptr()
            gi, gw, gb = _backward(g, xin, weight, ps, ps + 4 * c, b, c, s, eps, True, need[1], need[2])
        else:
            gi, gw, gb = _backward(
                g, xin, weight, saved[2].data_ptr(), saved[3].data_ptr(), b, c, s, eps, False, need[1], need[2]
            )
        return gi if need[0] else None, gw if need[1] else None, gb if need[2] else None, None, None, None


# The autograd engine calls the backward node's ``apply``, which torch defines in Python
# (BackwardCFunction.apply: it looks up backward/vjp and a boxed-grads flag on every call, ~1 us);
# this node's apply is the backward itself.
_BatchNormFn._backward_cls.apply = _BatchNormFn.backward  # type: ignore[attr-defined]


# Function.apply without its Python wrapper (which binds default arguments for setup_context-style
# Functions and unwraps functorch's dead wrappers: neither applies here -- batch_norm() sends
# functorch transforms to torch -- and it costs ~4 us per call, as much as a small BN's whole pass).
_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, _BatchNormFn)


class _TrainFn(torch.autograd.Function):
    """The module's training call (:func:`module_forward`), the common case in fewer steps than
    :class:`_BatchNormFn`: the running statistics travel in ``meta`` (they are no inputs of the graph:
    no gradient reaches them, and the module path has checked they require none), the pass is called
    through the raw entry point with the handles module_forward made (no Python frame in between),
    the batch's statistics live in a C array (no tensor), and the backward pass is inlined.

    The input and the weight are saved as ``save_for_backward`` saves them (``ctx.to_save``: what that
    method sets, without its Python frame), and read back through ``ctx.saved_tensors``: autograd's
    check that neither was modified in place since the forward, and the error on a second backward
    through a freed graph, stay PyTorch's. The backward reads their data pointers again (never the
    forward's: a ``.data =`` assignment in between may have moved them)."""

    @staticmethod
    def forward(ctx, xin, weight, bias, meta):
        # meta: (running_mean, running_var, num_batches_tracked, flavor, batch, c, spatial, act, small,
        # eps, handles of xin, weight, bias, running_mean, running_var); act: None or (kind, alpha,
        # dbn_act *) as in _BatchNormFn; small: xin is below the output cache's blocks (_new_like = empty_like)
        rm, rv, nbt, fl, b, c, s, act, small, eps, hx, hw, hb, hm, hv = meta
        if small:
            out, reused = _empty_like(xin), False
        else:
            out, reused = _new_out(xin)
        st = _new_stats(2 * c)  # -> [mean; biased var] of the batch, for the backward
        sv = st + c
        pact = _NULL if act is None else act[2]
        _backend.forward_train_raw(
            hx, _ptr(out.data_ptr()), hw, hb, st, sv, hm, hv, b, c, s, fl, _NULL, pact,
            _run_streaming() if reused else _run_exec(),
        )  # fmt: skip
        _bump((rm, rv, nbt))  # in-place updates, as PyTorch's (autograd's version check)
        # for the backward: the statistics, and its flavor (the handles stay alive with ctx)
        ctx.meta = (b, c, s, eps, act, pact, st, sv, small, _flavor((0.0, eps)))
        ctx.to_save = (xin, weight) if act is None else (xin, weight, bias)  # = save_for_backward
        return out

    @staticmethod
    def backward(ctx, g):
        b, c, s, eps, act, pact, st, sv, small, fl = ctx.meta
        saved = ctx.saved_tensors
        xin, weight = saved[0], saved[1]
        # (inline: what _saved_changed checks, without its frame on the common path)
        if (
            xin.dtype is not _F32
            or weight.dtype is not _F32
            or xin.numel() != b * c * s
            or weight.numel() != c
            or (act is not None and _saved_changed(b * c * s, c, saved))
        ):
            raise _saved_error()
        need = ctx.needs_input_grad
        if _grad_enabled():  # create_graph=True: a differentiable backward
            if act is None:
                gi, gw, gb = _torch_backward(g, xin, weight, None, None, True, eps)
            else:
                gi, gw, gb = _torch_backward_act(g, xin, weight, saved[2], None, None, True, eps, act, need)
            return gi if need[0] else None, gw if need[1] else None, gb if need[2] else None, None
        # _passes._backward, inlined: the output's gradient in xin's layout, read as it is (a copy only
        # if autograd hands other strides, or a misaligned gradient)
        if xin.is_contiguous():
            if not g.is_contiguous() or g.data_ptr() & 3:
                g = g.clone(memory_format=_CONTIG)
        else:
            fmt = _CL if xin.dim() == 4 else _CL3
            if not g.is_contiguous(memory_format=fmt) or g.data_ptr() & 3:
                g = g.clone(memory_format=fmt)
        if small:
            gi, reused = _empty_like(xin), False
        else:
            gi, reused = _new_out(xin)
        sc = _SCRATCH_H.get(c) or _scratch_handles(c)
        if need[1]:
            gw = xin.new_zeros(c)  # (the pass adds to them)
            hgw = _ptr(gw.data_ptr())
        else:
            gw, hgw = None, sc[0]
        if need[2]:
            gb = xin.new_zeros(c)
            hgb = _ptr(gb.data_ptr())
        else:
            gb, hgb = None, sc[1]
        _backend.backward_raw(
            _ptr(xin.data_ptr()), _ptr(g.data_ptr()), _ptr(gi.data_ptr()), _ptr(weight.data_ptr()),
            _NULL if act is None else _ptr(saved[2].data_ptr()), st, sv, _NULL, _NULL, hgw, hgb, sc[2], sc[3],
            b, c, s, fl, 1, pact, _run_streaming() if reused else _run_exec(),
        )  # fmt: skip
        return gi if need[0] else None, gw, gb, None


_TrainFn._backward_cls.apply = _TrainFn.backward  # type: ignore[attr-defined]
_apply_train = torch._C._FunctionBase.__dict__["apply"].__get__(None, _TrainFn)


# ------------------------------------------------------------------------------------------------


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization over the channels (dim 1) of ``input`` ``(N, C, *)``, as
    :func:`torch.nn.functional.batch_norm` (same arguments, same results, same errors).

    ``training=True`` normalizes with the batch's statistics (biased variance) and, when
    ``running_mean``/``running_var`` (float32 ``(C,)``) are given, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the unbiased variance.
    ``training=False`` normalizes with the running statistics. The output is a new tensor of
    ``input``'s shape and dtype (its memory format: see the module docstring); float32 CPU tensors
    run darknet_bn's kernels, anything else runs PyTorch's.
    """
    if _is_compiling():
        from . import _ops

        return _ops.batch_norm_compiled(input, running_mean, running_var, weight, bias, training, momentum, eps)
    x = input
    if (
        type(x) is not _Tensor
        or x.dtype is not _F32
        or not x.is_cpu
        or x.dim() < 2
        or _peek() is not None
        or _fwd_ad._current_level >= 0
    ):
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    c = x.shape[1]
    if (
        x.numel() == 0
        or not (chan_ok(weight, c) and chan_ok(bias, c) and chan_ok(running_mean, c) and chan_ok(running_var, c))
        or (running_mean is None) != (running_var is None)
        or (not training and running_mean is None)
        or (running_mean is not None and running_mean.requires_grad)
        or (running_var is not None and running_var.requires_grad)
        or not isinstance(momentum, (int, float))
        or not isinstance(eps, (int, float))
        or not aligned(x, weight, bias, running_mean, running_var)
    ):
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    xin, b, s = _kernel_input_eager(x)
    if training and b * s < 2:  # PyTorch's "Expected more than 1 value per channel when training"
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    training = bool(training)
    momentum, eps = float(momentum), float(eps)
    if _grad_enabled() and (
        x.requires_grad or (weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad)
    ):
        return _apply(xin, weight, bias, running_mean, running_var, (training, momentum, eps, b, c, s, None, None))
    if training:
        return _train_forward(xin, weight, bias, running_mean, running_var, b, c, s, momentum, eps, False)[0]
    return _infer_forward(xin, weight, bias, running_mean, running_var, b, c, s, eps)


_I64 = torch.int64
_NULL = _backend.NULL
_PLAIN = (_Tensor, torch.nn.Parameter)
_empty_like = torch.empty_like
_ptr = _backend.ptr
_i64p = _backend.int64_ptr
_flavor = _backend.flavor_of
_new_stats = _backend.new_stats
# (the raw passes are looked up in _backend on each call, as the wrapped ones: tests count them there)
_run_exec = _backend.run_exec
_run_streaming = _backend.run_exec_streaming


def module_forward(m, x: Tensor, act=None) -> Tensor | None:
    """``_BatchNorm.forward`` of darknet_bn's modules in the common eager case -- a float32 CPU input,
    a float momentum, running statistics tracked -- with fewer Python steps than the general path
    (:func:`batch_norm` after PyTorch's forward): the same checks, in one place, and the batch count
    incremented without a torch op. Returns None, having changed nothing, whenever anything differs
    from that case: the caller then takes the general path. act: None, or ``(kind, alpha, dbn_act *)``
    -- the output is then act(BN(x)), in the same passes (:class:`~.norm_act.BatchNormAct2d`).

    Every tensor's type, dtype, device, shape, contiguity and address is read on every call (nothing
    about a tensor is cached: ``.data =``, ``set_``, ``resize_``, ``share_memory_`` or a new Parameter
    may change any of them between two calls)."""
    if (
        type(x) is not _Tensor
        or x.dtype is not _F32
        or not x.is_cpu
        or _peek() is not None
        or _fwd_ad._current_level >= 0
    ):
        return None
    d = m.__dict__
    momentum, eps = d["momentum"], d["eps"]
    if type(momentum) is not float or type(eps) is not float or not d["track_running_stats"]:
        return None
    p, bufs = d["_parameters"], d["_buffers"]
    weight, bias = p.get("weight"), p.get("bias")
    rm, rv, nbt = bufs.get("running_mean"), bufs.get("running_var"), bufs.get("num_batches_tracked")
    if rm is None or rv is None or nbt is None:
        return None
    m._check_input_dim(x)
    shape = x.shape
    c = shape[1]
    cs = (c,)
    numel = x.numel()
    # the per-channel tensors: plain, float32, CPU, (c,), contiguous, 4-byte aligned (chans_ok, inlined
    # for the four of the affine case; the handles of their addresses kept for the pass)
    if (
        numel == 0
        or (px := x.data_ptr()) & 3
        or type(rm) not in _PLAIN
        or rm.dtype is not _F32
        or not rm.is_cpu
        or rm.shape != cs
        or not rm.is_contiguous()
        or (pm := rm.data_ptr()) & 3
        or rm.requires_grad
        or type(rv) not in _PLAIN
        or rv.dtype is not _F32
        or not rv.is_cpu
        or rv.shape != cs
        or not rv.is_contiguous()
        or (pv := rv.data_ptr()) & 3
        or rv.requires_grad
    ):
        return None
    if weight is not None and bias is not None:
        if (
            type(weight) not in _PLAIN
            or weight.dtype is not _F32
            or not weight.is_cpu
            or weight.shape != cs
            or not weight.is_contiguous()
            or (pw := weight.data_ptr()) & 3
            or type(bias) not in _PLAIN
            or bias.dtype is not _F32
            or not bias.is_cpu
            or bias.shape != cs
            or not bias.is_contiguous()
            or (pb := bias.data_ptr()) & 3
        ):
            return None
        affine = True
    elif not chans_ok(c, weight, bias):
        return None
    else:
        affine = False
    if 1 not in shape and x.is_contiguous():  # _kernel_input_eager's common case
        xin, b, s = x, shape[0], numel // (shape[0] * c)
    else:
        xin, b, s = _kernel_input_eager(x)
        if xin is not x:
            px = xin.data_ptr()  # (a view of x at the same address, or an aligned copy)
    training = d["training"]
    if training:
        if (
            b * s < 2
            or type(nbt) is not _Tensor
            or nbt.dtype is not _I64
            or not nbt.is_cpu
            or nbt.dim()
            or (pn := nbt.data_ptr()) & 7
        ):
            return None
        _i64p(pn)[0] += 1  # nbt.add_(1) without its dispatch; its version is bumped by the pass
    else:
        nbt = None
    if _grad_enabled() and (
        x.requires_grad or (weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad)
    ):
        if training and affine:
            return _apply_train(
                xin, weight, bias,
                (rm, rv, nbt, _flavor((momentum, eps)), b, c, s, act, 4 * numel < _passes.CACHE_MIN_BYTES, eps,
                 _ptr(px), _ptr(pw), _ptr(pb), _ptr(pm), _ptr(pv)),
            )  # fmt: skip
        return _apply(xin, weight, bias, rm, rv, (training, momentum, eps, b, c, s, nbt, act))
    pact = _NULL if act is None else act[2]
    if training:
        return _train_forward(xin, weight, bias, rm, rv, b, c, s, momentum, eps, False, nbt, pact)[0]
    if affine:  # _infer_forward, inlined
        if 4 * numel < _passes.CACHE_MIN_BYTES:
            out, reused = _empty_like(xin), False
        else:
            out, reused = _new_out(xin)
        _backend.forward_infer_raw(
            _ptr(px), _ptr(out.data_ptr()), _ptr(pw), _ptr(pb), _ptr(pm), _ptr(pv), b, c, s,
            _flavor((0.0, eps)), pact, _run_streaming() if reused else _run_exec(),
        )  # fmt: skip
        return out
    return _infer_forward(xin, weight, bias, rm, rv, b, c, s, eps, pact)
