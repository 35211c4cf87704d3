"""Every script in benchmarks/ still runs: a minimal run of each (one round, tiny shapes), so that a change
of the package cannot break a benchmark unnoticed. What a benchmark measures is not checked here (speed
is never asserted); that it starts, runs its cases and exits 0 is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CFG = ROOT / "tests" / "data" / "darknet" / "cfg" / "alexeyab" / "yolov3-tiny.cfg"

# script -> the arguments of a minimal run
RUNS: dict[str, list[str]] = {
    "act_ab.py": ["--rounds", "1", "--shapes", "256x32x1x1"],
    "act_math.py": ["--rounds", "1", "--shapes", "256x32x1x1"],
    "act_floor.py": ["--bursts", "3", "--calls", "2"],
    "act_percall.py": ["--rounds", "1", "--calls", "2"],
    "engine_planes.py": ["--rounds", "1", "--shapes", "2x16x7x7"],
    "engine_rows.py": ["--rounds", "1", "--reps", "1", "--shape", "64x32x1x1", "--rows"],
    "engine_idle.py": ["--shapes", "256x32x1x1", "--gaps", "0", "--threads", "1", "--repeat", "1"],
    "engine_percall.py": ["--rounds", "1", "--reps", "1", "--activation", "leaky"],
    "engine_train.py": ["--rounds", "1", "--reps", "1"],
    "named_kernels.py": ["--rounds", "1", "--shape", "2x4x8x8"],
    "renorm_experiment.py": ["--seeds", "2", "--epochs", "1"],
    "fold_conv.py": [str(CFG), "--rounds", "1"],
    "torch_modules.py": ["--quick", "--rounds", "1", "--sample-s", "0.01"],
}
# only --help: engine_nt.py compiles variant builds, mpi_sync.py needs mpiexec, torch_sync.py starts a
# process group (tests/torch_dist and tests/mpi run those paths)
HELP_ONLY = {"engine_nt.py", "mpi_sync.py", "torch_sync.py"}
LIBRARY = {"engine_common.py"}  # imported by the others
# script -> (an optional package it imports, its extra): without it the script cannot start, and the test
# skips and says so (CI installs every extra, where a skip fails the run)
NEEDS = {
    "engine_train.py": ("torch", "torch"),
    "fold_conv.py": ("torch", "torch"),
    "torch_modules.py": ("torch", "torch"),
    "torch_sync.py": ("torch", "torch"),
    "renorm_experiment.py": ("sklearn", "demo"),  # the digits data (darknet_bn.examples.digits)
    "mpi_sync.py": ("mpi4py", "mpi"),
}


def test_every_script_is_listed():
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == set(RUNS) | HELP_ONLY | LIBRARY, "a benchmark script is not listed in RUNS/HELP_ONLY"


def _run(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    need = NEEDS.get(script)
    if need is not None and importlib.util.find_spec(need[0]) is None:
        pytest.skip(f"{script} needs {need[0]} (pip install '.[{need[1]}]')")
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("script", sorted(RUNS))
def test_minimal_run(script):
    p = _run(script, RUNS[script])
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    assert p.stdout.strip(), f"{script} printed nothing"


@pytest.mark.parametrize("script", sorted(HELP_ONLY))
def test_help(script):
    p = _run(script, ["--help"])
    assert p.returncode == 0, f"{script} --help failed:\n{p.stderr[-4000:]}"
    assert "usage" in p.stdout
