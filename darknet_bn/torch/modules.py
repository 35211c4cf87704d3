"""Drop-in ``BatchNorm1d``/``2d``/``3d`` on darknet_bn's kernels (:func:`convert` is in :mod:`._convert`).

The classes subclass ``torch.nn.BatchNorm1d``/``2d``/``3d`` and only replace ``forward``: the
constructor (signature and all), parameters (``weight``, ``bias``), buffers (``running_mean``,
``running_var``, ``num_batches_tracked``), ``state_dict`` keys, ``train()``/``eval()``, the
cumulative average (``momentum=None``), ``track_running_stats=False``, ``affine=False``,
``bias=False`` and the input checks are PyTorch's own. ``forward`` is PyTorch's, calling
:func:`darknet_bn.torch.batch_norm` instead of ``torch.nn.functional.batch_norm``: float32 CPU
inputs run darknet_bn's kernels, everything else PyTorch's (see :mod:`darknet_bn.torch.functional`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import batch_norm, module_forward

_is_compiling = torch.compiler.is_compiling

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


# For the type checker the mixin is a _BatchNorm (it only ever runs as one); at run time it is a plain
# mixin placed before the torch.nn class.
if TYPE_CHECKING:
    _Mixin = _BatchNorm
else:
    _Mixin = object


class _DarknetBN(_Mixin):
    """The forward of darknet_bn's BatchNorm modules (mixed in before the torch.nn class)."""

    def forward(self: _BatchNorm, input: Tensor) -> Tensor:
        if not _is_compiling():
            out = module_forward(self, input)  # the common case, in fewer steps (None: not that case)
            if out is not None:
                return out
        self._check_input_dim(input)
        return batch_norm(input, *_bn_args(self))


def _bn_args(
    self: _BatchNorm,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, bool, float, float]:
    """PyTorch's _BatchNorm.forward up to its F.batch_norm call (num_batches_tracked counted):
    (running_mean, running_var, weight, bias, bn_training, exponential_average_factor, eps)."""
    # Eagerly, the parameters and buffers are read from their dicts (nn.Module.__getattr__ costs
    # ~0.5 us a read).
    weight: Tensor | None
    bias: Tensor | None
    if _is_compiling():
        weight, bias = self.weight, self.bias
        running_mean, running_var, nbt = self.running_mean, self.running_var, self.num_batches_tracked
    else:
        p, b = self._parameters, self._buffers
        weight, bias = p.get("weight"), p.get("bias")
        running_mean, running_var, nbt = b.get("running_mean"), b.get("running_var"), b.get("num_batches_tracked")
    momentum = self.momentum
    exponential_average_factor = 0.0 if momentum is None else momentum
    training = self.training
    if training and self.track_running_stats and nbt is not None:
        nbt.add_(1)
        if momentum is None:  # cumulative moving average
            exponential_average_factor = 1.0 / float(nbt)
    if training:
        bn_training = True
    else:
        bn_training = running_mean is None and running_var is None
    use_stats = not training or self.track_running_stats
    return (
        running_mean if use_stats else None,
        running_var if use_stats else None,
        weight,
        bias,
        bn_training,
        exponential_average_factor,
        self.eps,
    )


class BatchNorm1d(_DarknetBN, nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on darknet_bn's kernels. Input ``(N, C)`` or ``(N, C, L)``."""


class BatchNorm2d(_DarknetBN, nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on darknet_bn's kernels. Input ``(N, C, H, W)``, contiguous or
    channels_last (no copy either way)."""


class BatchNorm3d(_DarknetBN, nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` on darknet_bn's kernels. Input ``(N, C, D, H, W)``, contiguous or
    channels_last_3d (no copy either way)."""
