"""What the bench times: the shapes, the passes, a shape's data and parameters, and the protocol between
the harness and each implementation (:class:`Setup` in, :class:`Impl` out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..flavors import Flavor
from ..layer import ACTIVATIONS

DEFAULT_SHAPES = [
    (1, 16, 416, 416),
    (8, 32, 208, 208),
    (16, 128, 52, 52),
    (32, 256, 26, 26),
    (64, 64, 56, 56),
    (64, 512, 7, 7),
    (256, 32, 1, 1),
    (128, 1024, 1, 1),
]
#: --large adds it: 205 MB per tensor (beyond most last-level caches; the run's longest shape)
LARGE_SHAPES = [(64, 64, 112, 112)]
PASSES = ("train", "infer", "infer+leaky", "backward")  # infer+leaky: BN and Darknet's leaky in one pass
RENORM_PASSES = ("train+renorm", "backward+renorm")  # --renorm: ours with batch renormalization
PEER_PASS = {"train+renorm": "train", "backward+renorm": "backward"}  # peers have no renorm: plain BN
# passes that also time our plain pass in their rounds ("ours:<pass>"), to report what their extra costs
# (and every pass of act_passes(): train+ACT -> ours:train, backward+ACT -> ours:backward)
OURS_BASELINE = {"infer+leaky": "ours:infer", "train+renorm": "ours:train", "backward+renorm": "ours:backward"}
#: --activation's default: Darknet's most common activation (slope 0.1)
DEFAULT_ACTIVATION = "leaky"


def act_passes(activation: str = DEFAULT_ACTIVATION) -> tuple[str, str]:
    """The rows of the training passes with ``activation`` fused (``--activation NAME``):
    ``train+NAME`` (``Layer.forward(x, True, NAME)``: out = NAME(BN(x)) in the training passes) and
    ``backward+NAME`` (``Layer.backward`` after such a forward, from the delta of the activation's
    output). ValueError for a name not in ``darknet_bn.ACTIVATIONS``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return (f"train+{activation}", f"backward+{activation}")


def split_act_pass(pass_: str) -> tuple[str, str] | None:
    """``"train+swish"`` -> ``("train", "swish")`` (likewise ``backward+NAME``); None for every other
    pass (``infer+leaky`` is the inference pass with leaky, ``train+renorm`` is renorm)."""
    base, _, act = pass_.partition("+")
    return (base, act) if base in ("train", "backward") and act in ACTIVATIONS else None


def ours_baseline(pass_: str) -> str | None:
    """The plain pass of ours timed in ``pass_``'s rounds (``"ours:<pass>"``), or None."""
    split = split_act_pass(pass_)
    return f"ours:{split[0]}" if split else OURS_BASELINE.get(pass_)


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'BxCxHxW' -> (B, C, H, W), each >= 1."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape {text!r}: expected BxCxHxW with four positive integers, e.g. 8x32x52x52") from None
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape {text!r}: expected BxCxHxW with four positive integers, e.g. 8x32x52x52")
    return dims


@dataclass
class Setup:
    """What every implementation of one shape gets: the data, the per-channel parameters the peers and
    the check share (``gamma``, ``beta``, running ``rm``/``rv`` for inference), the flavor darknet_bn
    and ``plain`` follow (the peers follow PyTorch's math: eps 1e-5, momentum 0.1), the thread count
    and the passes to time."""

    shape: tuple
    flavor: Flavor
    x: np.ndarray
    dy: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    rm: np.ndarray
    rv: np.ndarray
    threads: int
    passes: tuple
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass
class Impl:
    calls: dict  # pass -> one call
    outputs: dict = field(default_factory=dict)  # pass -> run once, return the output (numpy)
    prepare: dict = field(default_factory=dict)  # pass -> untimed, once before the pass's rounds
    # pass -> untimed, before each sample: restores what the calls consume (the in-place backwards of
    # the +ACT rows, whose activation derivative would otherwise shrink or grow delta call after call)
    reset: dict = field(default_factory=dict)
    version: str = ""


def peer_passes(passes: Sequence[str]) -> set:
    return {PEER_PASS.get(p, p) for p in passes}


def default_rounds(shape) -> int:
    """The most rounds per shape and pass (fewer when a time budget asks for it)."""
    n = math.prod(shape)
    return 5 if n > 20_000_000 else 9 if n > 2_000_000 else 15


def make_data(shape) -> tuple[np.ndarray, np.ndarray]:
    """x and dy: uniform with mean 0 and variance 1 (the values do not change the work; uniform draws
    cost a third of normal ones)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        a = rng.random(shape, dtype=np.float32)
        a -= np.float32(0.5)
        a *= np.float32(math.sqrt(12.0))
        out.append(a)
    return out[0], out[1]


def make_params(c: int) -> tuple[np.ndarray, ...]:
    """The peers' (and the check's) gamma, beta, running mean and running variance: fixed, distinct
    per channel (the data is standard normal, so the outputs are of order 1)."""
    lin = np.linspace(0.0, 1.0, c, dtype=np.float32)
    return (0.5 + lin, (lin - 0.5) * 0.4, (lin - 0.5) * 0.2, 0.8 + 0.4 * lin)
