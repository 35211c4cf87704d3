"""darknet_bn's passes as PyTorch custom operators, for ``torch.compile`` (and export).

- ``darknet_bn::batch_norm_train(x, weight?, bias?, running_mean?, running_var?, momentum, eps)
  -> (out, mean, var, new_running_mean, new_running_var)``: the training forward. Functional:
  ``torch.library`` registers autograd formulas only for functional operators, so the op does not
  write the running statistics -- it returns their updated values (computed by the same C pass, so
  identical to eager's in-place update), and :func:`batch_norm_compiled` copies them into the
  buffers: a mutation the compiled graph declares (AOTAutograd applies it to the module's buffers).
  Without running statistics the last two outputs are empty.
- ``darknet_bn::batch_norm_infer(x, weight?, bias?, running_mean, running_var, eps) -> out``.
- ``darknet_bn::batch_norm_backward(grad_out, x, weight?, mean, var, eps, training)
  -> (grad_input, grad_weight, grad_bias)``: the backward of both (mean/var: the batch's when
  training, the running ones otherwise). The two forwards' autograd formulas call it.
- ``batch_norm_act_train`` / ``batch_norm_act_infer`` / ``batch_norm_act_backward``: the same with
  ``kind: int, alpha: float`` (a DBN_ACT_* kind, :mod:`._acts`) and, for the backward, ``bias?``:
  out = act(BN(x)), and the gradients of that (grad_out is the activation output's gradient).

Each has a fake (meta) implementation giving the real one's shapes, dtypes and strides. Eager calls
do not go through these operators: a custom operator's dispatch costs more per call than the whole
pass on small tensors, so :func:`darknet_bn.torch.batch_norm` calls the kernels directly unless
``torch.compiler.is_compiling()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _backend
from ._acts import torch_act
from ._passes import _backward, _infer_forward, _kernel_input, _train_forward, aligned_copy, chan_ok

__all__ = [
    "batch_norm_train",
    "batch_norm_infer",
    "batch_norm_backward",
    "batch_norm_compiled",
    "batch_norm_act_train",
    "batch_norm_act_infer",
    "batch_norm_act_backward",
    "batch_norm_act_compiled",
]

_F32 = torch.float32


def _c(x: Tensor) -> int:
    return x.shape[1]


# ------------------------------------------------------------------------------------------------
# Training forward


@torch.library.custom_op("darknet_bn::batch_norm_train", mutates_args=(), device_types="cpu")
def batch_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, weight, bias = aligned_copy(x), aligned_copy(weight), aligned_copy(bias)  # (C reads float *)
    xin, b, s = _kernel_input(x)
    c = _c(x)
    if running_mean is None or running_var is None:
        out, stats = _train_forward(xin, weight, bias, None, None, b, c, s, momentum, eps)
        nrm, nrv = x.new_empty(0), x.new_empty(0)
    else:
        nrm, nrv = running_mean.clone(), running_var.clone()
        out, stats = _train_forward(xin, weight, bias, nrm, nrv, b, c, s, momentum, eps)
    return out, stats[:c].clone(), stats[c : 2 * c].clone(), nrm, nrv


@batch_norm_train.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps):
    xin = _kernel_input(x)[0]
    c = _c(x)
    n = 0 if running_mean is None else c
    return (torch.empty_like(xin), x.new_empty(c), x.new_empty(c), x.new_empty(n), x.new_empty(n))


def _train_setup(ctx, inputs, output):
    x, weight, bias, _rm, _rv, _mom, eps = inputs
    _out, mean, var, nrm, nrv = output
    ctx.save_for_backward(x, weight, mean, var)
    ctx.eps = eps
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.mark_non_differentiable(mean, var, nrm, nrv)


def _train_backward(ctx, g, _gm, _gv, _grm, _grv):
    x, weight, mean, var = ctx.saved_tensors
    gi, gw, gb = batch_norm_backward(g, x, weight, mean, var, ctx.eps, True)
    return gi, gw if ctx.has_weight else None, gb if ctx.has_bias else None, None, None, None, None


batch_norm_train.register_autograd(_train_backward, setup_context=_train_setup)


# ------------------------------------------------------------------------------------------------
# Inference forward


@torch.library.custom_op("darknet_bn::batch_norm_infer", mutates_args=(), device_types="cpu")
def batch_norm_infer(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor, running_var: Tensor, eps: float
) -> Tensor:
    x, weight, bias = aligned_copy(x), aligned_copy(weight), aligned_copy(bias)  # (C reads float *)
    running_mean, running_var = aligned_copy(running_mean), aligned_copy(running_var)
    xin, b, s = _kernel_input(x)
    return _infer_forward(xin, weight, bias, running_mean, running_var, b, _c(x), s, eps)


@batch_norm_infer.register_fake
def _(x, weight, bias, running_mean, running_var, eps):
    return torch.empty_like(_kernel_input(x)[0])


def _infer_setup(ctx, inputs, output):
    x, weight, bias, rm, rv, eps = inputs
    ctx.save_for_backward(x, weight, rm, rv)
    ctx.eps = eps
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None


def _infer_backward(ctx, g):
    x, weight, rm, rv = ctx.saved_tensors
    gi, gw, gb = batch_norm_backward(g, x, weight, rm, rv, ctx.eps, False)
    return gi, gw if ctx.has_weight else None, gb if ctx.has_bias else None, None, None, None


batch_norm_infer.register_autograd(_infer_backward, setup_context=_infer_setup)


# ------------------------------------------------------------------------------------------------
# Backward


@torch.library.custom_op("darknet_bn::batch_norm_backward", mutates_args=(), device_types="cpu")
def batch_norm_backward(
    grad_out: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, var: Tensor, eps: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    x, weight = aligned_copy(x), aligned_copy(weight)  # (C reads float *; the gradient: in _backward)
    xin, b, s = _kernel_input(x)
    c = _c(x)
    mean, var = mean.contiguous(), var.contiguous()
    gi, gw, gb = _backward(grad_out, xin, weight, mean.data_ptr(), var.data_ptr(), b, c, s, eps, training)
    return gi, gw, gb


@batch_norm_backward.register_fake
def _(grad_out, x, weight, mean, var, eps, training):
    c = _c(x)
    return torch.empty_like(_kernel_input(x)[0]), x.new_empty(c), x.new_empty(c)


# ------------------------------------------------------------------------------------------------
# What batch_norm() runs while torch.compile traces


def _kernels_apply(x, weight, bias, running_mean, running_var, training, momentum, eps) -> bool:
    """Whether the custom operators apply under ``torch.compile`` (the same conditions as eager):
    float32 on the CPU, at least 2-D and not empty, per-channel tensors of shape (C,), running
    statistics both or neither and not requiring grad, and in training two values per channel."""
    ok = (
        x.dtype == _F32
        and x.device.type == "cpu"
        and x.dim() >= 2
        and x.numel() > 0
        and all(chan_ok(t, x.shape[1], traced=True) for t in (weight, bias, running_mean, running_var))
        and (running_mean is None) == (running_var is None)
        and not (running_mean is not None and running_mean.requires_grad)
        and not (running_var is not None and running_var.requires_grad)
        and (training or running_mean is not None)
        and isinstance(momentum, (int, float))
        and isinstance(eps, (int, float))
    )
    return bool(ok and (not training or x.numel() // x.shape[1] >= 2))


def batch_norm_compiled(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """:func:`darknet_bn.torch.batch_norm` under ``torch.compile``: the custom operators where the
    kernels apply (the same conditions as eager), ``torch.nn.functional.batch_norm`` otherwise."""
    x = input
    if not _kernels_apply(x, weight, bias, running_mean, running_var, training, momentum, eps):
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not training:
        return batch_norm_infer(x, weight, bias, running_mean, running_var, float(eps))
    out, _m, _v, nrm, nrv = batch_norm_train(x, weight, bias, running_mean, running_var, float(momentum), float(eps))
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(nrm)
            running_var.copy_(nrv)
    return out


# ------------------------------------------------------------------------------------------------
# BN with an activation in the same passes (BatchNormAct2d): kind, alpha as darknet_bn.torch._acts


def _pact(kind: int, alpha: float):
    return _backend.act_struct(kind, alpha)


@torch.library.custom_op("darknet_bn::batch_norm_act_train", mutates_args=(), device_types="cpu")
def batch_norm_act_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    kind: int,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, weight, bias = aligned_copy(x), aligned_copy(weight), aligned_copy(bias)  # (C reads float *)
    xin, b, s = _kernel_input(x)
    c = _c(x)
    a = _pact(kind, alpha)
    if running_mean is None or running_var is None:
        out, stats = _train_forward(xin, weight, bias, None, None, b, c, s, momentum, eps, True, None, a)
        nrm, nrv = x.new_empty(0), x.new_empty(0)
    else:
        nrm, nrv = running_mean.clone(), running_var.clone()
        out, stats = _train_forward(xin, weight, bias, nrm, nrv, b, c, s, momentum, eps, True, None, a)
    return out, stats[:c].clone(), stats[c : 2 * c].clone(), nrm, nrv


@batch_norm_act_train.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps, kind, alpha):
    xin = _kernel_input(x)[0]
    c = _c(x)
    n = 0 if running_mean is None else c
    return (torch.empty_like(xin), x.new_empty(c), x.new_empty(c), x.new_empty(n), x.new_empty(n))


def _act_train_setup(ctx, inputs, output):
    x, weight, bias, _rm, _rv, _mom, eps, kind, alpha = inputs
    _out, mean, var, nrm, nrv = output
    ctx.save_for_backward(x, weight, bias, mean, var)
    ctx.eps, ctx.kind, ctx.alpha = eps, kind, alpha
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.mark_non_differentiable(mean, var, nrm, nrv)


def _act_train_backward(ctx, g, _gm, _gv, _grm, _grv):
    x, weight, bias, mean, var = ctx.saved_tensors
    gi, gw, gb = batch_norm_act_backward(g, x, weight, bias, mean, var, ctx.eps, True, ctx.kind, ctx.alpha)
    return (gi, gw if ctx.has_weight else None, gb if ctx.has_bias else None) + (None,) * 6


batch_norm_act_train.register_autograd(_act_train_backward, setup_context=_act_train_setup)


@torch.library.custom_op("darknet_bn::batch_norm_act_infer", mutates_args=(), device_types="cpu")
def batch_norm_act_infer(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    kind: int,
    alpha: float,
) -> Tensor:
    x, weight, bias = aligned_copy(x), aligned_copy(weight), aligned_copy(bias)  # (C reads float *)
    running_mean, running_var = aligned_copy(running_mean), aligned_copy(running_var)
    xin, b, s = _kernel_input(x)
    return _infer_forward(xin, weight, bias, running_mean, running_var, b, _c(x), s, eps, _pact(kind, alpha))


@batch_norm_act_infer.register_fake
def _(x, weight, bias, running_mean, running_var, eps, kind, alpha):
    return torch.empty_like(_kernel_input(x)[0])


def _act_infer_setup(ctx, inputs, output):
    x, weight, bias, rm, rv, eps, kind, alpha = inputs
    ctx.save_for_backward(x, weight, bias, rm, rv)
    ctx.eps, ctx.kind, ctx.alpha = eps, kind, alpha
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None


def _act_infer_backward(ctx, g):
    x, weight, bias, rm, rv = ctx.saved_tensors
    gi, gw, gb = batch_norm_act_backward(g, x, weight, bias, rm, rv, ctx.eps, False, ctx.kind, ctx.alpha)
    return (gi, gw if ctx.has_weight else None, gb if ctx.has_bias else None) + (None,) * 5


batch_norm_act_infer.register_autograd(_act_infer_backward, setup_context=_act_infer_setup)


@torch.library.custom_op("darknet_bn::batch_norm_act_backward", mutates_args=(), device_types="cpu")
def batch_norm_act_backward(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    training: bool,
    kind: int,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    x, weight, bias = aligned_copy(x), aligned_copy(weight), aligned_copy(bias)
    xin, b, s = _kernel_input(x)
    c = _c(x)
    mean, var = mean.contiguous(), var.contiguous()
    return _backward(
        grad_out,
        xin,
        weight,
        mean.data_ptr(),
        var.data_ptr(),
        b,
        c,
        s,
        eps,
        training,
        True,
        True,
        bias,
        _pact(kind, alpha),
    )


@batch_norm_act_backward.register_fake
def _(grad_out, x, weight, bias, mean, var, eps, training, kind, alpha):
    c = _c(x)
    return torch.empty_like(_kernel_input(x)[0]), x.new_empty(c), x.new_empty(c)


def batch_norm_act_compiled(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    kind: int,
    alpha: float,
) -> Tensor:
    """act(batch_norm(...)) under ``torch.compile``: the fused custom operators where the kernels
    apply (the conditions of :func:`batch_norm_compiled`), else F.batch_norm then the activation."""
    x = input
    if not _kernels_apply(x, weight, bias, running_mean, running_var, training, momentum, eps):
        return torch_act(
            kind, alpha, F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        )
    if not training:
        return batch_norm_act_infer(x, weight, bias, running_mean, running_var, float(eps), kind, float(alpha))
    out, _m, _v, nrm, nrv = batch_norm_act_train(
        x, weight, bias, running_mean, running_var, float(momentum), float(eps), kind, float(alpha)
    )
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(nrm)
            running_var.copy_(nrv)
    return out
