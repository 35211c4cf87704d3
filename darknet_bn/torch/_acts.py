"""Which PyTorch activation modules darknet_bn's passes apply themselves, as which C kind.

A module maps to a ``DBN_ACT_*`` kind (csrc/darknet_bn.h) only where the C activation is the same
function as PyTorch's up to float32 rounding -- exact module types (a subclass may override forward):

==========================================  ==============================  ==========================
PyTorch                                     C kind                          note
==========================================  ==============================  ==========================
``nn.ReLU``                                 ``DBN_ACT_RELU``
``nn.LeakyReLU(negative_slope)``            ``DBN_ACT_LEAKY``, alpha =      any slope
                                            negative_slope
``nn.SiLU``                                 ``DBN_ACT_SWISH``
``nn.Mish``                                 ``DBN_ACT_MISH``
``nn.GELU()`` (approximate='none')          ``DBN_ACT_GELU_ERF``
``nn.GELU(approximate='tanh')``             ``DBN_ACT_GELU``                Darknet's constants
                                                                            .797885, .035677 (torch's
                                                                            differ by < 5e-7)
``nn.Hardswish``                            ``DBN_ACT_HARDSWISH``
``nn.Sigmoid`` / ``nn.Tanh`` / ``nn.ReLU6``  ``LOGISTIC`` / ``TANH`` / ``RELU6``
``nn.ELU(alpha=1.0)``                       ``DBN_ACT_ELU``                 other alphas: not fused
``nn.Identity``                             (none: plain BN)
this module's GELU, GELUTanh, Sigmoid, Tanh  ERF, GELU, LOGISTIC, TANH       (timm's names' classes)
==========================================  ==============================  ==========================

Not fused: ``nn.SELU`` (Darknet's constants 1.0507 and 1.6732 are torch's only to 4e-5), ``nn.ELU``
with another alpha, ``nn.CELU``, ``nn.PReLU`` (parameters), anything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LINEAR", "fused_kind", "torch_act", "KIND_NAMES", "ACT_LAYERS", "GELU", "GELUTanh", "Sigmoid", "Tanh"]

# enum dbn_activation (csrc/darknet_bn.h)
# (GELU_TANH is DBN_ACT_GELU, Darknet's tanh form; the name GELU is timm's module below)
LINEAR, LEAKY, RELU, RELU6, LOGISTIC, TANH, ELU, SELU, GELU_TANH, SWISH, MISH, HARD_MISH = range(12)
HARDSWISH, GELU_ERF = 12, 13

KIND_NAMES = {
    LEAKY: "leaky",
    RELU: "relu",
    RELU6: "relu6",
    LOGISTIC: "logistic",
    TANH: "tanh",
    ELU: "elu",
    GELU_TANH: "gelu",
    SWISH: "swish",
    MISH: "mish",
    HARDSWISH: "hardswish",
    GELU_ERF: "gelu_erf",
}


class GELU(nn.Module):
    """``torch.nn.GELU()`` with a dummy ``inplace`` argument (as timm's, for the name ``"gelu"``)."""

    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.gelu(input)


class GELUTanh(nn.Module):
    """``torch.nn.GELU(approximate='tanh')`` with a dummy ``inplace`` (timm's ``"gelu_tanh"``)."""

    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.gelu(input, approximate="tanh")


class Sigmoid(nn.Module):
    """The logistic function with an ``inplace`` argument (timm's ``"sigmoid"``)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sigmoid_() if self.inplace else x.sigmoid()


class Tanh(nn.Module):
    """tanh with an ``inplace`` argument (timm's ``"tanh"``)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.tanh_() if self.inplace else x.tanh()


#: Activation layers by name, as timm's ``get_act_layer`` resolves them (PyTorch's classes, or the
#: small classes above where timm uses its own with a dummy ``inplace``). timm's own PReLU,
#: QuickGELU and HardMish are not here: pass such a class itself as ``act_layer``.
ACT_LAYERS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "celu": nn.CELU,
    "selu": nn.SELU,
    "gelu": GELU,
    "gelu_tanh": GELUTanh,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "hard_sigmoid": nn.Hardsigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "hard_swish": nn.Hardswish,
    "hardswish": nn.Hardswish,
    "identity": nn.Identity,
}


_SIMPLE: dict[type, int] = {
    GELU: GELU_ERF,
    GELUTanh: GELU_TANH,
    Sigmoid: LOGISTIC,
    Tanh: TANH,
    nn.ReLU: RELU,
    nn.SiLU: SWISH,
    nn.Mish: MISH,
    nn.Hardswish: HARDSWISH,
    nn.Sigmoid: LOGISTIC,
    nn.Tanh: TANH,
    nn.ReLU6: RELU6,
    nn.Identity: LINEAR,
}


def fused_kind(m: object) -> tuple[int, float] | None:
    """``(kind, alpha)`` when the passes can apply module m themselves (LINEAR for nn.Identity),
    else None. Reads the module's settings on every call (they are plain attributes)."""
    t = type(m)
    k = _SIMPLE.get(t)
    if k is not None:
        return k, 0.0
    if t is nn.LeakyReLU:
        slope = m.negative_slope  # type: ignore[attr-defined]
        if isinstance(slope, (int, float)) and not isinstance(slope, bool):
            return LEAKY, float(slope)
        return None
    if t is nn.GELU:
        a = m.approximate  # type: ignore[attr-defined]
        return (GELU_ERF, 0.0) if a == "none" else (GELU_TANH, 0.0) if a == "tanh" else None
    if t is nn.ELU and m.alpha == 1.0:  # type: ignore[attr-defined]
        return ELU, 0.0
    return None


def torch_act(kind: int, alpha: float, x: torch.Tensor) -> torch.Tensor:
    """The kind's activation with PyTorch's operations (differentiable; the compiled graph's and the
    double backward's)."""
    if kind == RELU:
        return F.relu(x)
    if kind == LEAKY:
        return F.leaky_relu(x, alpha)
    if kind == SWISH:
        return F.silu(x)
    if kind == MISH:
        return F.mish(x)
    if kind == GELU_ERF:
        return F.gelu(x)
    if kind == GELU_TANH:
        return F.gelu(x, approximate="tanh")
    if kind == HARDSWISH:
        return F.hardswish(x)
    if kind == LOGISTIC:
        return torch.sigmoid(x)
    if kind == TANH:
        return torch.tanh(x)
    if kind == RELU6:
        return F.relu6(x)
    if kind == ELU:
        return F.elu(x)
    if kind == LINEAR:
        return x
    raise ValueError(f"kind: expected a fused activation kind, got {kind}")
