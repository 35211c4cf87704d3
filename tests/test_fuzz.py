"""Hostile input at every public boundary: the kernels of darknet_bn.kernels, the Layer, and the file
readers get random shapes, dtypes, strides, sizes (0, negative, mismatched, huge), non-contiguous and
read-only arrays, overlapping outputs and Python objects that are not arrays. The only outcomes allowed
are a correct result or TypeError/ValueError (DarknetCfgError and DarknetWeightsError are
ValueErrors), and arrays a call had no right to touch are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import DATA
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from darknet_bn import DarknetCfgError, DarknetWeightsError, load_network, make_batchnorm_layer
from darknet_bn import kernels as K

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each kernel: its arguments in order. T: a [b, f, s] tensor; C: [f]; I: an int (b, f, s); trailing "w":
# the kernel writes it. The reference computes the written arrays from the inputs.
F = ref.FLAVORS["pjreddie"]
SPECS = {
    "mean_cpu": (("T", "I", "I", "I", "Cw"), lambda a: [ref.mean_cpu(a[0], *a[1:4])]),
    "variance_cpu": (("T", "C", "I", "I", "I", "Cw"), lambda a: [ref.variance_cpu(a[0], a[1], *a[2:5])]),
    "normalize_cpu": (
        ("Tw", "C", "C", "I", "I", "I"),
        lambda a: [ref.normalize_cpu(a[0], a[1], a[2], *a[3:6], F["eps"], F["eps_in_sqrt"])],
    ),
    "scale_bias": (("Tw", "C", "I", "I", "I"), lambda a: [ref.scale_bias(a[0], a[1], *a[2:5])]),
    "add_bias": (("Tw", "C", "I", "I", "I"), lambda a: [ref.add_bias(a[0], a[1], *a[2:5])]),
    "backward_bias": (("Cw", "T", "I", "I", "I"), lambda a: [ref.backward_bias(a[0], a[1], *a[2:5])]),
    "backward_scale_cpu": (
        ("T", "T", "I", "I", "I", "Cw"),
        lambda a: [ref.backward_scale_cpu(a[0], a[1], *a[2:5], a[5])],
    ),
    "mean_delta_cpu": (("T", "C", "I", "I", "I", "Cw"), lambda a: [ref.mean_delta_cpu(a[0], a[1], *a[2:5])]),
    "variance_delta_cpu": (
        ("T", "T", "C", "C", "I", "I", "I", "Cw"),
        lambda a: [ref.variance_delta_cpu(*a[0:4], *a[4:7])],
    ),
    "normalize_delta_cpu": (
        ("T", "C", "C", "C", "C", "I", "I", "I", "Tw"),
        lambda a: [ref.normalize_delta_cpu(*a[0:5], *a[5:8], a[8], F["bwd_eps"], F["bwd_eps_in_sqrt"])],
    ),
}
BAD_ARRAYS = [
    "float64",
    "int32",
    "float16",
    "big_endian",
    "short",
    "long",
    "empty",
    "strided",
    "read_only",
    "list",
    "none",
    "str",
    "scalar",
    "2d_fortran",
    "overlap",
]
BAD_INTS = [-1, -(2**40), 2**63, 2**64, 1.0, 2.5, True, "3", None, np.float32(2)]


def _good_array(kind, b, f, s, rng):
    if kind.startswith("T"):
        return (
            rng.standard_normal(b * f * s).astype(np.float32).reshape(b, f, s) if b * f * s else np.zeros(0, np.float32)
        )
    return rng.uniform(0.5, 2.0, f).astype(np.float32)


def _mutate_array(a, how, other):
    """A bad version of array a (other: an array of the call to overlap with)."""
    n = a.size
    return {
        "float64": lambda: a.astype(np.float64),
        "int32": lambda: a.astype(np.int32),
        "float16": lambda: a.astype(np.float16),
        "big_endian": lambda: a.astype(">f4"),
        "short": lambda: a.reshape(-1)[: max(n - 1, 0)].copy(),
        "long": lambda: np.concatenate([a.reshape(-1), [1.0]]).astype(np.float32),
        "empty": lambda: np.zeros(0, np.float32),
        "strided": lambda: np.repeat(a.reshape(-1), 2)[::2],
        "read_only": lambda: _read_only(a.copy()),
        "list": lambda: a.reshape(-1).tolist(),
        "none": lambda: None,
        "str": lambda: "abc",
        "scalar": lambda: 1.5,
        "2d_fortran": lambda: np.asfortranarray(np.repeat(a.reshape(-1, 1), 2, axis=1)),
        "overlap": lambda: other.reshape(-1)[:n] if other is not None and other.size >= n else a,
    }[how]()


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("name", list(SPECS))
@SETTINGS
@given(data=st.data())
def test_kernel_fuzz(name, data):
    kinds, expect = SPECS[name]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    b, f, s = (data.draw(st.integers(0, 5), label=k) for k in "bfs")
    args = [None] * len(kinds)
    ints = iter((b, f, s))
    for i, kind in enumerate(kinds):
        args[i] = next(ints) if kind == "I" else _good_array(kind, b, f, s, rng)
    # mutate some arguments
    n_bad = data.draw(st.integers(0, 2), label="n_bad")
    for _ in range(n_bad):
        i = data.draw(st.integers(0, len(kinds) - 1), label="which")
        if kinds[i] == "I":
            args[i] = data.draw(st.sampled_from(BAD_INTS + [np.int64(3), np.int32(1), 0, 7]), label="int")
        elif isinstance(args[i], np.ndarray):
            other = next((a for j, a in enumerate(args) if j != i and isinstance(a, np.ndarray)), None)
            args[i] = _mutate_array(args[i], data.draw(st.sampled_from(BAD_ARRAYS), label="bad"), other)
    snapshot = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
    try:
        getattr(K, name)(*args)
    except (TypeError, ValueError):
        for a, before in zip(args, snapshot):  # nothing was written
            if before is not None:
                assert np.array_equal(a, before, equal_nan=True)
        return
    # it ran: every argument was acceptable, the inputs are unchanged and the outputs are right
    written = [i for i, k in enumerate(kinds) if k.endswith("w")]
    for i, (a, before) in enumerate(zip(args, snapshot)):
        if i not in written and before is not None:
            assert np.array_equal(a, before, equal_nan=True), f"{name}: argument {i} changed"
    ints = [int(a) for a, k in zip(args, kinds) if k == "I"]
    inputs = [before if before is not None else a for a, before in zip(args, snapshot)]
    want = expect([inp.astype(np.float64).reshape(-1) if isinstance(inp, np.ndarray) else int(inp) for inp in inputs])
    got = args[written[0]]
    w = np.asarray(want[0], np.float64).reshape(-1)
    g = np.asarray(got, np.float64).reshape(-1)
    assert g.shape == w.shape
    finite = np.isfinite(w)
    assert np.array_equal(np.isnan(g), np.isnan(w))
    if finite.any():
        scale = max(
            1.0,
            np.abs(w[finite]).max(),
            np.abs(
                np.concatenate(
                    [np.asarray(x, np.float64).reshape(-1) for x in inputs if isinstance(x, np.ndarray) and x.size]
                    or [np.zeros(1)]
                )
            ).max(),
        )
        assert np.abs(g[finite] - w[finite]).max() <= 1e-4 * scale * max(1, ints[0] * ints[2])


@SETTINGS
@given(data=st.data())
def test_layer_fuzz(data):
    """Random constructor arguments, inputs, deltas and update arguments: a correct result or
    TypeError/ValueError, and a failed call changes nothing."""
    dims = [
        data.draw(st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 2.0, None, True, "2"])), label=k)
        for k in ("batch", "w", "h", "c")
    ]
    flavor = data.draw(st.sampled_from(["pjreddie", "alexeyab", "torch", "caffe", 3]), label="flavor")
    try:
        layer = make_batchnorm_layer(*dims, flavor=flavor)
    except (TypeError, ValueError):
        return
    b, w, h, c = layer.batch, layer.w, layer.h, layer.c
    n = b * c * h * w
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    good = rng.standard_normal(n).astype(np.float32).reshape(b, c, h, w)
    for _step in range(3):
        bad = data.draw(st.sampled_from([None] + BAD_ARRAYS), label="input")
        x = good if bad is None else _mutate_array(good, bad, layer.output)
        train = data.draw(st.booleans(), label="train")
        fields = {
            k: getattr(layer, k).copy() for k in ("output", "mean", "variance", "rolling_mean", "rolling_variance")
        }
        try:
            layer.forward(x, train=train)
        except (TypeError, ValueError):
            for k, v in fields.items():
                assert np.array_equal(getattr(layer, k), v, equal_nan=True), k
            continue
        e = ref.forward(
            x,
            layer.scales,
            layer.biases,
            fields["rolling_mean"],
            fields["rolling_variance"],
            (b, c, h, w),
            layer.flavor.name,
            train,
        )
        if train or (fields["rolling_variance"] > 0).all():
            out = e["output"]
            ok = np.isfinite(out)
            assert np.allclose(layer.output[ok], out[ok], rtol=1e-4, atol=1e-4 * max(1, np.abs(out[ok]).max(initial=0)))
        layer.delta[:] = rng.standard_normal(n).reshape(layer.delta.shape)
        nd_kind = data.draw(st.sampled_from([None, "fresh", "delta"] + BAD_ARRAYS), label="net_delta")
        nd = {None: None, "fresh": np.empty(n, np.float32), "delta": layer.delta}.get(nd_kind)
        if nd_kind not in (None, "fresh", "delta"):
            nd = _mutate_array(np.empty(n, np.float32), nd_kind, layer.delta)
        upd = (layer.scale_updates.copy(), layer.bias_updates.copy(), layer.delta.copy())
        try:
            layer.backward(nd)
        except (TypeError, ValueError):
            assert np.array_equal(layer.scale_updates, upd[0]) and np.array_equal(layer.bias_updates, upd[1])
            assert np.array_equal(layer.delta, upd[2])
        args = [
            data.draw(st.sampled_from([0.01, 0, -1, float("nan"), "x", None]), label="lr"),
            data.draw(st.sampled_from([0.9, 1.5, float("inf")]), label="momentum"),
            0.0005,
            data.draw(st.sampled_from([b, 0, -2, 1.5, None]), label="batch"),
        ]
        try:
            layer.update(*args)
        except (TypeError, ValueError):
            pass


CFGS = sorted((DATA / "cfg").rglob("*.cfg"))


def _mutate_text(text, rng):
    lines = text.splitlines(keepends=True)
    for _ in range(rng.integers(1, 6)):
        op = rng.integers(0, 6)
        i = rng.integers(0, max(len(lines), 1))
        if not lines:
            break
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.integers(0, len(lines))])
        elif op == 2:  # change a number
            lines[i] = "".join(str(rng.integers(-3, 100000)) if ch.isdigit() else ch for ch in lines[i])
        elif op == 3:  # flip a character
            line = lines[i]
            if line:
                j = rng.integers(0, len(line))
                lines[i] = line[:j] + chr(rng.integers(32, 127)) + line[j + 1 :]
        elif op == 4:
            j = rng.integers(0, len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(
                i,
                rng.choice(
                    [
                        "[conv]\n",
                        "=\n",
                        "filters=\n",
                        "stride=0\n",
                        "size=-1\n",
                        "[route]\nlayers=-99\n",
                        "batch_normalize=1\n",
                        "groups=0\n",
                        "\x00\n",
                        "width=99999999\n",
                    ]
                ),
            )
    return "".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    i=st.integers(0, len(CFGS) - 1), seed=st.integers(0, 2**32 - 1), flavor=st.sampled_from(["pjreddie", "alexeyab"])
)
def test_mutated_cfg_text(i, seed, flavor):
    text = CFGS[i].read_text()
    mutated = _mutate_text(text, np.random.default_rng(seed))
    try:
        load_network(mutated, flavor=flavor)
    except DarknetCfgError:
        pass


WEIGHTS = sorted((DATA / "expected" / "weights").rglob("*.weights"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    i=st.integers(0, len(WEIGHTS) - 1),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["flip", "truncate", "both"]),
)
def test_bit_flipped_and_truncated_weights(i, seed, mode, tmp_path_factory):
    path = WEIGHTS[i]
    fork, name = path.parent.parent.name, path.parent.name
    cfg = DATA / "cfg" / "oracle" / f"{name}.cfg"
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    if mode in ("flip", "both"):
        for _ in range(rng.integers(1, 8)):
            # header bits (the first 20 bytes) more often than the body's
            at = int(rng.integers(0, 20)) if rng.random() < 0.5 else int(rng.integers(0, len(raw)))
            raw[at] ^= 1 << int(rng.integers(0, 8))
    if mode in ("truncate", "both"):
        raw = raw[: int(rng.integers(0, len(raw)))]
    out = tmp_path_factory.mktemp("w") / "m.weights"
    out.write_bytes(bytes(raw))
    try:
        net = load_network(cfg, out, flavor=fork)
    except (DarknetWeightsError, DarknetCfgError, ValueError):
        return
    assert len(net.bn_layers) > 0  # it loaded: the flips landed in values


# ================================================================================================
# Odd memory at every entry point: arrays that are misaligned (1-3 bytes), byte-swapped ('>f4'),
# Fortran-ordered, strided, reversed, read-only, overlapping one another, or merely not vector-aligned
# (4k bytes off a 64-byte boundary: legal, and what the engine's store-alignment peel loops see), of
# sizes around every threshold of the engine (csrc/internal.h, engine.h, driver.c, fused.c):
#   vector widths NV = 4, 8, 16 floats (every instruction set is drawn) and DBN_PEEL_MIN = 8*NV;
#   lane mode from spatial 256 (DBN_LANE_MIN_SPATIAL), block rows of <= 1024 values (DBN_TILE_MAX),
#   per-element maps below spatial 8 or c*spatial <= 1024 (DBN_EXPAND_*), map_block's 2*NV planes;
#   one fused task group up to 65536 values (DBN_SMALL), tasks of 65536 (DBN_CHUNK), row splits when
#   fewer than 8 tiles, one channel (its planes joined), threads from 16384 values per thread;
#   non-temporal stores past 10 MiB (training forward), 20 MiB (inference), 8 MiB (an out-of-place
#   backward; the layers' backward is in place and never streams), and the
#   fused plan past 24 MiB read by the reduction (DBN_STREAM_MAX) -- the layer's tests below.
# Every array lives in a bytearray with guard bytes around it (and between a strided array's
# elements). Outcome: the right answer (float64 reference) or TypeError/ValueError -- and the test
# predicts which --, never a crash; no byte changes but those of the arrays the call writes.

from helpers import assert_close, available_isas  # noqa: E402

from darknet_bn import ACTIVATIONS, Layer  # noqa: E402

ODD_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
BIG_SETTINGS = settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
GUARD = 64
PATTERN = 0xA5  # guard bytes: 0xA5A5A5A5 is a float32 of -2.9e-16
ISAS = available_isas()
VALID = ["plain", "offset4", "read_only"]  # read_only: valid where the call only reads
COPYABLE = ["misaligned", "big_endian", "fortran", "strided", "reversed"]  # float32, but not C's float*
SWAPPED = np.dtype(np.float32).newbyteorder("S")
ODD_LAYOUTS = VALID[2:] + COPYABLE + ["misaligned", "overlap", "overlap+1"]  # the case twice


class Memory:
    """The arrays of one call, each carved from a bytearray filled with a guard pattern."""

    def __init__(self, rng):
        self.rng = rng
        self.buffers = []  # bytearrays
        self.where = {}  # id(array) -> buffer index

    def _buffer(self, nbytes):
        buf = bytearray([PATTERN]) * (nbytes + 2 * GUARD + 64)
        self.buffers.append(buf)
        addr = np.frombuffer(buf, np.uint8).ctypes.data
        return buf, GUARD + (-(addr + GUARD)) % 64  # a 64-byte aligned start

    def make(self, values, layout):
        """A float32 array of values' shape and values, laid out as `layout`."""
        v = np.asarray(values, np.float64)
        n, shape = v.size, v.shape
        dtype = SWAPPED if layout == "big_endian" else np.dtype(np.float32)
        buf, start = self._buffer(8 * n if layout == "strided" else 4 * n)
        if layout in ("offset4", "misaligned"):  # 4..60 bytes off a vector boundary, or 1..3 off a float
            start += 4 * int(self.rng.integers(1, 16)) if layout == "offset4" else int(self.rng.integers(1, 4))
        if layout == "strided":
            a = np.frombuffer(buf, dtype, count=2 * n, offset=start)[::2].reshape(shape)
        elif layout == "reversed":
            a = np.frombuffer(buf, dtype, count=n, offset=start)[::-1].reshape(shape)
        elif layout == "fortran" and len(shape) >= 2:
            a = np.ndarray(shape, dtype, buffer=buf, offset=start, order="F")
        else:
            a = np.frombuffer(buf, dtype, count=n, offset=start).reshape(shape)
        a[...] = v
        if layout == "read_only":
            a.flags.writeable = False
        self.where[id(a)] = len(self.buffers) - 1
        return a

    def view_of(self, donor, n, shift):
        """n float32 values of donor's memory (contiguous, from its first byte, `shift` elements on)."""
        i = self.where[id(donor)]
        buf = self.buffers[i]
        start = donor.ctypes.data - np.frombuffer(buf, np.uint8).ctypes.data
        if donor.strides and donor.strides[-1] < 0:
            start -= 4 * (donor.size - 1)
        a = np.frombuffer(buf, np.float32, count=n, offset=start + 4 * shift)
        self.where[id(a)] = i
        return a

    def snapshot(self):
        return [bytes(b) for b in self.buffers]

    def changed_outside(self, before, written):
        """Whether a byte changed outside the elements of the arrays in `written`."""
        for i, (buf, old) in enumerate(zip(self.buffers, before)):
            now = np.frombuffer(buf, np.uint8)
            mask = np.zeros(len(buf), bool)
            for a in written:
                if self.where.get(id(a)) == i:
                    off = a.ctypes.data - now.ctypes.data
                    if a.flags.c_contiguous:
                        mask[off : off + a.nbytes] = True
                        continue
                    idx = off + np.indices(a.shape).reshape(a.ndim, -1).T @ np.array(a.strides)
                    for k in range(4):
                        mask[idx + k] = True
            diff = now != np.frombuffer(old, np.uint8)
            if (diff & ~mask).any():
                return True
        return False


