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

- ``--raw``: instead of Layers, the C entry points as ``darknet_bn.torch`` calls them (``dbn_forward_train``
  and the out-of-place ``dbn_backward_into``, PyTorch's flavor, plain stores), for each of ``--shapes``
  (default: the four channels_last rows of benchmarks/torch_modules.py) in NHWC (N*H*W rows of C) and
  NCHW, with the roofline (the least bytes -- 12 per value forward, 20 backward -- over the triad's
  bandwidth timed in the same rounds, divided by the time: 1.0 = at the triad's bandwidth). numpy's
  huge-page advice is turned off (unless ``--huge``): the buffers get 4 KiB pages, as torch tensors do
  (on this VM the triad itself runs ~1.5x faster on huge pages). ``--nt``: also the new build with
  non-temporal stores allowed (``plain_stores`` 0; darknet_bn.torch passes 1); ``--huge-ab``: also the
  same passes on buffers numpy advised for huge pages (``huge``: every buffer; ``hout``: only the outputs,
  out and dx, the buffers darknet_bn.torch allocates itself).

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


RAW_SHAPES = "64x512x7x7,32x256x26x26,16x128x52x52,1x16x416x416"


def raw_cases(
    pkg,
    tag: str,
    shape: tuple[int, int, int, int],
    nhwc: bool,
    threads: int,
    rotate: int = 1,
    nt: bool = False,
    huge: bool | None = None,
    huge_out: bool = False,
) -> dict:
    """The training forward and the out-of-place backward through the raw C entry points, as
    darknet_bn.torch calls them (plain stores; fresh outputs reused from call to call, as its cache does)."""
    ffi, lib = pkg._capi.ffi, pkg._capi.lib
    n, c, h, w = shape
    b, s = (n * h * w, 1) if nhwc else (n, h * w)
    rng = np.random.default_rng(0)
    if huge is not None:  # this case's buffers with numpy's huge-page advice on or off (the rest: as set)
        set_numpy_huge_pages(huge)
    ex = ffi.new("dbn_exec *", {"nthreads": threads, "isa": 0, "plain_stores": 0 if nt else 1})
    fl = ffi.new("dbn_flavor *", [0.1, 1e-5, 1, 0, 1e-5, 1, 1e-5])
    keep = [ex, fl]

    def buf(a: np.ndarray):
        keep.append(a)
        return ffi.cast("float *", a.ctypes.data)

    sets = []
    for _ in range(rotate):
        x = (rng.standard_normal(b * c * s, dtype=np.float32) * 2 + 3).astype(np.float32)
        g = rng.standard_normal(b * c * s, dtype=np.float32)
        if huge_out:  # only the outputs advised for huge pages (what darknet_bn.torch controls)
            set_numpy_huge_pages(True)
        out, dx = np.empty_like(x), np.empty_like(x)
        if huge_out:
            set_numpy_huge_pages(False)
        per = [np.ones(c, np.float32), np.zeros(c, np.float32)] + [np.zeros(c, np.float32) for _ in range(8)]
        per[5][:] = 1.0
        sets.append([buf(v) for v in (x, g, out, dx)] + [buf(v) for v in per])
    state = {"i": 0, "keep": keep}  # (the closures keep the buffers alive)

    def fwd():
        i = state["i"] = (state["i"] + 1) % rotate
        x, g, out, dx, wt, bs, mean, var, rm, rv, gw, gb, s0, s1 = sets[i]
        lib.dbn_forward_train(x, out, wt, bs, mean, var, rm, rv, b, c, s, fl, ffi.NULL, ffi.NULL, ex)

    def bwd():
        i = state["i"] = (state["i"] + 1) % rotate
        x, g, out, dx, wt, bs, mean, var, rm, rv, gw, gb, s0, s1 = sets[i]
        lib.dbn_backward_into(
            x, g, dx, wt, ffi.NULL, mean, var, ffi.NULL, ffi.NULL, gw, gb, s0, s1, b, c, s, fl, 1, ffi.NULL, ex
        )

    for _ in range(rotate):
        fwd()
    if huge is not None:
        set_numpy_huge_pages(False)
    return {f"{tag} fwd": fwd, f"{tag} bwd": bwd}


def set_numpy_huge_pages(on: bool) -> None:
    """numpy madvises its large allocations for transparent huge pages; PyTorch's allocator does not.
    --raw turns that off unless --huge (the buffers then get what a torch tensor gets: 4 KiB pages)."""
    core = getattr(np, "_core", None) or np.core
    core.multiarray._set_madvise_hugepage(on)


def raw_main(args) -> None:
    set_numpy_huge_pages(args.huge)
    base = load_baseline(args.baseline)
    clock = time.process_time if args.cpu else time.perf_counter
    tri_n = 1 << 24
    ta, tb, tc = (np.full(tri_n, v, np.float32) for v in (0.0, 1.0, 2.0))
    tp = [darknet_bn._capi.ffi.from_buffer("float[]", v) for v in (ta, tb, tc)]
    tex = darknet_bn._capi.ffi.new("dbn_exec *", {"nthreads": args.threads, "isa": 0, "plain_stores": 1})

    def triad():
        darknet_bn._capi.lib.dbn_triad(tp[0], tp[1], tp[2], tri_n, 3.0, tex)

    layouts = {"nhwc": [True], "nchw": [False], "both": [True, False]}[args.layout]
    print(
        f"raw C passes (plain stores, out-of-place backward), {args.threads} thread(s), "
        f"{'CPU' if args.cpu else 'wall'} clock, {args.rounds} rounds, rotate {args.rotate}"
    )
    for spec in args.shapes.split(","):
        shape = tuple(int(v) for v in spec.lower().split("x"))
        for nhwc in layouts:
            cases = raw_cases(darknet_bn, "new", shape, nhwc, args.threads, args.rotate)
            if args.huge_ab:
                cases.update(raw_cases(darknet_bn, "huge", shape, nhwc, args.threads, args.rotate, huge=True))
                cases.update(raw_cases(darknet_bn, "hout", shape, nhwc, args.threads, args.rotate, huge_out=True))
            if args.nt:
                cases.update(raw_cases(darknet_bn, "nt", shape, nhwc, args.threads, args.rotate, nt=True))
            if base is not None:
                cases.update(raw_cases(base, "base", shape, nhwc, args.threads, args.rotate))
            nbytes = 4 * int(np.prod(shape))
            reps = args.reps or max(3, int(2e-3 / max(1e-7, nbytes * 2 / 10e9)))
            times: dict[str, list[float]] = {k: [] for k in cases}
            tri: list[float] = []
            names = list(cases)
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    f = cases[name]
                    t0 = clock()
                    for _ in range(reps):
                        f()
                    times[name].append((clock() - t0) / reps)
                t0 = clock()
                triad()
                tri.append(12.0 * tri_n / (clock() - t0) / 1e9)
            gbs = statistics.median(tri)
            lay = "NHWC" if nhwc else "NCHW"
            line = [f"{spec:14s} {lay}  triad {gbs:5.1f} GB/s"]
            for name in names:
                t = statistics.median(times[name])
                least = (12 if name.endswith("fwd") else 20) * nbytes / 4
                line.append(f"{name} {t * 1e6:8.1f} us (roofline {least / gbs / 1e9 / t:4.2f})")
            if base is not None:
                for p in ("fwd", "bwd"):
                    ratio = statistics.median(bb / a for a, bb in zip(times[f"new {p}"], times[f"base {p}"]))
                    line.append(f"base/new {p} {ratio:.3f}")
            print("  ".join(line), flush=True)


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
    ap.add_argument("--raw", action="store_true", help="the raw C entry points as darknet_bn.torch calls them")
    ap.add_argument("--shapes", default=RAW_SHAPES, help="--raw: comma-separated NxCxHxW")
    ap.add_argument("--huge-ab", action="store_true", help="--raw: also the same passes on huge-page buffers")
    ap.add_argument("--nt", action="store_true", help="--raw: also the new build with streaming stores allowed")
    ap.add_argument("--layout", default="both", choices=("nhwc", "nchw", "both"), help="--raw: layouts")
    args = ap.parse_args()
    if args.raw:
        raw_main(args)
        return
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
