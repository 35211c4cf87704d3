"""``darknet-bn demo``: the digits example (:mod:`darknet_bn.examples.digits`) from the command line: the
same MLP trained with and without batch normalization, a per-epoch table, JSON and a plot.

A missing scikit-learn, or matplotlib with ``--plot``, is reported before any training, exit code 2;
tqdm, when installed, draws the progress bar.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import TextIO

from ..examples import digits
from .common import Progress, add_flavor_option, add_json_option, add_plot_option, usage_error

__all__ = ["add_demo_parser", "main"]

INSTALL_HINT = "pip install 'darknet_bn[demo]'"


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``demo`` command on an argparse subparsers object; it runs :func:`main`."""
    d = digits.DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="train a small MLP on the digits with and without BN, and compare",
        description="Train an MLP 64-32-32-10 on scikit-learn's handwritten digits twice, from the same "
        "initial weights and batch order: with darknet_bn layers after the hidden linear "
        "layers and without. Prints per-epoch loss and accuracy (inference mode) for both. "
        f"Needs scikit-learn (and matplotlib for --plot): {INSTALL_HINT}",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help=f"epochs (default: {d.epochs})")
    p.add_argument("--batch", type=int, default=d.batch, metavar="B", help=f"images per batch (default: {d.batch})")
    p.add_argument(
        "--lr",
        type=float,
        default=d.learning_rate,
        dest="learning_rate",
        metavar="LR",
        help=f"learning rate (default: {d.learning_rate:g})",
    )
    p.add_argument(
        "--momentum", type=float, default=d.momentum, metavar="M", help=f"SGD momentum (default: {d.momentum:g})"
    )
    p.add_argument("--decay", type=float, default=d.decay, metavar="D", help=f"weight decay (default: {d.decay:g})")
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        metavar="S",
        help=f"seed of the initial weights and the batch order (default: {d.seed}); the "
        f"train/validation split is fixed",
    )
    add_flavor_option(p, d.flavor, help=f"the BN flavor (default: {d.flavor})")
    add_json_option(p, default="demo.json", help="write every figure as JSON (default: demo.json; '' for none)")
    add_plot_option(p, help="draw the four panels (needs matplotlib)")
    p.set_defaults(func=main, parser=p)
    return p


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="darknet-bn")
    add_demo_parser(top.add_subparsers(dest="command", required=True))
    return top


def main(
    args: argparse.Namespace | Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the ``demo`` command: ``args`` parsed by the parser of :func:`add_demo_parser` (or a list of
    its options, e.g. ``["--epochs", "3"]``). Returns the exit code: 0, or 2 for bad arguments or a
    missing optional package."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if not isinstance(args, argparse.Namespace):
        args = _parser().parse_args(["demo", *(args or [])])
    if args.epochs < 1:
        return usage_error(args, f"--epochs: expected an int >= 1, got {args.epochs}", err)
    if args.batch < 2:  # a training forward needs 2 values per channel (the batch variance)
        return usage_error(args, f"--batch: expected an int >= 2, got {args.batch}", err)
    for option, v in (("--lr", args.learning_rate), ("--momentum", args.momentum), ("--decay", args.decay)):
        if not math.isfinite(v) or v < 0:
            return usage_error(args, f"{option}: expected a finite number >= 0, got {v}", err)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return usage_error(args, f"the demo needs scikit-learn (its digits data set): {INSTALL_HINT}", err)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return usage_error(args, f"--plot needs matplotlib: {INSTALL_HINT}", err)

    config = digits.DemoConfig(
        epochs=args.epochs,
        batch=args.batch,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        decay=args.decay,
        seed=args.seed,
        flavor=args.flavor,
    )
    data = digits.load_digits_split()
    if len(data[0]) < config.batch:
        return usage_error(args, f"--batch: {config.batch} is more than the {len(data[0])} training images", err)
    bar = Progress(2 * config.epochs * (len(data[0]) // config.batch), "demo")
    try:
        result = digits.run_demo(config, data, on_step=lambda *_: bar.update())
    finally:
        bar.close()
    print(
        f"darknet-bn demo: digits ({result.n_train} train, {result.n_val} validation images), MLP 64-32-32-10, "
        f"SGD lr {config.learning_rate:g} momentum {config.momentum:g} decay {config.decay:g}, batch "
        f"{config.batch}, {config.epochs} epochs, seed {config.seed}, BN flavor {config.flavor}",
        file=out,
    )
    print("loss and accuracy on the whole sets after each epoch, BN in inference mode (rolling statistics)", file=out)
    print(digits.format_table(result), file=out)
    print(digits.train_mode_line(result), file=out)
    if args.json:
        digits.write_json(args.json, result)
        print(f"wrote {args.json}", file=out)
    if args.plot:
        digits.plot(args.plot, result)
        print(f"wrote {args.plot}", file=out)
    print(f"training and evaluation took {result.seconds:.2f} s", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