def _usable(a, written):
    """Whether the kernels take `a` as is (what their documentation promises), by numpy's own flags."""
    return a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned and (a.flags.writeable or not written)


def _threshold_sizes(draw_int, cap):
    """(b, f, s) around the engine's thresholds, at most `cap` values."""
    S = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1025, 4100]
    F = [1, 2, 3, 4, 8, 13, 31, 64, 129, 1024]
    B = [1, 2, 3, 4, 5, 33, 64]
    EXPLICIT = [
        (1, 256, 256),
        (2, 128, 256),
        (1, 1, 65537),
        (4, 64, 257),
        (1, 64, 1025),
        (64, 1024, 1),
        (65, 1024, 1),
        (100, 64, 16),
        (80, 33, 33),
        (3, 32, 1025),
        (2, 8, 8192),
        (1, 3, 40000),
        (256, 32, 1),
        (40, 33, 33),
        (3, 341, 3),
        (2, 1, 16385),
        (33, 3, 1000),
        (1025, 1, 64),
    ]
    if draw_int(0, 1):
        return EXPLICIT[draw_int(0, len(EXPLICIT) - 1)]
    while True:
        b, f, s = B[draw_int(0, len(B) - 1)], F[draw_int(0, len(F) - 1)], S[draw_int(0, len(S) - 1)]
        if b * f * s <= cap:
            return b, f, s


