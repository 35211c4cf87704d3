"""Shared by the benchmarks/engine_*.py scripts: interleaved timing and an optional baseline build.

Timing: every round runs each case ``reps`` times back to back (so no case meets threads that went to
sleep between rounds) and keeps the mean of those calls; a case's figure is the median over rounds.
Every other round runs the cases in reverse order, so that none always runs first or after the same one.
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


def interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, reps: int, raw: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Median seconds per call of each case, the cases interleaved round by round (``raw``, when given,
    receives every round's time per case, for paired ratios)."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():  # warm up: first-touch page faults, lazy initialization
        for _ in range(max(1, reps // 4)):
            f()
    clock = time.perf_counter
    names = list(cases)
    for rnd in range(rounds):
        # every other round in reverse order: in a fixed order, identical code read 0.89-0.93x for the
        # second case against the first on 0.5 MB tensors (docs/performance.md section 21)
        for name in names[::-1] if rnd % 2 else names:
            f = cases[name]
            t0 = clock()
            for _ in range(reps):
                f()
            times[name].append((clock() - t0) / reps)
    if raw is not None:
        raw.update(times)
    return {k: statistics.median(v) for k, v in times.items()}


def paired_ratio(raw: dict[str, list[float]], a: str, b: str) -> float:
    """The median over rounds of time(a) / time(b) in the same round: steadier than a ratio of medians
    when the machine's speed drifts between rounds."""
    return statistics.median(x / y for x, y in zip(raw[a], raw[b]))


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


def build_variant(dest: str, name: str, cflags: str, src: str | None = None) -> ModuleType:
    """Build darknet_bn from the source tree ``src`` (default: this checkout) as a package called
    ``name`` in directory ``dest`` with extra C flags (e.g. ``-DDBN_STREAM_MAX=0``: internal.h's tuning
    constants can be overridden), and import it. Reuses a build already there with the same flags."""
    import os
    import shutil
    import subprocess

    src = src or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.join(dest, name)
    stamp = os.path.join(root, "CFLAGS")
    if not (os.path.exists(stamp) and open(stamp).read() == cflags):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for item in ("csrc", "setup.py", "pyproject.toml"):
            (shutil.copytree if item == "csrc" else shutil.copy)(os.path.join(src, item), os.path.join(root, item))
        shutil.copytree(
            os.path.join(src, "darknet_bn"),
            os.path.join(root, name),
            ignore=shutil.ignore_patterns("*.so", "__pycache__"),
        )
        for path, old, new in [
            (os.path.join(root, name, "_build.py"), '"darknet_bn._dbn"', f'"{name}._dbn"'),
            (os.path.join(root, "setup.py"), "darknet_bn/_build.py", f"{name}/_build.py"),
        ]:
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace(old, new))
        env = {**os.environ, "DARKNET_BN_CFLAGS": cflags}
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root, env=env, check=True, capture_output=True
        )
        open(stamp, "w").write(cflags)
    sys.path.insert(0, root)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(root)


def timed_rounds(
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]],
    rounds: int,
    clock: Callable[[], float],
    sample_s: float = 1e-3,
    max_reps: int = 50,
) -> dict[str, list[float]]:
    """Per case (reset, call): the seconds per call of each round. Each sample is reset(), one untimed
    call, then as many timed calls as fill about sample_s (at most max_reps, decided once); the order
    rotates every two rounds and every other round runs reversed, so no case always follows another."""
    names = list(cases)
    reps = {}
    for k, (reset, call) in cases.items():  # warm-up, and the calls per sample
        reset()
        call()
        reset()
        t0 = time.perf_counter()
        call()
        reps[k] = max(1, min(max_reps, int(sample_s / max(time.perf_counter() - t0, 1e-7))))
    times: dict[str, list[float]] = {k: [] for k in names}
    for rnd in range(rounds):
        j = (rnd // 2) % len(names)
        order = names[j:] + names[:j]
        for k in order[::-1] if rnd % 2 else order:
            reset, call = cases[k]
            reset()
            call()
            t0 = clock()
            for _ in range(reps[k]):
                call()
            times[k].append((clock() - t0) / reps[k])
    return times
