"""Reliability: NaN and Inf stay in their channel; the C calls release the GIL and layers in several
Python threads give the sequential results; memory stays flat over 10,000 layers; buffers handed to C
stay alive as long as C may use them; and (marked slow) a tensor of more than 2**31 elements."""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_data

from darknet_bn import kernels as K
from darknet_bn import make_batchnorm_layer
from darknet_bn._capi import ffi, lib

FLAVORS = ["pjreddie", "alexeyab", "torch"]
# shapes that take the engine's different paths (see tests/test_engine.py)
SHAPES = [(4, 5, 6, 7), (16, 8, 1, 1), (4, 9, 200, 201), (3, 5, 100, 97), (64, 40, 7, 7), (4096, 20, 1, 1)]


def _run(layer, x, dy, train=True):
    layer.forward(x, train=train)
    out = layer.output.copy()
    layer.delta[:] = dy
    dx = layer.backward()
    return out, dx


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_stay_in_their_channel(shape, flavor, bad):
    b, c, h, w = shape
    x = make_data(shape, 1)
    dy = make_data(shape, 2)
    clean = make_batchnorm_layer(b, w, h, c, flavor)
    dirty = make_batchnorm_layer(b, w, h, c, flavor)
    for ly in (clean, dirty):
        ly.rolling_variance[:] = 1.0
    out0, dx0 = _run(clean, x, dy)
    xb = x.copy()
    ch = c // 2
    xb[b // 2, ch, h // 2, w // 2] = bad  # one value of one channel
    out1, dx1 = _run(dirty, xb, dy)
    others = np.arange(c) != ch
    # the other channels are exactly what they were
    assert np.array_equal(out1[:, others], out0[:, others])
    assert np.array_equal(dx1[:, others], dx0[:, others])
    for k in (
        "mean",
        "variance",
        "rolling_mean",
        "rolling_variance",
        "scale_updates",
        "bias_updates",
        "mean_delta",
        "variance_delta",
    ):
        assert np.array_equal(getattr(dirty, k)[others], getattr(clean, k)[others]), k
    # the channel that saw it: its statistics are not finite; its rolling statistics are NaN as in
    # Darknet for NaN (and for Inf, whose variance is NaN)
    assert not np.isfinite(dirty.mean[ch]) or not np.isfinite(dirty.variance[ch])
    assert np.isnan(dirty.rolling_variance[ch])
    if np.isnan(bad):
        assert np.isnan(dirty.rolling_mean[ch])
    assert not np.isfinite(out1[:, ch]).all()
    # inference with the poisoned rolling statistics: only that channel again
    inf0 = clean.forward(x, train=False).copy()
    inf1 = dirty.forward(x, train=False)
    assert np.array_equal(inf1[:, others], inf0[:, others])
    assert np.isnan(inf1[:, ch]).all()


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_nan_in_delta_stays_in_its_channel(shape):
    b, c, h, w = shape
    x, dy = make_data(shape, 3), make_data(shape, 4)
    a, d = make_batchnorm_layer(b, w, h, c, "torch"), make_batchnorm_layer(b, w, h, c, "torch")
    _, dx0 = _run(a, x, dy)
    dyb = dy.copy()
    dyb[0, 0, 0, 0] = np.nan
    _, dx1 = _run(d, x, dyb)
    assert np.array_equal(dx1[:, 1:], dx0[:, 1:])
    assert np.isnan(dx1[:, 0]).all() and np.isnan(d.scale_updates[0]) and np.isnan(d.bias_updates[0])
    assert np.array_equal(d.scale_updates[1:], a.scale_updates[1:])


def test_threads_give_the_sequential_results():
    """Independent layers driven from several Python threads at once compute what they compute one
    after the other (the C calls release the GIL; they share no state)."""
    shapes = [(8, 16, 20, 20), (64, 32, 1, 1), (2, 4, 100, 100), (16, 64, 7, 7)] * 2
    jobs = [(shape, i) for i, shape in enumerate(shapes)]

    def work(shape, seed, results, idx):
        b, c, h, w = shape
        layer = make_batchnorm_layer(b, w, h, c, ["pjreddie", "alexeyab", "torch"][seed % 3])
        x, dy = make_data(shape, seed), make_data(shape, seed + 100)
        outs = []
        for _step in range(20):
            layer.forward(x)
            layer.delta[:] = dy
            layer.backward(layer.delta)
            layer.update(0.01, 0.9, 0.0, b)
            layer.forward(x, train=False)
        outs = [layer.output.copy(), layer.delta.copy(), layer.scales.copy(), layer.rolling_variance.copy()]
        results[idx] = outs

    sequential = [None] * len(jobs)
    for idx, (shape, seed) in enumerate(jobs):
        work(shape, seed, sequential, idx)
    parallel = [None] * len(jobs)
    threads = [
        threading.Thread(target=work, args=(shape, seed, parallel, idx)) for idx, (shape, seed) in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, p in zip(sequential, parallel):
        for a, b in zip(s, p):
            assert np.array_equal(a, b)


def test_c_calls_release_the_gil():
    """While one thread is inside a long C call, another thread runs Python code."""
    x = np.ones(1 << 26, np.float32)  # 256 MiB: the plain reference kernel takes a while
    mean = np.zeros(1, np.float32)
    px, pm = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", mean)
    inside = threading.Event()
    done = threading.Event()

    def long_call():
        inside.set()
        for _ in range(4):
            lib.mean_cpu_ref(px, 1, 1, x.size, pm, ffi.NULL)
        done.set()

    ticks = 0
    t = threading.Thread(target=long_call)
    t.start()
    inside.wait()
    while not done.is_set():
        ticks += 1  # only possible while the other thread holds no GIL
        time.sleep(0.001)
    t.join()
    assert mean[0] == 1.0
    assert ticks >= 5, "the main thread could not run while the C call ran: the GIL was held"


def _rss_bytes():
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("no /proc/self/statm on this platform (Linux only)")
    import os

    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    "libasan" in __import__("os").environ.get("LD_PRELOAD", ""),
    reason="under AddressSanitizer freed memory waits in its quarantine: RSS measures nothing",
)
def test_memory_stays_flat_over_10000_layers():
    shape = (8, 16, 8, 8)  # 64 KiB per tensor buffer: a leak of any would show
    x, dy = make_data(shape, 5), make_data(shape, 6)

    def cycle(n):
        for i in range(n):
            layer = make_batchnorm_layer(8, 8, 8, 16, ["pjreddie", "alexeyab", "torch"][i % 3], renorm=bool(i % 2))
            layer.forward(x)
            layer.delta[:] = dy
            layer.backward()
            layer.update(0.01, 0.9, 0.0, 8)
            layer.forward(x, train=False, activation="mish")
            _ = layer.x_norm
            del layer

    cycle(300)  # warm up the allocators
    gc.collect()
    before = _rss_bytes()
    cycle(10_000)
    gc.collect()
    growth = _rss_bytes() - before
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 10,000 layers"


def test_buffers_stay_alive_while_c_may_use_them():
    """The layer keeps the forward's input (the backward reads it): dropping the caller's reference
    and churning the heap does not change the backward."""
    shape = (4, 8, 32, 32)
    b, c, h, w = shape
    x = make_data(shape, 7)
    dy = make_data(shape, 8)
    ref_layer = make_batchnorm_layer(b, w, h, c, "torch")
    _, expect = _run(ref_layer, x, dy)

    layer = make_batchnorm_layer(b, w, h, c, "torch")
    layer.forward(x.copy())  # the only reference to that copy is the layer's
    junk = [np.full(x.size, 7.0, np.float32) for _ in range(20)]  # reuse freed memory, if any was freed
    gc.collect()
    layer.delta[:] = dy
    assert np.array_equal(layer.backward(), expect)
    del junk
    assert sys.getrefcount(layer.x.base if layer.x.base is not None else layer.x) >= 2


# ------------------------------------------------------------------------------------------------
# Big tensors: 64-bit indexing. Run by .ci/run (pytest --run-slow -m slow).

BIG_S = (1 << 30) + 2048  # two channels of 2**30 + 2048: 2**31 + 4096 elements, 8 GiB


def _fill(x):
    """x[c, i] = 1 + (i mod 1000)/1000, chunk by chunk (a pattern whose sums are known exactly), so no
    second tensor-sized array is ever allocated."""
    chunk = 16_000_000  # a multiple of 1000: every chunk starts the pattern afresh
    pattern = (1.0 + (np.arange(chunk, dtype=np.int64) % 1000) / 1000.0).astype(np.float32)
    for ch in range(x.shape[0]):
        for lo in range(0, x.shape[1], chunk):
            hi = min(lo + chunk, x.shape[1])
            x[ch, lo:hi] = pattern[: hi - lo]


def _exact_sums(n):
    """Sum and sum of squares of 1 + (i mod 1000)/1000, i < n, in float64 from the counts of each residue."""
    full, rest = divmod(n, 1000)
    r = np.arange(1000)
    counts = np.full(1000, full, np.int64)
    counts[:rest] += 1
    v = (1.0 + r / 1000.0).astype(np.float32).astype(np.float64)
    return float((counts * v).sum()), float((counts * v * v).sum()), v, counts


@pytest.mark.slow
def test_more_than_2_31_elements():
    x = np.empty((2, BIG_S), np.float32)
    assert x.size > 2**31
    _fill(x)
    n = BIG_S
    s1, s2, v, counts = _exact_sums(n)
    m64 = s1 / n
    var64 = (s2 - n * m64 * m64) / (n - 1)
    mean = np.zeros(2, np.float32)
    K.mean_cpu(x, 1, 2, n, mean)
    assert np.allclose(mean, m64, rtol=1e-6, atol=0)
    var = np.zeros(2, np.float32)
    K.variance_cpu(x, mean, 1, 2, n, var)
    assert np.allclose(var, var64, rtol=1e-5, atol=0)
    # the last value of channel 1 sits at flat index 2**31 + 4095: change it and the sums must see it
    x[1, -1] += 1000.0
    K.mean_cpu(x, 1, 2, n, mean)
    assert abs(mean[1] - (m64 + 1000.0 / n)) <= 1e-6 * m64 and abs(mean[0] - m64) <= 1e-6 * m64
    x[1, -1] -= 1000.0
    K.mean_cpu(x, 1, 2, n, mean)
    K.normalize_cpu(x, mean, var, 1, 2, n, flavor="torch")
    # channel sums of the normalized values, in float64, chunk by chunk: sum 0, sum of squares (n-1)/n*var/(var+eps)
    chunk = 1 << 26
    for ch in range(2):
        t1 = sum(float(x[ch, lo : lo + chunk].astype(np.float64).sum()) for lo in range(0, n, chunk))
        t2 = sum(float(np.square(x[ch, lo : lo + chunk].astype(np.float64)).sum()) for lo in range(0, n, chunk))
        assert abs(t1) / n < 1e-5
        want = (n - 1) / n * var64 / (var64 + 1e-5)
        assert abs(t2 / n - want) < 1e-5
