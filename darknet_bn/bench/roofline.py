"""The memory roofline: the least bytes each pass must move, and the bandwidth to divide them by.

Each pass must move at least 12 (training forward: read x twice, write y), 8 (inference) or 20
(backward: read x and delta twice, write the input's delta) bytes per element, with an activation
fused in training or not; the bandwidth is a STREAM-style triad (csrc/stream.c) timed right after each
row's rounds (harness.TRIAD_SAMPLES samples). ``roofline`` = minimum bytes / triad bandwidth / our time:
1.0 means running at the triad's bandwidth (more is possible from cache, or with non-temporal stores,
which the triad does not use).
"""

from __future__ import annotations

import time

import numpy as np

from .._capi import EXEC, ffi, lib
from .cases import split_act_pass

BYTES_PER_ELEMENT = {
    "train": 12,
    "infer": 8,
    "infer+leaky": 8,
    "backward": 20,
    "train+renorm": 12,
    "backward+renorm": 20,
}


def bytes_per_element(pass_: str) -> int:
    """The least bytes per element ``pass_`` moves: BYTES_PER_ELEMENT, and for a training pass with an
    activation fused (``train+ACT``, ``backward+ACT``) its plain pass's (the activation adds no tensor:
    the backward recomputes the pre-activation from x and the statistics)."""
    split = split_act_pass(pass_)
    return BYTES_PER_ELEMENT[split[0] if split else pass_]


TRIAD_N = 1 << 24  # 3 arrays of 64 MiB: well beyond the last-level cache


class Triad:
    """A STREAM-style triad over arrays far larger than the cache; one call = one sample (GB/s)."""

    def __init__(self, n: int = TRIAD_N):
        self.n = n
        self.a, self.b, self.c = (np.full(n, v, np.float32) for v in (0.0, 1.0, 2.0))
        self.p = [ffi.from_buffer("float[]", v) for v in (self.a, self.b, self.c)]

    def sample(self) -> float:
        t = time.perf_counter()
        lib.dbn_triad(self.p[0], self.p[1], self.p[2], self.n, 3.0, EXEC)
        return 12.0 * self.n / (time.perf_counter() - t) / 1e9
