"""The ``darknet-bn`` command line (also ``python -m darknet_bn``): every command of darknet_bn.

One module per command -- :mod:`~darknet_bn.cli.info`, :mod:`~darknet_bn.cli.bench`,
:mod:`~darknet_bn.cli.bench_cfg` (``bench --cfg``), :mod:`~darknet_bn.cli.layers`,
:mod:`~darknet_bn.cli.fold`, :mod:`~darknet_bn.cli.demo` -- and :mod:`~darknet_bn.cli.common` for what
they share (errors, progress, options). The library never imports this package.

Exit codes: 0 success, 1 a failed check, 2 bad arguments or a missing optional package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .bench import add_bench_parser
from .demo import add_demo_parser
from .fold import add_fold_parser
from .info import add_info_parser
from .layers import add_layers_parser

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``darknet-bn`` parser: a subcommand per command module (each sets ``func`` and ``parser``)."""
    p = argparse.ArgumentParser(prog="darknet-bn", description="Darknet's batch normalization, fast on the CPU.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_info_parser(sub)  # info
    add_bench_parser(sub)  # bench [--shape S]... | bench --cfg CFG [--weights W] [--batch B]
    add_layers_parser(sub)  # layers CFG [--weights W] [--flavor F]
    add_fold_parser(sub)  # fold CFG WEIGHTS --out-cfg F --out-weights G [--flavor F]
    add_demo_parser(sub)  # demo
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``darknet-bn`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