def _tensor(rng, b, f, s):
    return rng.standard_normal((b, f, s)) * rng.uniform(0.5, 3.0, (1, f, 1)) + rng.uniform(-3, 3, (1, f, 1))


# Per kernel: the reference (float64, tests/reference.py) and a bound M on the magnitude of the terms
# each output sums (the float32 engine is within a few 1e-6 of M; the test allows 1e-5 * M).
def _kernel_refs():
    eps, in_sqrt = F["eps"], F["eps_in_sqrt"]
    beps, bin_sqrt = F["bwd_eps"], F["bwd_eps_in_sqrt"]
    t = lambda v, b, f, s: v.reshape(b, f, s)  # noqa: E731
    c = lambda v: v.reshape(1, -1, 1)  # noqa: E731
    N = lambda b, s: b * s  # noqa: E731
    return {
        "mean_cpu": lambda a, b, f, s: (ref.mean_cpu(a[0], b, f, s), np.abs(t(a[0], b, f, s)).max(axis=(0, 2))),
        "variance_cpu": lambda a, b, f, s: (
            ref.variance_cpu(a[0], a[1], b, f, s),
            ((t(a[0], b, f, s) - c(a[1])) ** 2).max(axis=(0, 2)),
        ),
        "normalize_cpu": lambda a, b, f, s: (
            ref.normalize_cpu(a[0], a[1], a[2], b, f, s, eps, in_sqrt),
            (np.abs(t(a[0], b, f, s)) + np.abs(c(a[1]))) / c(ref.denominator(a[2], eps, in_sqrt)),
        ),
        "scale_bias": lambda a, b, f, s: (
            ref.scale_bias(a[0], a[1], b, f, s),
            np.abs(ref.scale_bias(a[0], a[1], b, f, s)),
        ),
        "add_bias": lambda a, b, f, s: (ref.add_bias(a[0], a[1], b, f, s), np.abs(t(a[0], b, f, s)) + np.abs(c(a[1]))),
        "backward_bias": lambda a, b, f, s: (
            ref.backward_bias(a[0], a[1], b, f, s),
            np.abs(a[0]) + np.abs(t(a[1], b, f, s)).sum(axis=(0, 2)),
        ),
        "backward_scale_cpu": lambda a, b, f, s: (
            ref.backward_scale_cpu(a[0], a[1], b, f, s, a[5]),
            np.abs(a[5]) + np.abs(t(a[0] * a[1], b, f, s)).sum(axis=(0, 2)),
        ),
        "mean_delta_cpu": lambda a, b, f, s: (
            ref.mean_delta_cpu(a[0], a[1], b, f, s),
            np.abs(t(a[0], b, f, s)).sum(axis=(0, 2)) / np.sqrt(a[1] + ref.F32_1e5),
        ),
        "variance_delta_cpu": lambda a, b, f, s: (
            ref.variance_delta_cpu(a[0], a[1], a[2], a[3], b, f, s),
            np.abs(t(a[1], b, f, s) * (t(a[0], b, f, s) - c(a[2]))).sum(axis=(0, 2))
            * 0.5
            * (a[3] + ref.F32_1e5) ** -1.5,
        ),
        "normalize_delta_cpu": lambda a, b, f, s: (
            ref.normalize_delta_cpu(a[0], a[1], a[2], a[3], a[4], b, f, s, a[8], beps, bin_sqrt),
            np.abs(t(a[8], b, f, s)) / c(ref.denominator(a[2], beps, bin_sqrt))
            + c(np.abs(a[4])) * 2 * (np.abs(t(a[0], b, f, s)) + c(np.abs(a[1]))) / N(b, s)
            + c(np.abs(a[3])) / N(b, s),
        ),
    }


