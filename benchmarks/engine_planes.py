"""The plane and flat paths of the engine (small planes such as 64x512x7x7, one-sample big planes such as
1x16x416x416), builds against each other in one process (not a test; run by hand; docs/performance.md
section 8):

    python benchmarks/engine_planes.py [--baseline DIR] [--pkg NAME=DIR ...] [--threads T] [--rounds N] [--cpu]
        [--shapes 64x512x7x7,1x16x416x416] [--act leaky]

Per shape and build, each case one call of (numbers: milliseconds, median over rounds):
  infer      ``forward(x, train=False)``
  train      ``forward(x, train=True)``
  bwd        ``backward(delta)`` in place, after a training forward (the delta restored before each sample)
  train+A    ``forward(x, train=True, activation=A)`` (fused)
  bwd+A      its backward (fused)
  sep-fwd    ``forward(x, train=True)`` then ``kernels.activate_array`` (Darknet's separate passes)
  sep-bwd    ``kernels.gradient_array`` then ``backward`` (after sep-fwd)
and the ratios separate / fused for forward + backward (issue 16's target: at least 1.5). Each sample
is the mean of enough calls to last ~20 ms, after one untimed call; cases interleaved round by round, in
an order that rotates. ``--cpu``: the process's CPU clock (one thread on a loaded machine).
``--baseline DIR``: a ``darknet_bn_base`` build of an older commit (recipe in engine_common.py);
``--pkg NAME=DIR``: any other build under the name NAME (the same recipe), e.g. a variant of the engine.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import numpy as np
from engine_common import load_baseline, timed_rounds

import darknet_bn


def cases_of(pkg, tag, shape, act):
    """name -> (reset, call) of one build."""
    b, c, h, w = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    n = x.size
    out = {}

    def layer():
        ly = pkg.make_batchnorm_layer(b, w, h, c, "alexeyab")
        ly.scales[:] = rng.uniform(0.5, 2, c)
        ly.biases[:] = rng.uniform(-1, 1, c)
        return ly

    nothing = lambda: None  # noqa: E731
    li = layer()
    li.forward(x, train=True)
    out[f"{tag} infer"] = (nothing, lambda: li.forward(x, train=False))
    lt = layer()
    out[f"{tag} train"] = (nothing, lambda: lt.forward(x, train=True))
    lb = layer()
    dlb = lb.delta.reshape(shape)

    def rb(ly=lb, d=dlb):
        ly.forward(x, train=True)
        d[...] = dy

    out[f"{tag} bwd"] = (rb, lambda: lb.backward(lb.delta))
    lf = layer()
    out[f"{tag} train+{act}"] = (nothing, lambda: lf.forward(x, train=True, activation=act))
    lfb = layer()
    dlfb = lfb.delta.reshape(shape)

    def rfb(ly=lfb, d=dlfb):
        ly.forward(x, train=True, activation=act)
        d[...] = dy

    out[f"{tag} bwd+{act}"] = (rfb, lambda: lfb.backward(lfb.delta))
    ls = layer()

    def sep_fwd(ly=ls):
        ly.forward(x, train=True)
        pkg.kernels.activate_array(ly.output, n, act)

    out[f"{tag} sep-fwd"] = (nothing, sep_fwd)
    lsb = layer()
    dlsb = lsb.delta.reshape(shape)

    def rsb(ly=lsb, d=dlsb):
        ly.forward(x, train=True)
        pkg.kernels.activate_array(ly.output, n, act)
        d[...] = dy

    def sep_bwd(ly=lsb):
        pkg.kernels.gradient_array(ly.output, n, act, ly.delta)
        ly.backward(ly.delta)

    out[f"{tag} sep-bwd"] = (rsb, sep_bwd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline")
    ap.add_argument("--pkg", action="append", default=[], help="NAME=DIR: another build, as NAME")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--act", default="leaky")
    ap.add_argument("--shapes", default="64x512x7x7,1x16x416x416")
    ap.add_argument("--cpu", action="store_true", help="the process's CPU clock instead of the wall clock")
    args = ap.parse_args()
    base = load_baseline(args.baseline)
    pkgs = {"new": darknet_bn} | ({"old": base} if base else {})
    for spec in args.pkg:
        name, _, path = spec.partition("=")
        sys.path.insert(0, path)
        pkgs[name] = importlib.import_module(name)
    for p in pkgs.values():
        p.set_num_threads(args.threads)
    clock = time.process_time if args.cpu else time.perf_counter
    a = args.act
    print(f"threads {args.threads}, rounds {args.rounds}, {'CPU' if args.cpu else 'wall'} clock; ms (median)")
    for s in args.shapes.split(","):
        shape = tuple(int(v) for v in s.split("x"))
        cases = {}
        for tag, p in pkgs.items():
            cases |= cases_of(p, tag, shape, a)
        t = timed_rounds(cases, args.rounds, clock, sample_s=2e-2, max_reps=200)
        for tag in pkgs:
            med = {k.split(" ", 1)[1]: statistics.median(v) * 1e3 for k, v in t.items() if k.startswith(tag + " ")}
            sep = med["sep-fwd"] + med["sep-bwd"]
            fused = med[f"train+{a}"] + med[f"bwd+{a}"]
            cols = "  ".join(f"{k} {v:.3f}" for k, v in med.items())
            print(
                f"{s:>14} {tag}: {cols}  | sep/fused fwd {med['sep-fwd'] / med[f'train+{a}']:.2f} "
                f"fwd+bwd {sep / fused:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
