"""What every ``darknet-bn`` command shares: the error lines, the progress bar, the common options
(threads, flavor, json, plot) and loading a Darknet network with its errors turned into exit code 2.

Exit codes: 0 success, 1 a failed check, 2 bad arguments, a missing optional package or an unusable file.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, TextIO

from ..darknet import DarknetCfgError, DarknetCfgWarning, DarknetWeightsError, Network, load_network
from ..flavors import FLAVORS

__all__ = [
    "PROG",
    "error",
    "usage_error",
    "Progress",
    "add_threads_option",
    "add_flavor_option",
    "add_json_option",
    "add_plot_option",
    "bench_options",
    "load_or_error",
]

PROG = "darknet-bn"


def error(message: str, err: TextIO | None = None) -> int:
    """One line ``darknet-bn: error: message`` (whitespace collapsed) on stderr; returns exit code 2."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=err if err is not None else sys.stderr)
    return 2


def usage_error(args: argparse.Namespace, message: str, err: TextIO | None = None) -> int:
    """The command's usage line, then ``<prog>: error: message`` on stderr, as argparse prints its own
    errors (``args.parser``: the command's parser; without one, ``darknet-bn <command>: error:``);
    returns exit code 2."""
    err = err if err is not None else sys.stderr
    parser = getattr(args, "parser", None)
    if parser is not None:
        parser.print_usage(err)
        print(f"{parser.prog}: error: {message}", file=err)
    else:
        prog = " ".join(filter(None, (PROG, getattr(args, "command", None))))
        print(f"{prog}: error: {message}", file=err)
    return 2


class Progress:
    """A progress bar on stderr: tqdm when installed, else a one-line counter (on a terminal only)."""

    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        except ImportError:
            self._bar = None
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif sys.stderr.isatty():
            print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif sys.stderr.isatty():
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Options several commands take


def add_threads_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--threads N`` (an int; checked by the command)."""
    p.add_argument("--threads", type=int, metavar="N", help=help)


def add_flavor_option(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--flavor F``, one of :data:`darknet_bn.flavors.FLAVORS`."""
    p.add_argument("--flavor", default=default, choices=sorted(FLAVORS), help=help)


def add_json_option(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--json FILE``."""
    p.add_argument("--json", metavar="FILE", default=default, help=help)


def add_plot_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--plot FILE.png`` (needs matplotlib; checked by the command before any work)."""
    p.add_argument("--plot", metavar="FILE.png", help=help)


# ------------------------------------------------------------------------------------------------
# The options every bench shares


def bench_options(args: argparse.Namespace) -> tuple[list[str], list[str], int]:
    """Check and apply the options every bench shares (``--threads``, ``--repeat``, ``--compare``,
    ``--plot``): returns (peers, notes for the output, the thread count now set). The default peers
    are ``bench.DEFAULT_PEERS``, each when installed; a peer whose package is not installed is dropped
    with a note. With ``--cfg`` (which sums every pass per peer), peers that do not offer every pass
    are dropped with a note. Raises ValueError with the message for a bad option."""
    from .. import bench, kernels

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a count >= 1, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat: expected a count >= 1, got {args.repeat}")
    budget = getattr(args, "budget", None)
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget: expected seconds > 0, got {budget}")
    compare = getattr(args, "compare", None)
    peers = list(bench.DEFAULT_PEERS) if compare is None else [p for p in (s.strip() for s in compare.split(",")) if p]
    unknown = [p for p in peers if p not in bench.PEERS]
    if unknown:
        raise ValueError(f"--compare: unknown peer(s) {', '.join(unknown)}; choose from {', '.join(bench.PEERS)}")
    peers = list(dict.fromkeys(peers))
    notes = []
    missing = [p for p in peers if not bench.available(p)]
    for p in missing:
        peers.remove(p)
        notes.append(f"{p} is not installed ({bench.PEER_INSTALL[p]}): not compared")
    if getattr(args, "cfg", None) is not None:
        for p in [p for p in peers if not all(bench.offers(p, q) for q in bench.PASSES)]:
            peers.remove(p)
            notes.append(f"{p} offers only some passes (bench --cfg sums every pass): not compared")
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None
    torch: Any = None
    if any(p in ("torch", "torch-out") for p in peers):
        import torch  # before the other peers' libraries (one libgomp for torch and darknet_bn)
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    threads = kernels.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    if "jax" in peers:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if threads != cores:
            notes.append(f"jax runs on XLA's own thread pool (one thread per core), not {threads}")
    return peers, notes, threads


# ------------------------------------------------------------------------------------------------
# Darknet files


def load_or_error(
    cfg: str,
    weights: str | None,
    batch: int | None,
    flavor: str | None,
    allow_trailing: bool = False,
    fork: str | None = None,
) -> Network | int:
    """:func:`~darknet_bn.darknet.load_network`, or the exit code 2 after one line on stderr when a file
    is missing or unreadable, the cfg is bad or the weights do not match. The ignored keys are not
    emitted as Python warnings here (the commands print them as lines)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DarknetCfgWarning)
            return load_network(cfg, weights, batch=batch, flavor=flavor, fork=fork, allow_trailing=allow_trailing)
    except (DarknetCfgError, DarknetWeightsError) as e:
        return error(str(e))
    except OSError as e:
        name = e.filename if e.filename is not None else cfg
        return error(f"cannot read {name}: {e.strerror or e}")