KERNEL_REFS = _kernel_refs()


class _Settings:
    """Draw and set the instruction set and thread count for one example; restore them after."""

    def __init__(self, data):
        self.isa = data.draw(st.sampled_from(ISAS), label="isa")
        self.threads = data.draw(st.sampled_from([1, 2]), label="threads")

    def __enter__(self):
        K.set_isa(self.isa)
        K.set_num_threads(self.threads)

    def __exit__(self, *exc):
        K.set_isa(None)
        K.set_num_threads(None)


@pytest.mark.parametrize("name", list(SPECS))
@ODD_SETTINGS
@given(data=st.data())
def test_kernel_odd_memory(name, data):
    """Each kernel with odd arrays at sizes around the engine's thresholds: a right answer exactly when
    every array is one C may use (native float32, C-contiguous, aligned; writable where written; the
    written one sharing no memory with another), else TypeError/ValueError; no other byte changes."""
    kinds = SPECS[name][0]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    b, f, s = _threshold_sizes(lambda lo, hi: data.draw(st.integers(lo, hi)), 300_000)
    mem = Memory(rng)
    layouts = [
        None if k == "I" else data.draw(st.sampled_from(VALID[:2]), label=f"layout {i}") for i, k in enumerate(kinds)
    ]
    for _ in range(data.draw(st.integers(0, 3), label="n_odd")):  # some arguments made odd
        i = data.draw(st.sampled_from([i for i, k in enumerate(kinds) if k != "I"]), label="which")
        layouts[i] = data.draw(st.sampled_from(ODD_LAYOUTS), label="odd")
        event(f"odd: {layouts[i]}")
    args = [None] * len(kinds)
    ints = iter((b, f, s))
    for i, k in enumerate(kinds):
        if k == "I":
            args[i] = next(ints)
        elif not layouts[i].startswith("overlap"):
            v = _tensor(rng, b, f, s) if k.startswith("T") else rng.uniform(0.5, 2.0, f)
            args[i] = mem.make(v.astype(np.float32), layouts[i])
    for i, k in enumerate(kinds):  # views of another argument's memory
        if k != "I" and layouts[i].startswith("overlap"):
            n = b * f * s if k.startswith("T") else f
            shift = 1 if layouts[i] == "overlap+1" else 0
            donors = [a for a in args if isinstance(a, np.ndarray) and a.size >= n + shift and id(a) in mem.where]
            if donors:
                args[i] = mem.view_of(donors[data.draw(st.integers(0, len(donors) - 1), label="donor")], n, shift)
            else:
                args[i] = mem.make(rng.uniform(0.5, 2.0, n).astype(np.float32), "plain")
    w = next(i for i, k in enumerate(kinds) if k.endswith("w"))
    ok = all(_usable(a, i == w) for i, a in enumerate(args) if isinstance(a, np.ndarray)) and not any(
        np.may_share_memory(args[w], a) for j, a in enumerate(args) if j != w and isinstance(a, np.ndarray)
    )
    with np.errstate(invalid="ignore"):  # a misaligned view may read signaling NaNs
        values = [np.array(a, np.float64).reshape(-1) if isinstance(a, np.ndarray) else a for a in args]
    before = mem.snapshot()
    with _Settings(data):
        try:
            getattr(K, name)(*args)
            raised = None
        except (TypeError, ValueError) as e:
            raised = e
    event("raised" if raised is not None else "ran")
    if raised is not None:
        assert not ok, f"{name} refused usable arrays: {raised}"
        assert not mem.changed_outside(before, []), f"{name} raised ({raised}) but changed memory"
        return
    assert ok, f"{name} accepted {layouts}"
    assert not mem.changed_outside(before, [args[w]]), f"{name} wrote outside its output"
    want, bound = KERNEL_REFS[name](values, b, f, s)
    got = np.array(args[w], np.float64).reshape(-1)
    want, bound = np.asarray(want).reshape(-1), np.broadcast_to(bound, np.shape(want)).reshape(-1)
    assert np.array_equal(np.isnan(got), np.isnan(want)), name  # variance of one value: NaN
    fin = ~np.isnan(want)
    err = np.abs(got[fin] - want[fin])
    assert np.all(err <= 1e-5 * bound[fin] + 1e-30), (
        f"{name} {(b, f, s)}: max error {err.max():.3g}, bound {bound[fin][err.argmax()]:.3g}"
    )


