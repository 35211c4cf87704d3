"""The ``darknet-bn`` command line (also ``python -m darknet_bn``)."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Sequence

import numpy as np


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what this build can do, and check one training step against a float64 numpy computation."""
    import darknet_bn
    from darknet_bn import kernels

    print(f"darknet_bn {darknet_bn.__version__} on Python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}")
    print(f"OpenMP: {'yes' if kernels.has_openmp() else 'no'}, threads: {kernels.get_num_threads()}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darknet-bn", description="Darknet's batch normalization, fast on the CPU.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="build facts and a self-check")
    info.set_defaults(func=_cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
