"""``convert``: swap darknet_bn's BatchNorm modules into a model, folding BatchNorm2d + activation pairs
of an ``nn.Sequential`` into :class:`~darknet_bn.torch.BatchNormAct2d`."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._acts import LINEAR, fused_kind
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .norm_act import BatchNormAct2d, _hooked

__all__ = ["convert"]

_OURS: dict[type, type[_BatchNorm]] = {
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.BatchNorm3d: BatchNorm3d,
}


def _swap(m: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    new = memo.get(id(m))
    if new is None:
        new = _OURS[type(m)].__new__(_OURS[type(m)])
        # The same state: the same Parameter and buffer objects (an optimizer built before still
        # holds them), the same hooks, training flag and hyperparameters.
        new.__dict__ = dict(m.__dict__)
        memo[id(m)] = new
    return new


def _fold_activations(root: nn.Module) -> None:
    """In every nn.Sequential of root: a BatchNorm2d (torch's or ours) directly followed by an
    activation the passes apply themselves becomes a BatchNormAct2d with that activation module (the
    same parameter and buffer tensors), and the activation's slot an nn.Identity (indices and
    state_dict keys unchanged). Not folded: a BN or activation with hooks, or a BN that appears at
    more than one place in root."""
    seen: dict[int, int] = {}
    for _name, m in root.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    for parent in list(root.modules()):
        if type(parent) is not nn.Sequential:
            continue
        names = list(parent._modules)
        i = 0
        while i + 1 < len(names):
            bn, act = parent._modules[names[i]], parent._modules[names[i + 1]]
            fk = fused_kind(act)
            if (
                type(bn) in (nn.BatchNorm2d, BatchNorm2d)
                and fk is not None
                and fk[0] != LINEAR
                and seen.get(id(bn)) == 1
                and bn is not None
                and act is not None
                and not _hooked(bn)
                and not _hooked(act)
            ):
                new = BatchNormAct2d.__new__(BatchNormAct2d)
                d = dict(bn.__dict__)  # the same Parameters, buffers, flags and (empty) hook dicts
                d["_modules"] = {"drop": nn.Identity(), "act": act}
                new.__dict__ = d
                parent._modules[names[i]] = new
                parent._modules[names[i + 1]] = nn.Identity()
                i += 2
            else:
                i += 1


def convert(module: nn.Module, fold_activations: bool = True) -> nn.Module:
    """Replace every ``torch.nn.BatchNorm1d``/``2d``/``3d`` in ``module`` (exactly those classes, not
    their subclasses, nor SyncBatchNorm or the lazy, uninitialized ones) by darknet_bn's.

    The new modules hold the very same ``Parameter`` and buffer tensors (no copy), so an optimizer
    built before the conversion keeps working, and ``state_dict`` is unchanged. Containers are
    modified in place and returned; when ``module`` itself is a BatchNorm, a new module is returned
    (the argument keeps working too: it shares the tensors). A BN module that appears at several
    places becomes one new module.

    ``fold_activations`` (default True): inside an ``nn.Sequential``, a BatchNorm2d directly followed
    by an activation that darknet_bn's passes apply themselves (ReLU, LeakyReLU, SiLU, Mish, GELU,
    Hardswish, Sigmoid, Tanh, ReLU6, ELU(alpha=1): see :mod:`darknet_bn.torch.norm_act`) becomes one
    :class:`~darknet_bn.torch.BatchNormAct2d` holding that activation module, and the activation's
    slot an ``nn.Identity`` -- indices, ``state_dict`` keys and the parameters stay; the results are
    the same (float32 rounding apart), the forward and backward one pass each instead of two. BNs or
    activations with hooks, and a BN used at several places, are not folded. False: only the swap.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(fold_activations, bool):
        raise TypeError(f"fold_activations: expected a bool, got {type(fold_activations).__name__}")
    memo: dict[int, nn.Module] = {}
    if type(module) in _OURS:
        return _swap(module, memo)
    if fold_activations:
        _fold_activations(module)
    for parent in module.modules():
        for name, child in list(parent._modules.items()):
            if child is not None and type(child) in _OURS:
                parent._modules[name] = _swap(child, memo)
    return module