# ---- the layer: forward (train/infer, activation, renorm), backward, update; and SyncLayer ----

from reference import act64  # noqa: E402  (Darknet's activations in float64)

FIELDS = (
    "output",
    "delta",
    "scales",
    "biases",
    "scale_updates",
    "bias_updates",
    "mean",
    "variance",
    "rolling_mean",
    "rolling_variance",
    "mean_delta",
    "variance_delta",
    "r",
    "d",
)
FORWARD_LAYOUTS = VALID + COPYABLE + ["output", "output_odd", "output+1", "delta"]
NET_DELTA_LAYOUTS = [None, "delta", "output", "x", "delta+1"] + VALID + COPYABLE


def _classes():
    out = [pytest.param("Layer", id="Layer")]
    try:
        import mpi4py  # noqa: F401

        out.append(pytest.param("SyncLayer", id="SyncLayer"))
    except ImportError:
        out.append(
            pytest.param(
                "SyncLayer",
                id="SyncLayer",
                marks=pytest.mark.skip(
                    reason="mpi4py is not installed (pip install 'darknet_bn[mpi]'); CI installs it"
                ),
            )
        )
    return out


def _new_layer(cls, shape, flavor, renorm, rng):
    b, c, h, w = shape
    if cls == "SyncLayer":
        from darknet_bn.distributed import MPI, SyncLayer

        layer = SyncLayer(b, w, h, c, MPI.COMM_SELF, flavor, renorm=renorm)
    else:
        layer = Layer(b, w, h, c, flavor, renorm=renorm)
    layer.scales[:] = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c, p=[0.2, 0.8])
    layer.biases[:] = rng.standard_normal(c)
    layer.scale_updates[:] = rng.standard_normal(c)
    layer.bias_updates[:] = rng.standard_normal(c)
    return layer


def _fields(layer):
    return {k: getattr(layer, k).copy() for k in FIELDS}


def _same(layer, before, but=()):
    for k, v in before.items():
        if k not in but:
            assert getattr(layer, k).tobytes() == v.tobytes(), f"{k} changed"


def _owner(a):
    while a.base is not None and isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _shifted(a):
    """a.size float32 of the memory a lives in, one element off a's start (a layer buffer has room)."""
    flat = _owner(a).reshape(-1)
    start = (a.ctypes.data - flat.ctypes.data) // 4
    return (
        flat[start + 1 : start + 1 + a.size]
        if start + 1 + a.size <= flat.size
        else flat[start - 1 : start - 1 + a.size]
    )


