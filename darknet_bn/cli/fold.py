"""``darknet-bn fold CFG WEIGHTS --out-cfg F --out-weights G [--flavor F]``: batch normalization folded
into the weights of a Darknet model on disk (the library side is :mod:`darknet_bn.darknet.fold`)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..darknet import DarknetCfgError, DarknetCfgWarning, DarknetWeightsError, fold_files
from .common import PROG, add_flavor_option, error

__all__ = ["add_fold_parser", "cmd_fold"]


def cmd_fold(args: argparse.Namespace) -> int:
    """``darknet-bn fold``: 0 on success; 2 on a missing file, a bad cfg, mismatched weights, or an
    output that would overwrite an input; 1 if the written files do not load back identical."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DarknetCfgWarning)
            report = fold_files(
                args.cfg,
                args.weights,
                args.out_cfg,
                args.out_weights,
                flavor=args.flavor,
                allow_trailing=args.allow_trailing,
            )
    except (DarknetCfgError, DarknetWeightsError) as e:
        return error(str(e))
    except OSError as e:
        name = e.filename if e.filename is not None else args.cfg
        outs = {os.fspath(args.out_cfg), os.fspath(args.out_weights)}
        verb = "write" if os.fspath(name) in outs else "read"
        return error(f"cannot {verb} {name}: {e.strerror or e}")
    except RuntimeError as e:
        print(f"{PROG}: check failed: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        return error(str(e))
    print(report.summary())
    print(f"{args.cfg}: {report.rules}")
    for w in caught:
        if isinstance(w.message, DarknetCfgWarning):
            print(f"ignored: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {args.out_cfg} and {args.out_weights}")
    return 0


def add_fold_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``darknet-bn fold CFG WEIGHTS --out-cfg F --out-weights G [--flavor F]``
    (``func=cmd_fold``, ``parser`` set)."""
    p = subparsers.add_parser(
        "fold",
        help="fold batch normalization into the weights of a Darknet model",
        description="Fold every batch normalization of a Darknet model into the weights and biases of its "
        "convolutional and connected layers (w' = w*scale/s, b' = bias - scale*rolling_mean/s, s the "
        "flavor's inference denominator; float64, stored float32), merge [batchnorm] sections into the "
        "layer before them where that is exact, and write a cfg and a .weights file that Darknet and "
        "darknet_bn load as a plain network. BN layers that cannot be folded exactly are left in place "
        "and listed.",
    )
    p.add_argument("cfg", metavar="CFG", help="the .cfg file")
    p.add_argument("weights", metavar="WEIGHTS", help="its .weights file")
    p.add_argument("--out-cfg", required=True, metavar="F", help="the folded .cfg to write")
    p.add_argument("--out-weights", required=True, metavar="G", help="the folded .weights to write")
    add_flavor_option(
        p,
        None,
        help="pjreddie: pjreddie's Darknet (s = sqrt(rv) + 1e-6); alexeyab, torch: AlexeyAB's "
        "(s = sqrt(rv + 1e-5)); also the fork whose file rules are followed. Default: the fork "
        "detected from the cfg (a section, key or value only AlexeyAB's Darknet reads means "
        "AlexeyAB's, else pjreddie's) and its flavor",
    )
    p.add_argument("--allow-trailing", action="store_true", help="accept bytes after the last array of WEIGHTS")
    p.set_defaults(func=cmd_fold, parser=p)
    return p
