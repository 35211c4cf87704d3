"""darknet_bn in PyTorch: drop-in BatchNorm modules on darknet_bn's kernels (CPU, float32).

    import darknet_bn.torch as dbt
    model = dbt.convert(model)        # every nn.BatchNorm1d/2d/3d -> darknet_bn's, same tensors
    # or build with dbt.BatchNorm2d(64), or call dbt.batch_norm(x, rm, rv, w, b, training, momentum, eps)

- :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d`: subclasses of the ``torch.nn``
  classes (same constructor, parameters, buffers, state_dict, modes and errors), forward and backward
  on darknet_bn's fused passes with PyTorch's semantics and exact gradient.
- :class:`BatchNormAct2d`: timm's BatchNorm2d + activation module, the activation inside BN's passes
  (forward and backward) for ReLU, LeakyReLU, SiLU, Mish, GELU, Hardswish and a few more.
- :func:`convert`: swap them into an existing model (folding BatchNorm2d + activation pairs of an
  ``nn.Sequential`` into BatchNormAct2d; ``fold_activations=False``: only the swap).
- :class:`SyncBatchNorm`: ``torch.nn.SyncBatchNorm`` for CPU tensors over ``torch.distributed``
  (gloo), DDP included (:mod:`darknet_bn.torch.sync`).
- :func:`batch_norm`: ``torch.nn.functional.batch_norm``'s signature.
- Float32 CPU tensors run the kernels; other dtypes and devices run PyTorch (see
  :mod:`darknet_bn.torch.functional`). ``torch.compile`` works (custom operators, :mod:`._ops`).
- Threads: ``torch.get_num_threads()`` per call, unless :func:`set_num_threads` fixes a count.
- Outputs of 8 MiB and more reuse memory that no tensor holds any more (no page faults per call;
  stores into such reused memory stream past the caches above the engine's thresholds):
  :func:`set_output_cache` caps it (1 GiB by default; 0: off), :func:`empty_output_cache` frees it.

Importing this module imports torch; ``import darknet_bn`` alone never does.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"darknet_bn.torch needs PyTorch (pip install 'darknet_bn[torch]'): {e}") from e

from . import _ops  # noqa: F401  (registers the custom operators)
from ._backend import get_num_threads, set_num_threads
from ._convert import convert
from ._passes import empty_output_cache, output_cache_bytes, set_output_cache
from .functional import batch_norm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .norm_act import BatchNormAct2d
from .sync import SyncBatchNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormAct2d",
    "convert",
    "batch_norm",
    "set_num_threads",
    "get_num_threads",
    "SyncBatchNorm",
    "set_output_cache",
    "empty_output_cache",
    "output_cache_bytes",
]