def _float32_like(a, n):
    return isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype.itemsize == 4 and a.size == n


def _forward_round(layer, shape, mem, rng, data, train, big):
    """One forward with a drawn input layout: the outcome the documentation gives, checked."""
    b, c, h, w = shape
    n = b * c * h * w
    x = _tensor(rng, b, c, h * w).astype(np.float32).reshape(shape)
    if train or not layer.renorm:  # rolling statistics near the batch's: renorm's r, d not at a clip
        sd = x.std(axis=(0, 2, 3)) if n > c else np.ones(c)
        layer.rolling_mean[:] = x.mean(axis=(0, 2, 3)) + rng.normal(0, 0.3, c) * sd
        layer.rolling_variance[:] = (sd**2 + 1e-3) * rng.uniform(0.6, 1.6, c)
    layout = data.draw(st.sampled_from(FORWARD_LAYOUTS), label="input")
    if layout == "output":
        layer.output[...] = x
        inp = layer.output
    elif layout == "output_odd":
        layer.output[...] = x
        inp = layer.output.transpose(0, 1, 3, 2)
    elif layout == "output+1":
        inp = _shifted(layer.output).reshape(shape)
    elif layout == "delta":
        layer.delta[...] = x
        inp = layer.delta
    else:
        inp = mem.make(x, layout)
    act = None
    if not train and type(layer) is Layer:  # SyncLayer.forward has no activation
        act = data.draw(st.sampled_from([None] + list(ACTIVATIONS)), label="activation")
    with np.errstate(invalid="ignore"):
        xin = np.array(inp, np.float64).reshape(shape)  # the values the forward must see
    usable = _usable(inp, False)
    if not _float32_like(inp, n):
        ok = False
    elif not usable:
        ok = True  # copied once
    elif np.may_share_memory(inp, layer.delta):
        ok = False
    elif np.may_share_memory(inp, layer.output):
        ok = inp.ctypes.data == layer.output.ctypes.data  # in place, or a partial overlap
    else:
        ok = True
    before, x_before, m_before = _fields(layer), layer.x.copy(), mem.snapshot()
    try:
        out = layer.forward(inp, train=train) if act is None else layer.forward(inp, train=train, activation=act)
        raised = None
    except (TypeError, ValueError) as e:
        raised = e
    event(f"forward {layout}: {'raised' if raised else 'ran'}")
    assert not mem.changed_outside(m_before, []), "the forward wrote into memory it does not own"
    if raised is not None:
        assert not ok, f"forward refused a valid input ({layout}): {raised}"
        _same(layer, before)
        assert np.array_equal(layer.x, x_before)
        return None
    assert ok, f"forward accepted input {layout}"
    assert out.shape == inp.shape
    p0 = before
    if train and layer.renorm:
        e = ref.forward_renorm(
            xin,
            p0["scales"],
            p0["biases"],
            p0["rolling_mean"],
            p0["rolling_variance"],
            shape,
            layer.flavor.name,
            layer.rmax,
            layer.dmax,
        )
    else:
        e = ref.forward(
            xin, p0["scales"], p0["biases"], p0["rolling_mean"], p0["rolling_variance"], shape, layer.flavor.name, train
        )
    pre = np.abs(e["output"]).max()
    want = e["output"] if act is None else act64(act, e["output"])
    assert_close(layer.output, want, rtol=2e-5, scale=pre, name=f"output ({layout}, {act})")
    changed = ("output", "mean", "variance", "rolling_mean", "rolling_variance", "r", "d") if train else ("output",)
    _same(layer, before, but=changed)
    if train:
        for k in ("mean", "variance", "rolling_mean", "rolling_variance") + (("r", "d") if layer.renorm else ()):
            assert_close(getattr(layer, k), e[k], name=k)
    lost = not train and usable and inp.ctypes.data == layer.output.ctypes.data  # inference in place
    assert layer.x.flags.aligned and layer.x.dtype == np.float32
    if lost:  # documented: x is output, the input is gone; x_norm and the backward raise
        assert layer.x.ctypes.data == layer.output.ctypes.data
        with pytest.raises(ValueError, match="in place"):
            _ = layer.x_norm
        return dict(x=xin, inp=inp, train=train, layout=layout, lost=True, act=act, pre=e["output"])
    assert np.array_equal(layer.x, xin.astype(np.float32)), "x is not the forward's input"
    if layout in VALID:
        assert np.shares_memory(layer.x, inp), "a usable input was copied"
    if not big:
        assert_close(layer.x_norm, e["x_norm"], rtol=2e-5, name="x_norm")
    out = layer.output.astype(np.float64)  # (checked above against the float64 reference)
    return dict(x=xin, inp=inp, train=train, layout=layout, lost=False, act=act, pre=e["output"], out=out)


