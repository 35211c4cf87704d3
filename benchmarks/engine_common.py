"""Shared by the benchmarks/engine_*.py scripts: interleaved timing and an optional baseline build.

Timing: every round runs each case ``reps`` times back to back (so no case meets threads that went to
sleep between rounds) and keeps the mean of those calls; a case's figure is the median over rounds.
Cases are interleaved round by round, so the machine's drift (other processes, the VM's cores moving)
hits all of them alike: only the ratios of one run are worth quoting.

Baseline (``--baseline DIR``): DIR holds a package ``darknet_bn_base``, an older darknet_bn built
under that name, so old and new code run in one process. To make one from a commit::

    git archive COMMIT | tar -x -C DIR && cd DIR && mv darknet_bn darknet_bn_base
    sed -i 's/"darknet_bn._dbn"/"darknet_bn_base._dbn"/' darknet_bn_base/_build.py
    sed -i 's#darknet_bn/_build.py#darknet_bn_base/_build.py#' setup.py
    python setup.py build_ext --inplace
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType


def load_baseline(path: str | None) -> ModuleType | None:
    """The package ``darknet_bn_base`` from directory ``path`` (None: no baseline)."""
    if not path:
        return None
    sys.path.insert(0, path)
    try:
        return importlib.import_module("darknet_bn_base")
    finally:
        sys.path.remove(path)


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each case, the cases interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():  # warm up: first-touch page faults, lazy initialization
        for _ in range(max(1, reps // 4)):
            f()
    clock = time.perf_counter
    for _ in range(rounds):
        for name, f in cases.items():
            t0 = clock()
            for _ in range(reps):
                f()
            times[name].append((clock() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def fmt_us(t: float) -> str:
    return f"{t * 1e6:9.2f} us"


def table(med: dict[str, float], ref: str | None = None) -> str:
    """Lines 'name  time  [ratio against ref]'."""
    w = max(len(k) for k in med)
    out = []
    for k, t in med.items():
        line = f"{k:<{w}}  {fmt_us(t)}"
        if ref is not None and ref in med and k != ref:
            line += f"   {med[ref] / t:6.2f}x vs {ref}" if t > 0 else ""
        out.append(line)
    return "\n".join(out)
