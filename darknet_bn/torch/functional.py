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

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _backend

__all__ = ["batch_norm"]

_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_F32 = torch.float32
_CL = torch.channels_last
_CL3 = torch.channels_last_3d
_CONTIG = torch.contiguous_format
_torch_bn = F.batch_norm
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_peek = torch._C._functorch.peek_interpreter_stack
_empty = torch.empty
_empty_like = torch.empty_like
_zeros = torch.zeros
_bump = torch.autograd.graph.increment_version
import torch.autograd.forward_ad as _fwd_ad  # noqa: E402


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
    order = list(range(d - 1, -1, -1))                 # innermost first
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
        if 1 in shape:   # size-1 dims may carry any stride: give them the standard ones (a view)
            x = _standard_view(x)
        return x, n, numel // (n * c)
    d = x.dim()
    if (d == 4 and x.is_contiguous(memory_format=_CL)) or (d == 5 and x.is_contiguous(memory_format=_CL3)):
        return x, numel // c, 1
    if d in (4, 5) and _strides_like_channels_last(x):
        return x.contiguous(memory_format=_CL if d == 4 else _CL3), numel // c, 1
    return x.contiguous(), n, numel // (n * c)


# ------------------------------------------------------------------------------------------------
# Eligibility: can the kernels run this call? (cheap attribute reads; anything else goes to torch)

def _chan_ok(t: Optional[Tensor], c: int) -> bool:
    return t is None or ((type(t) is _Tensor or type(t) is _Parameter) and t.dtype is _F32 and t.is_cpu
                         and t.numel() == c and t.is_contiguous())


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


# ------------------------------------------------------------------------------------------------
# The passes on tensors (eager)

def _train_forward(xin: Tensor, weight, bias, running_mean, running_var, b: int, c: int, s: int,
                   momentum: float, eps: float, keep: bool = True):
    """Training forward; returns (out, stats) with stats = [mean; biased var] (2*c floats; None
    unless keep: then the batch statistics go to the scratch buffer)."""
    out = _empty_like(xin)
    if keep:
        stats = _empty(2 * c, dtype=_F32)
        ps = stats.data_ptr()
    else:
        stats, ps = None, _scratch_ptr(c)
    if running_mean is None:    # no running statistics: update scratch ones with momentum 0
        prm = _scratch_ptr(c) + 8 * c
        prv, momentum = prm + 4 * c, 0.0
    else:
        prm, prv = running_mean.data_ptr(), running_var.data_ptr()
    _backend.forward_train(xin.data_ptr(), out.data_ptr(),
                           _ones_ptr(c) if weight is None else weight.data_ptr(),
                           _zeros_ptr(c) if bias is None else bias.data_ptr(),
                           ps, ps + 4 * c, prm, prv, b, c, s, momentum, eps)
    if running_mean is not None:
        _bump((running_mean, running_var))   # an in-place update, as PyTorch's (autograd's version check)
    return out, stats


def _infer_forward(xin: Tensor, weight, bias, running_mean, running_var, b: int, c: int, s: int, eps: float):
    out = _empty_like(xin)
    _backend.forward_infer(xin.data_ptr(), out.data_ptr(), 0 if weight is None else weight.data_ptr(),
                           0 if bias is None else bias.data_ptr(), running_mean.data_ptr(),
                           running_var.data_ptr(), b, c, s, eps)
    return out