def _backward_round(layer, shape, mem, rng, data, fwd):
    b, c, h, w = shape
    n = b * c * h * w
    dy = rng.standard_normal(shape).astype(np.float32)
    layer.delta[...] = dy
    layout = data.draw(st.sampled_from(NET_DELTA_LAYOUTS), label="net_delta")
    nd = {None: None, "delta": layer.delta, "output": layer.output, "x": fwd["inp"]}.get(layout, "make")
    if layout == "delta+1":
        nd = _shifted(layer.delta).reshape(shape)
    elif isinstance(nd, str):
        nd = mem.make(rng.standard_normal(shape).astype(np.float32), layout)
    if fwd["lost"]:
        ok = False  # the input of an in-place inference forward is gone
    elif nd is None or (
        isinstance(nd, np.ndarray) and nd.ctypes.data == layer.delta.ctypes.data and _usable(nd, True) and nd.size == n
    ):
        ok = True
    else:
        ok = (
            _usable(nd, True)
            and nd.size == n
            and not np.may_share_memory(nd, layer.delta)
            and not np.may_share_memory(nd, layer.x)
        )
    before, x_before, m_before = _fields(layer), layer.x.copy(), mem.snapshot()
    mean, var = (layer.mean, layer.variance) if fwd["train"] else (layer.rolling_mean, layer.rolling_variance)
    mean, var = mean.copy(), var.copy()
    try:
        got = layer.backward(nd)
        raised = None
    except (TypeError, ValueError) as e:
        raised = e
    event(f"backward {layout}: {'raised' if raised else 'ran'}")
    assert np.array_equal(layer.x, x_before), "the backward changed x"
    if raised is not None:
        assert not ok, f"backward refused a valid net_delta ({layout}): {raised}"
        _same(layer, before)
        assert not mem.changed_outside(m_before, [])
        return
    assert ok, f"backward accepted net_delta {layout}"
    written = [nd] if nd is not None and id(nd) in mem.where else []
    assert not mem.changed_outside(m_before, written), "the backward wrote outside net_delta"
    wrote_output = isinstance(nd, np.ndarray) and np.shares_memory(nd, layer.output)
    _same(
        layer,
        before,
        but=("delta", "scale_updates", "bias_updates", "mean_delta", "variance_delta")
        + (("output",) if wrote_output else ()),
    )
    name = layer.flavor.name
    if fwd["act"] in ref.FROM_OUTPUT:  # Darknet's derivative of the (float32) output the forward wrote
        dy = dy * ref.dact64_from_output(fwd["act"], fwd["out"])
    elif fwd["act"] not in (None, "linear"):  # delta is the activation's output's: the chain rule
        dy = dy * ref.dact64(fwd["act"], fwd["pre"])
    if fwd["train"] and layer.renorm:
        g = ref.backward_renorm(fwd["x"], dy, before["scales"], mean, var, before["r"], before["d"], shape, name)
    else:
        g = ref.backward(fwd["x"], dy, before["scales"], mean, var, shape, name, fwd["train"])
    fl = ref.FLAVORS[name]
    sigma = ref.denominator(var, fl["eps"], fl["eps_in_sqrt"])
    scale = np.abs(dy).max() * (np.abs(before["scales"]) / sigma).max() * (max(1.0, np.abs(before["r"]).max()))
    assert_close(got, g["delta"], scale=scale, name=f"input delta ({layout})")
    assert np.array_equal(layer.delta, np.asarray(got).reshape(shape))
    gs = np.abs(dy).sum(axis=(0, 2, 3))
    # the updates add into float32 accumulators: what they held before bounds the rounding too (an
    # inference backward with a zero rolling variance leaves them near 1e8 in pjreddie's flavor)
    assert_close(
        layer.bias_updates,
        before["bias_updates"] + g["bias_updates"],
        scale=gs.max() + 3 + np.abs(before["bias_updates"]).max(),
        name="bias_updates",
    )
    xs = (
        np.abs(g["scale_updates"]).max()
        + (gs * np.abs(fwd["x"] - mean[None, :, None, None]).max(axis=(0, 2, 3)) / sigma).max()
        * max(1.0, np.abs(before["r"]).max())
        + (gs * np.abs(before["d"])).max()
        + 3
        + np.abs(before["scale_updates"]).max()
    )
    assert_close(layer.scale_updates, before["scale_updates"] + g["scale_updates"], scale=xs, name="scale_updates")
    if fwd["train"]:
        assert_close(
            layer.mean_delta,
            g["mean_delta"],
            scale=np.abs(g["mean_delta"]).max() + (gs * np.abs(before["scales"])).max() / np.sqrt(var).min(),
            name="mean_delta",
        )
        assert_close(layer.variance_delta, g["variance_delta"], rtol=2e-5, name="variance_delta")
    else:
        assert not layer.mean_delta.any() and not layer.variance_delta.any()


def _update_round(layer, data):
    lr = data.draw(st.sampled_from([0.01, 0.5, 0, -0.1, float("nan"), "x"]), label="lr")
    mom = data.draw(st.sampled_from([0.9, 0.0, float("inf")]), label="momentum")
    batch = data.draw(st.sampled_from([layer.batch, 1, 0, -2, 1.5]), label="batch")
    ok = isinstance(lr, (int, float)) and np.isfinite(lr) and np.isfinite(mom) and isinstance(batch, int) and batch >= 1
    before = _fields(layer)
    try:
        layer.update(lr, mom, 0.0005, batch)
        raised = None
    except (TypeError, ValueError) as e:
        raised = e
    if raised is not None:
        assert not ok, raised
        _same(layer, before)
        return
    assert ok
    es, esu, eb, ebu = ref.update(
        before["scales"], before["scale_updates"], before["biases"], before["bias_updates"], lr, mom, batch
    )
    for k, v in (("scales", es), ("scale_updates", esu), ("biases", eb), ("bias_updates", ebu)):
        assert_close(getattr(layer, k), v, rtol=1e-6, name=k)
    _same(layer, before, but=("scales", "scale_updates", "biases", "bias_updates"))


def _layer_example(cls, shape, data, rounds, big=False):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    flavor = data.draw(st.sampled_from(["pjreddie", "alexeyab", "torch"]), label="flavor")
    renorm = data.draw(st.booleans(), label="renorm")
    layer = _new_layer(cls, shape, flavor, renorm, rng)
    b, c, h, w = shape
    with _Settings(data):
        for r in range(rounds):
            mem = Memory(rng)
            train = b * h * w >= 2 and data.draw(st.booleans(), label="train") if not big else r % 2 == 0
            fwd = _forward_round(layer, shape, mem, rng, data, train, big)
            if fwd is not None:
                _backward_round(layer, shape, mem, rng, data, fwd)
            if not big:
                _update_round(layer, data)


