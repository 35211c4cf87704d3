"""The C sources and the build: warnings-clean C11 with and without OpenMP, the API read from the one
header, and IEEE semantics kept (no -ffast-math/-Ofast: subnormals, NaN and Inf survive)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from darknet_bn import kernels as K
from darknet_bn._capi import lib

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CC = shutil.which("gcc") or shutil.which("cc")


@pytest.mark.skipif(CC is None, reason="no C compiler on PATH")
@pytest.mark.parametrize("variant", [[], ["-fopenmp"], ["-DDBN_PORTABLE"]], ids=["plain", "openmp", "portable"])
def test_c_sources_compile_clean(variant, tmp_path):
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fPIC"] + variant

    def compile_one(src: Path) -> subprocess.CompletedProcess:
        out = str(tmp_path / (src.stem + ".o"))
        return subprocess.run([CC, *flags, "-I", str(CSRC), "-c", str(src), "-o", out], capture_output=True, text=True)

    sources = sorted(CSRC.glob("*.c"))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # one compiler per CPU: the engine units are slow
        results = list(pool.map(compile_one, sources))
    for src, r in zip(sources, results):
        assert r.returncode == 0, f"{src.name}:\n{r.stderr}"


def test_every_header_function_is_in_the_module():
    header = (CSRC / "darknet_bn.h").read_text()
    names = re.findall(r"^\s*(?:void|int|double|float)\s+(\w+)\s*\(", header, flags=re.M)
    assert len(names) >= 17
    for name in names:
        assert hasattr(lib, name), name


def test_subnormals_and_nan_survive():
    tiny = np.full(8, 1e-40, np.float32)  # subnormal in float32
    assert tiny[0] != 0
    K.scale_bias(tiny, np.ones(1, np.float32), 1, 1, 8)
    assert (tiny == np.float32(1e-40)).all(), "flush-to-zero is on (an -Ofast/-ffast-math build?)"
    assert np.float32(1e-39) / np.float32(10) != 0  # and numpy in this process still sees subnormals
    x = np.array([1, 2, np.nan, 4], np.float32)
    mean = np.zeros(1, np.float32)
    K.mean_cpu(x, 1, 1, 4, mean)
    assert np.isnan(mean[0])
    x = np.array([1, 2, np.inf, 4], np.float32)
    K.mean_cpu(x, 1, 1, 4, mean)
    assert mean[0] == np.inf
