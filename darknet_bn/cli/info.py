"""``darknet-bn info``: what this build can do (versions, OpenMP, threads, instruction set), and a
self-check of one training forward against a float64 numpy computation (exit code 1 if it fails)."""

from __future__ import annotations

import argparse
import platform

import numpy as np

__all__ = ["add_info_parser", "cmd_info"]


def cmd_info(args: argparse.Namespace) -> int:
    """Print what this build can do, and check one training step against a float64 numpy computation."""
    import darknet_bn
    from darknet_bn import kernels

    print(
        f"darknet_bn {darknet_bn.__version__} on Python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}"
    )
    print(
        f"OpenMP: {'yes' if kernels.has_openmp() else 'no'}, threads: {kernels.get_num_threads()}, "
        f"instruction set: {kernels.get_isa()}"
    )
    shape = (8, 16, 13, 13)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 + 100
    layer = darknet_bn.make_batchnorm_layer(8, 13, 13, 16, flavor="torch")
    y = layer.forward(x)
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=(0, 2, 3), keepdims=True), x64.var(axis=(0, 2, 3), keepdims=True)
    err = float(np.abs(y - (x64 - m) / np.sqrt(v + 1e-5)).max())
    ok = err < 1e-4
    print(f"self-check, training forward {shape}: max |error| vs float64 = {err:.2e} ({'ok' if ok else 'FAILED'})")
    return 0 if ok else 1


def add_info_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``darknet-bn info`` (``func=cmd_info``, ``parser`` set)."""
    p = subparsers.add_parser("info", help="build facts and a self-check")
    p.set_defaults(func=cmd_info, parser=p)
    return p
