"""``BatchNormAct2d``: BatchNorm2d followed by an activation, timm's module on darknet_bn's passes.

timm's ``timm.layers.BatchNormAct2d`` (``timm/layers/norm_act.py``) is a ``torch.nn.BatchNorm2d``
subclass with two child modules, ``drop`` (``drop_layer()`` or ``nn.Identity``) and ``act`` (the
activation, or ``nn.Identity``); its forward is PyTorch's BatchNorm2d forward, then ``drop``, then
``act``; its state_dict is BatchNorm2d's (the children have none). This class has timm's constructor,
attributes and semantics, and is also a :class:`darknet_bn.torch.BatchNorm2d`.

Where darknet_bn can -- ``drop`` is ``nn.Identity``, ``act`` one of the activations of
:mod:`darknet_bn.torch._acts` (ReLU, LeakyReLU of any slope, SiLU, Mish, GELU exact or tanh,
Hardswish, Sigmoid, Tanh, ReLU6, ELU(alpha=1)) with no hooks, a float32 CPU input, a float momentum
and tracked running statistics -- the activation runs inside BN's passes: the training forward writes
act(BN(x)) in one pass, and the backward applies the activation's derivative inside BN's backward
passes (the pre-activation recomputed from x and the statistics: nothing tensor-sized is saved
besides x). Anything else runs darknet_bn's BatchNorm2d (or its PyTorch fallback), then ``drop``,
then ``act``, as timm does. Under ``torch.compile`` the fused passes are custom operators
(``darknet_bn::batch_norm_act_train`` / ``_infer`` / ``_backward``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_mod

from . import _backend
from ._acts import ACT_LAYERS, LINEAR, fused_kind
from .functional import module_forward
from .modules import BatchNorm2d, _bn_args

__all__ = ["BatchNormAct2d", "get_act_layer"]

_is_compiling = torch.compiler.is_compiling
_Identity = nn.Identity


class _InputDimError(ValueError, AssertionError):
    """A non-4-D input: timm raises AssertionError ('expected 4D input (got ND input)'), PyTorch's
    BatchNorm2d ValueError; this is both."""


def get_act_layer(name: Any) -> Any:
    """timm's ``get_act_layer``: a name (see ``darknet_bn.torch._acts.ACT_LAYERS``) -> the layer
    class; a class or any other callable is returned as it is; None or '' -> None."""
    if not name:
        return None
    if not isinstance(name, str):
        return name
    try:
        return ACT_LAYERS[name]
    except KeyError:
        raise ValueError(
            f"act_layer: expected an activation class or one of {', '.join(ACT_LAYERS)}, got {name!r}"
        ) from None


def _create_act(act_layer: Any, act_kwargs: dict | None, inplace: bool, apply_act: bool) -> nn.Module:
    """timm's ``_create_act`` (the caller's act_kwargs is not modified; timm's adds 'inplace' to it)."""
    layer = get_act_layer(act_layer)
    kwargs = dict(act_kwargs or {})
    if layer is not None and apply_act:
        if inplace:
            kwargs["inplace"] = inplace
        return layer(**kwargs)
    return nn.Identity()


def _hooked(m: nn.Module) -> bool:
    """m has hooks of its own, or global module hooks are set: it must be called, not fused."""
    return bool(
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or m._backward_pre_hooks
        or _module_mod._global_forward_hooks
        or _module_mod._global_forward_pre_hooks
        or _module_mod._global_backward_hooks
        or _module_mod._global_backward_pre_hooks
    )


class BatchNormAct2d(BatchNorm2d):
    """BatchNorm2d then an activation (timm's ``BatchNormAct2d``): input ``(N, C, H, W)``, contiguous or
    channels_last; output of the same shape and memory format.

    Arguments as timm's: ``num_features``, ``eps``, ``momentum`` (None: cumulative average),
    ``affine``, ``track_running_stats`` (BatchNorm2d's); ``apply_act`` (False: ``act`` is
    nn.Identity), ``act_layer`` (a module class, a name such as ``"relu"``, ``"silu"``,
    ``"leaky_relu"``, ``"gelu"``, ``"hard_swish"``, or None), ``act_kwargs`` (the class's arguments,
    e.g. ``{"negative_slope": 0.1}``), ``inplace`` (passed to the class as ``inplace=True``, as timm
    does), ``drop_layer`` (a class called with no argument; applied between BN and the activation),
    ``device``, ``dtype``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        apply_act: bool = True,
        act_layer: Any = nn.ReLU,
        act_kwargs: dict | None = None,
        inplace: bool = True,
        drop_layer: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = _create_act(act_layer, act_kwargs, inplace, apply_act)

    def _fused(self) -> tuple[int, float] | None:
        """(kind, alpha) when the passes apply the activation themselves, else None."""
        mods = self._modules
        drop, act = mods.get("drop"), mods.get("act")
        if type(drop) is not _Identity or act is None or _hooked(drop) or _hooked(act):
            return None
        return fused_kind(act)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise _InputDimError(f"expected 4D input (got {x.ndim}D input)")
        fk = self._fused()
        if fk is not None:
            kind, alpha = fk
            if kind == LINEAR:
                return BatchNorm2d.forward(self, x)
            if _is_compiling():
                from . import _ops

                return _ops.batch_norm_act_compiled(x, *_bn_args(self), kind, alpha)
            out = module_forward(self, x, (kind, alpha, _backend.act_struct(kind, alpha)))
            if out is not None:
                return out
            # not the common case (another dtype or device, momentum=None, ...): unfused, as timm
        x = BatchNorm2d.forward(self, x)
        x = self.drop(x)
        return self.act(x)