def _layer_shape(data):
    b, c, s = _threshold_sizes(lambda lo, hi: data.draw(st.integers(lo, hi)), 300_000)
    h = next(d for d in (16, 8, 5, 3, 1) if s % d == 0 and (d == 1 or s // d > 1))  # planes of h x w
    return b, c, h, s // h


@pytest.mark.parametrize("cls", _classes())
@ODD_SETTINGS
@given(data=st.data())
def test_layer_odd_memory(cls, data):
    """Layer/SyncLayer: forward (train, infer, each activation, renorm), backward and update, twice, with
    inputs and net_deltas of every layout (and the layer's own buffers, whole, shifted or transposed),
    at sizes around the engine's thresholds, every instruction set, 1 or 2 threads."""
    _layer_example(cls, _layer_shape(data), data, rounds=2)


BIG_SHAPES = [  # (batch, c, h, w) past the non-temporal and fused-plan thresholds (see above)
    (4, 32, 224, 224),  # 6.4M: training forward fused (> 24 MiB read), both forwards stream
    (12800, 512, 1, 1),  # 6.6M, 1x1 planes: per-element maps that stream, row-split reductions
    (64, 128, 20, 20),  # 3.3M: backward fused (8 bytes a value > 24 MiB), the training forward streams
    (2100, 64, 5, 5),  # 3.4M, small planes, two tiles: three phases, the training forward streams
    (1, 1, 2800, 1000),  # 2.8M, one channel: the training forward streams
]


def _big_cases():
    """Layer on every big shape; SyncLayer (the same engine between its two halves) on the fused ones."""
    out = []
    for cls in _classes():
        for i, shape in enumerate(BIG_SHAPES):
            if cls.values[0] == "Layer" or i in (0, 2):
                out.append(
                    pytest.param(
                        cls.values[0], shape, marks=cls.marks, id=f"{cls.values[0]}-{'x'.join(map(str, shape))}"
                    )
                )
    return out


@pytest.mark.parametrize("cls, shape", _big_cases())
@BIG_SETTINGS
@given(data=st.data())
def test_layer_odd_memory_big(cls, shape, data):
    """The same on tensors past the streaming and fused thresholds: a training pass then an inference
    pass, each with its backward, with drawn layouts (one example each: they are large)."""
    _layer_example(cls, shape, data, rounds=2, big=True)


def test_sync_layer_failed_forward_keeps_x():
    """SyncLayer copies an odd input into a buffer other than the last forward's x: a training forward
    that raises after the copy (here: 1 value per channel over all processes) leaves x as it was."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'darknet_bn[mpi]'); CI installs it")
    from darknet_bn.distributed import MPI, SyncLayer

    layer = SyncLayer(1, 1, 1, 5, MPI.COMM_SELF)
    rng = np.random.default_rng(4)
    mem = Memory(rng)
    first = rng.standard_normal((1, 5, 1, 1)).astype(np.float32)
    layer.forward(mem.make(first, "big_endian"), train=False)  # x: a copy, in the layer's first buffer
    assert np.array_equal(layer.x, first)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        layer.forward(mem.make(-first, "misaligned"), train=True)
    assert np.array_equal(layer.x, first) and not layer._train
    layer.delta[:] = 1.0
    rv = layer.rolling_variance.astype(np.float64)
    want = ref.backward(
        first, np.ones((1, 5, 1, 1)), layer.scales, layer.rolling_mean, rv, (1, 5, 1, 1), "pjreddie", False
    )
    assert_close(layer.backward(), want["delta"], name="inference backward after the failed forward")


# ---- folding: a network whose arrays are odd ----

from helpers import CASES, check_fold, fill_random  # noqa: E402  (float64 references of folding)

from darknet_bn.darknet import fold_network  # noqa: E402

FOLD_LAYOUTS = ["plain", "offset4", "read_only", "misaligned", "big_endian", "fortran", "strided", "reversed"]


def _hosts(net):
    for lyr in net.layers:
        for pname, host in [(None, lyr)] + list(lyr.parts.items()):
            yield lyr, pname, host


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fold_network_with_odd_arrays(data):
    """fold_network on a network whose parameter arrays (BN's and the weights) are misaligned,
    byte-swapped, Fortran-ordered, strided, reversed or read-only: the same folded network as with
    plain arrays, right against the float64 references of tests/test_fold.py, and no byte of the
    original arrays changed; the BN layers left in place then make Layers with the same values."""
    case, flavor = data.draw(
        st.sampled_from(
            [
                ("chain", "pjreddie"),
                ("chain", "torch"),
                ("alexeyab", "alexeyab"),
                ("recurrent", "alexeyab"),
                ("crnn", "pjreddie"),
            ]
        ),
        label="case",
    )
    seed = data.draw(st.integers(0, 2**16), label="seed")
    plain = load_network(CASES / f"{case}.cfg", flavor=flavor)
    fill_random(plain, seed, rv_zero=0.1)
    odd = load_network(CASES / f"{case}.cfg", flavor=flavor)
    mem = Memory(np.random.default_rng(seed))
    for (lyr, _pname, host), (_, _, ohost) in zip(_hosts(plain), _hosts(odd)):
        for name, a in host.arrays.items():
            ohost.arrays[name] = mem.make(a, data.draw(st.sampled_from(FOLD_LAYOUTS), label=f"{lyr.index} {name}"))
    before = mem.snapshot()
    f_plain, r_plain = fold_network(plain)
    f_odd, r_odd = fold_network(odd)
    assert not mem.changed_outside(before, []), "folding changed the original's arrays"
    assert (r_odd.folded, r_odd.kept, r_odd.removed, r_odd.index_map, r_odd.cfg_text) == (
        r_plain.folded,
        r_plain.kept,
        r_plain.removed,
        r_plain.index_map,
        r_plain.cfg_text,
    )
    for (_, _, hp), (_, _, ho) in zip(_hosts(f_plain), _hosts(f_odd)):
        assert sorted(hp.arrays) == sorted(ho.arrays)
        for name in hp.arrays:
            assert np.array_equal(
                np.asarray(ho.arrays[name], np.float32).view(np.uint32),
                np.asarray(hp.arrays[name], np.float32).view(np.uint32),
            ), name
    check_fold(plain, f_odd, r_odd, flavor, seed)  # the references, from the plain network's values
    for bn in odd.bn_layers:  # kept BN layers: a Layer from the odd arrays holds their values
        lyr = bn.layer
        host = next(h for (l_, p, h) in _hosts(plain) if l_.index == bn.index and p == bn.part)
        for name in ("scales", "biases", "rolling_mean", "rolling_variance"):
            if name in host.arrays:
                assert np.array_equal(getattr(lyr, name), host.arrays[name].reshape(-1)), name
    assert not mem.changed_outside(before, [])