def _backward(g: Tensor, xin: Tensor, weight, pmean: int, pvar: int, b: int, c: int, s: int, eps: float,
              train: bool, need_w: bool = True, need_b: bool = True):
    """(grad_input, grad_weight, grad_bias) from darknet_bn's backward; grad_input in xin's layout;
    grad_weight/grad_bias None unless needed."""
    # the output's gradient in xin's layout, read as it is (a copy only if autograd hands other strides)
    if xin.is_contiguous():
        if not g.is_contiguous():
            g = g.contiguous()
    else:
        fmt = _CL if xin.dim() == 4 else _CL3
        if not g.is_contiguous(memory_format=fmt):
            g = g.contiguous(memory_format=fmt)
    gi = _empty_like(xin)
    scratch = _scratch_ptr(c)
    gw = _zeros(c, dtype=_F32) if need_w else None
    gb = _zeros(c, dtype=_F32) if need_b else None
    _backend.backward(xin.data_ptr(), g.data_ptr(), gi.data_ptr(), _ones_ptr(c) if weight is None else weight.data_ptr(),
                      pmean, pvar, scratch if gw is None else gw.data_ptr(),
                      scratch + 4 * c if gb is None else gb.data_ptr(), scratch + 8 * c, b, c, s, eps, train)
    return gi, gw, gb


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


class _BatchNormFn(torch.autograd.Function):
    """Eager autograd for the kernels (cheaper per call than a custom operator's dispatch)."""

    @staticmethod
    def forward(ctx, xin, weight, bias, running_mean, running_var, meta):
        training, momentum, eps, b, s = meta
        c = xin.shape[1]
        ctx.dims = (b, c, s, eps, training)
        if training:
            out, stats = _train_forward(xin, weight, bias, running_mean, running_var, b, c, s, momentum, eps)
            ctx.stats = stats
            ctx.save_for_backward(xin, weight)
        else:
            out = _infer_forward(xin, weight, bias, running_mean, running_var, b, c, s, eps)
            ctx.save_for_backward(xin, weight, running_mean, running_var)
        return out

    @staticmethod
    def backward(ctx, g):
        b, c, s, eps, training = ctx.dims
        saved = ctx.saved_tensors
        xin, weight = saved[0], saved[1]
        need = ctx.needs_input_grad
        if _grad_enabled():        # create_graph=True: a differentiable backward
            gi, gw, gb = _torch_backward(g, xin, weight, None if training else saved[2],
                                         None if training else saved[3], training, eps)
        elif training:
            ps = ctx.stats.data_ptr()
            gi, gw, gb = _backward(g, xin, weight, ps, ps + 4 * c, b, c, s, eps, True, need[1], need[2])
        else:
            gi, gw, gb = _backward(g, xin, weight, saved[2].data_ptr(), saved[3].data_ptr(), b, c, s, eps, False,
                                   need[1], need[2])
        return gi if need[0] else None, gw if need[1] else None, gb if need[2] else None, None, None, None


# Function.apply without its Python wrapper (which binds default arguments for setup_context-style
# Functions and unwraps functorch's dead wrappers: neither applies here -- batch_norm() sends
# functorch transforms to torch -- and it costs ~4 us per call, as much as a small BN's whole pass).
_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, _BatchNormFn)


# ------------------------------------------------------------------------------------------------

def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
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
    if (type(x) is not _Tensor or x.dtype is not _F32 or not x.is_cpu or x.dim() < 2
            or _peek() is not None or _fwd_ad._current_level >= 0):
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    c = x.shape[1]
    if (x.numel() == 0 or not (_chan_ok(weight, c) and _chan_ok(bias, c) and _chan_ok(running_mean, c)
                               and _chan_ok(running_var, c))
            or (running_mean is None) != (running_var is None) or (not training and running_mean is None)
            or (running_mean is not None and (running_mean.requires_grad or running_var.requires_grad))
            or not isinstance(momentum, (int, float)) or not isinstance(eps, (int, float))):
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    xin, b, s = _kernel_input(x)
    if training and b * s < 2:     # PyTorch's "Expected more than 1 value per channel when training"
        return _torch_bn(input, running_mean, running_var, weight, bias, training, momentum, eps)
    training = bool(training)
    momentum, eps = float(momentum), float(eps)
    if _grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)
                            or (bias is not None and bias.requires_grad)):
        return _apply(xin, weight, bias, running_mean, running_var, (training, momentum, eps, b, s))
    if training:
        return _train_forward(xin, weight, bias, running_mean, running_var, b, c, s, momentum, eps, False)[0]
    return _infer_forward(xin, weight, bias, running_mean, running_var, b, c, s, eps)
