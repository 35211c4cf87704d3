"""The flavors: how one batch-normalization implementation reproduces each reference.

A flavor is data -- a row of numbers handed to C as a ``dbn_flavor`` struct -- not an ``if`` in every
function. Denominators are written ``sqrt(var + eps)`` ("eps in the sqrt") or ``sqrt(var) + eps``.

============  =====================  =====================  ============================
              pjreddie (default)     alexeyab               torch
============  =====================  =====================  ============================
variance      unbiased (N-1)         unbiased (N-1)         biased (N) to normalize,
                                                            unbiased in the rolling stat
forward       sqrt(var) + 1e-6       sqrt(var + 1e-5)       sqrt(var + 1e-5)
inference     sqrt(rv) + 1e-6        sqrt(rv + 1e-5)        sqrt(rv + 1e-5)
rolling       .99 old + .01 new      .9 old + .1 new        .9 old + .1 new
backward      delta/sqrt(var+1e-5)   delta/(sqrt(var)+1e-5) the exact gradient
new layer     rolling var 0          rolling var 0          rolling var 1
============  =====================  =====================  ============================

``mean_delta`` and ``variance_delta`` use ``sqrt(var + 1e-5)`` and divide by N in every flavor, as
Darknet does. With a biased variance and one eps throughout, that *is* the exact gradient (see
docs/backward.md), which is what the ``torch`` flavor is. Darknet's constants are float literals
(``.00001f``), so the Darknet flavors carry them rounded to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Flavor", "FLAVORS", "get_flavor", "torch_flavor"]


def _f32(v: float) -> float:
    return float(np.float32(v))


@dataclass(frozen=True)
class Flavor:
    """One row of the flavor table (see the module docstring).

    Attributes:
        name: the flavor's name.
        momentum: weight of the batch statistic in the rolling update,
            ``rolling = (1 - momentum) * rolling + momentum * batch_stat``.
        eps, eps_in_sqrt: the forward and inference denominator, ``sqrt(var + eps)`` when
            ``eps_in_sqrt`` else ``sqrt(var) + eps``.
        unbiased: whether the batch variance that normalizes (the layer's ``variance``) divides by
            N-1 (Darknet) or N (PyTorch). The rolling variance always takes the unbiased one.
        bwd_eps, bwd_eps_in_sqrt: the denominator of the backward's direct term.
        stat_eps: the eps of ``mean_delta`` and ``variance_delta``, ``sqrt(var + stat_eps)``.
        init_rolling_variance: the rolling variance of a new layer (Darknet: 0, PyTorch: 1).
        fork: the Darknet fork whose file rules (cfg, .weights) a network of this flavor follows:
            ``"pjreddie"`` or ``"alexeyab"`` (the default: PyTorch models are converted from AlexeyAB's
            Darknet, so ``torch`` flavors follow it too).
    """

    name: str
    momentum: float
    eps: float
    eps_in_sqrt: bool
    unbiased: bool
    bwd_eps: float
    bwd_eps_in_sqrt: bool
    stat_eps: float
    init_rolling_variance: float = 0.0
    fork: str = "alexeyab"

    def __post_init__(self) -> None:
        for field in ("momentum", "eps", "bwd_eps", "stat_eps", "init_rolling_variance"):
            v = getattr(self, field)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
                raise ValueError(f"Flavor.{field}: expected a finite number >= 0, got {v!r}")
        if self.momentum > 1:
            raise ValueError(f"Flavor.momentum: expected a number in [0, 1], got {self.momentum!r}")
        if self.fork not in ("pjreddie", "alexeyab"):
            raise ValueError(f"Flavor.fork: expected 'pjreddie' or 'alexeyab', got {self.fork!r}")

    @property
    def exact_gradient(self) -> bool:
        """Whether the training backward is the exact gradient of the training forward."""
        return (
            not self.unbiased
            and self.eps_in_sqrt
            and self.bwd_eps_in_sqrt
            and self.eps == self.bwd_eps == self.stat_eps
        )


PJREDDIE = Flavor(
    "pjreddie",
    momentum=_f32(0.01),
    eps=_f32(1e-6),
    eps_in_sqrt=False,
    unbiased=True,
    bwd_eps=_f32(1e-5),
    bwd_eps_in_sqrt=True,
    stat_eps=_f32(1e-5),
    fork="pjreddie",
)
ALEXEYAB = Flavor(
    "alexeyab",
    momentum=_f32(0.1),
    eps=_f32(1e-5),
    eps_in_sqrt=True,
    unbiased=True,
    bwd_eps=_f32(1e-5),
    bwd_eps_in_sqrt=False,
    stat_eps=_f32(1e-5),
    fork="alexeyab",
)


def torch_flavor(eps: float = 1e-5, momentum: float = 0.1) -> Flavor:
    """PyTorch's BatchNorm semantics with its ``eps`` and ``momentum`` (defaults as PyTorch's)."""
    name = "torch" if (eps, momentum) == (1e-5, 0.1) else f"torch(eps={eps!r}, momentum={momentum!r})"
    return Flavor(
        name,
        momentum=momentum,
        eps=eps,
        eps_in_sqrt=True,
        unbiased=False,
        bwd_eps=eps,
        bwd_eps_in_sqrt=True,
        stat_eps=eps,
        init_rolling_variance=1.0,
        fork="alexeyab",
    )


FLAVORS: dict[str, Flavor] = {f.name: f for f in (PJREDDIE, ALEXEYAB, torch_flavor())}


def get_flavor(flavor: str | Flavor) -> Flavor:
    """The Flavor for a name in FLAVORS, or the Flavor given."""
    if isinstance(flavor, Flavor):
        return flavor
    if isinstance(flavor, str):
        try:
            return FLAVORS[flavor]
        except KeyError:
            raise ValueError(f"flavor: expected one of {sorted(FLAVORS)} or a Flavor, got {flavor!r}") from None
    raise TypeError(f"flavor: expected a str or a Flavor, got {type(flavor).__name__}")
