"""The engine's rows path (N*H*W rows of C values: 1x1 planes such as 128x1024x1x1, and the rows
PyTorch's channels_last modules pass): training forward and backward of Layers, new build against an
optional baseline build, interleaved round by round in one process (benchmarks/engine_common.py).

    python benchmarks/engine_rows.py [--shape 128x1024x1x1] [--rows] [--rotate K] [--threads N]
                                     [--cpu] [--baseline DIR] [--rounds R]

- ``--rows``: the shape NxCxHxW runs as N*H*W rows of C values (batch N*H*W, c C, 1x1 planes): what
  ``darknet_bn.torch`` passes the kernels for a channels_last tensor.
- ``--rotate K``: K layers, each with its own input, output and delta, called in turn, so that every
  call meets data that the other K - 1 calls have pushed out of L2 (a PyTorch module step touches
  fresh tensors each call: issue 14). K = 1: the same buffers every call (cache-resident).
- ``--cpu``: the process's CPU clock instead of the wall clock (one thread on a loaded machine: the
  time the thread ran, not the time it waited for a core).

Rows: ``fwd`` = ``layer.forward(x, train=True)``; ``bwd`` = ``layer.backward(layer.delta)`` (in
place) after a training forward of the same layer; scales set to the batch's std so the repeated
in-place backward is a projection and delta keeps its size. Figures: medians over rounds (us per
call) and the median of the same-round ratios base / new.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from engine_common import load_baseline

import darknet_bn


def huge_arena(nvalues: int) -> np.ndarray:
    """float32 of at least nvalues, starting on a 2 MiB boundary, from one allocation of >= 4 MiB (numpy
    madvises those for transparent huge pages where the kernel allows it)."""
    pad = (2 << 20) // 4
    buf = np.zeros(max(nvalues + pad, (4 << 20) // 4 + pad), dtype=np.float32)
    off = (-buf.ctypes.data % (2 << 20)) // 4
    return buf[off : off + nvalues]


def cases_for(
    pkg, tag: str, shape: tuple[int, int, int, int], rows: bool, rotate: int, threads: int, huge: bool = False
) -> dict:
    n, c, h, w = shape
    if rows:
        n, h, w = n * h * w, 1, 1
    pkg.set_num_threads(threads)
    rng = np.random.default_rng(0)
    layers, xs = [], []
    size = n * c * h * w
    arena = huge_arena(rotate * size) if huge else None
    for i in range(rotate):
        x = (rng.standard_normal((n, c, h, w), dtype=np.float32) * 2 + 3).astype(np.float32)
        if arena is not None:  # the inputs in huge pages (the layers' own output and delta are not)
            xa = arena[i * size : (i + 1) * size].reshape(x.shape)
            xa[...] = x
            x = xa
        layer = pkg.make_batchnorm_layer(n, w, h, c, "torch")
        layer.scales[:] = np.sqrt(x.var(axis=(0, 2, 3), dtype=np.float64) + layer.flavor.eps)
        layer.forward(x, train=True)
        layer.delta[...] = rng.standard_normal(layer.delta.shape, dtype=np.float32)
        layers.append(layer)
        xs.append(x)
    state = {"i": 0}

    def fwd():
        i = state["i"] = (state["i"] + 1) % rotate
        layers[i].forward(xs[i], train=True)

    def bwd():
        i = state["i"] = (state["i"] + 1) % rotate
        layers[i].backward(layers[i].delta)

    return {f"{tag} fwd": fwd, f"{tag} bwd": bwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128x1024x1x1")
    ap.add_argument("--rows", action="store_true", help="N*H*W rows of C values (channels_last)")
    ap.add_argument("--rotate", type=int, default=1, help="layers called in turn (fresh data per call)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--reps", type=int, default=0, help="calls per round (0: about 2 ms of work)")
    ap.add_argument("--cpu", action="store_true", help="the process's CPU clock instead of the wall clock")
    ap.add_argument("--huge", action="store_true", help="inputs in one 2 MiB-aligned arena (huge pages, if any)")
    ap.add_argument("--baseline", default=None)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    cases = cases_for(darknet_bn, "new", shape, args.rows, args.rotate, args.threads, args.huge)
    base = load_baseline(args.baseline)
    if base is not None:
        cases.update(cases_for(base, "base", shape, args.rows, args.rotate, args.threads, args.huge))
    nbytes = 4 * np.prod(shape)
    reps = args.reps or max(5, int(2e-3 / max(1e-7, nbytes / 20e9)))
    reps = max(reps, args.rotate)
    clock = time.process_time if args.cpu else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        for _ in range(max(args.rotate, reps // 4)):
            f()
    names = list(cases)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            f = cases[name]
            t0 = clock()
            for _ in range(reps):
                f()
            times[name].append((clock() - t0) / reps)
    mb = nbytes * args.rotate / 2**20
    print(
        f"{args.shape}{' as rows' if args.rows else ''}, rotate {args.rotate} ({mb:.1f} MiB of inputs"
        f"{', huge-page arena' if args.huge else ''}), "
        f"{args.threads} thread(s), {'CPU' if args.cpu else 'wall'} clock, {args.rounds} rounds x {reps} calls"
    )
    for name in names:
        print(f"  {name:9s} {statistics.median(times[name]) * 1e6:9.2f} us")
    if base is not None:
        for p in ("fwd", "bwd"):
            ratio = statistics.median(b / a for a, b in zip(times[f"new {p}"], times[f"base {p}"]))
            print(f"  base/new {p}: {ratio:.3f}")


if __name__ == "__main__":
    main()
