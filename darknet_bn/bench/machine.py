"""Facts about the machine a bench ran on: the CPU, its caches, darknet_bn's build, the peers' versions."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import numpy as np

from .._capi import get_isa, has_openmp
from .peers import PEER_MODULES


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """The CPU this runs on: model name, the cores this process may use and the machine's logical
    CPUs, and cpu0's caches (``{"L1d": "48K", "L2": ..., "L3": ...}``, from
    /sys/devices/system/cpu/cpu0/cache, else lscpu; missing where neither says)."""
    import glob
    import os
    import subprocess

    model = None
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
            model = line.split(":", 1)[1].strip()
            break
    model = model or platform.processor() or None
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    caches = {}
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        level, kind, size = (_read(f"{d}/{k}") for k in ("level", "type", "size"))
        if level and kind and size and kind != "Instruction":
            caches[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    if not caches:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("L1d cache", "L2 cache", "L3 cache"):
                caches[key.split()[0]] = val.strip()
            elif key == "Model name" and not model:
                model = val.strip()
    return {"cpu": model, "cores": usable, "logical_cpus": os.cpu_count(), "caches": caches}


def describe_cpu(info: dict) -> str:
    caches = ", ".join(f"{k} {v}" for k, v in info.get("caches", {}).items())
    return f"{info.get('cpu') or 'unknown CPU'}, {info.get('cores')} core(s)" + (f", {caches}" if caches else "")


def peer_versions(peers: Sequence[str]) -> dict:
    versions = {}
    for p in peers:
        mods = PEER_MODULES.get(p, ("numpy",) if p == "numpy" else ())
        v = []
        for m in mods:
            try:
                v.append(f"{m} {__import__(m).__version__}")
            except Exception:  # noqa: BLE001 - a version is informative only
                pass
        versions[p] = ", ".join(v) if v else "darknet_bn"
    return versions


def machine_info(threads: int, peers: Sequence[str] = ()) -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "threads": threads,
        "isa": get_isa(),
        "openmp": has_openmp(),
        **cpu_info(),
        "peers": peer_versions(peers),
    }
