"""Hostile input at every public boundary: the kernels of darknet_bn.kernels, the Layer, and the file
readers get random shapes, dtypes, strides, sizes (0, negative, mismatched, huge), non-contiguous and
read-only arrays, overlapping outputs and Python objects that are not arrays. The only outcomes allowed
are a correct result or TypeError/ValueError (DarknetCfgError and DarknetWeightsError are
ValueErrors), and arrays a call had no right to touch are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from conftest import DATA
from darknet_bn import DarknetCfgError, DarknetWeightsError, kernels as K, load_network, make_batchnorm_layer

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each kernel: its arguments in order. T: a [b, f, s] tensor; C: [f]; I: an int (b, f, s); trailing "w":
# the kernel writes it. The reference computes the written arrays from the inputs.
F = ref.FLAVORS["pjreddie"]
SPECS = {
    "mean_cpu": (("T", "I", "I", "I", "Cw"), lambda a: [ref.mean_cpu(a[0], *a[1:4])]),
    "variance_cpu": (("T", "C", "I", "I", "I", "Cw"), lambda a: [ref.variance_cpu(a[0], a[1], *a[2:5])]),
    "normalize_cpu": (("Tw", "C", "C", "I", "I", "I"),
                      lambda a: [ref.normalize_cpu(a[0], a[1], a[2], *a[3:6], F["eps"], F["eps_in_sqrt"])]),
    "scale_bias": (("Tw", "C", "I", "I", "I"), lambda a: [ref.scale_bias(a[0], a[1], *a[2:5])]),
    "add_bias": (("Tw", "C", "I", "I", "I"), lambda a: [ref.add_bias(a[0], a[1], *a[2:5])]),
    "backward_bias": (("Cw", "T", "I", "I", "I"), lambda a: [ref.backward_bias(a[0], a[1], *a[2:5])]),
    "backward_scale_cpu": (("T", "T", "I", "I", "I", "Cw"),
                           lambda a: [ref.backward_scale_cpu(a[0], a[1], *a[2:5], a[5])]),
    "mean_delta_cpu": (("T", "C", "I", "I", "I", "Cw"), lambda a: [ref.mean_delta_cpu(a[0], a[1], *a[2:5])]),
    "variance_delta_cpu": (("T", "T", "C", "C", "I", "I", "I", "Cw"),
                           lambda a: [ref.variance_delta_cpu(*a[0:4], *a[4:7])]),
    "normalize_delta_cpu": (("T", "C", "C", "C", "C", "I", "I", "I", "Tw"),
                            lambda a: [ref.normalize_delta_cpu(*a[0:5], *a[5:8], a[8], F["bwd_eps"], F["bwd_eps_in_sqrt"])]),
}
BAD_ARRAYS = ["float64", "int32", "float16", "big_endian", "short", "long", "empty", "strided", "read_only",
              "list", "none", "str", "scalar", "2d_fortran", "overlap"]
BAD_INTS = [-1, -(2**40), 2**63, 2**64, 1.0, 2.5, True, "3", None, np.float32(2)]


def _good_array(kind, b, f, s, rng):
    if kind.startswith("T"):
        return rng.standard_normal(b * f * s).astype(np.float32).reshape(b, f, s) if b * f * s else np.zeros(0, np.float32)
    return rng.uniform(0.5, 2.0, f).astype(np.float32)


def _mutate_array(a, how, other):
    """A bad version of array a (other: an array of the call to overlap with)."""
    n = a.size
    return {
        "float64": lambda: a.astype(np.float64), "int32": lambda: a.astype(np.int32),
        "float16": lambda: a.astype(np.float16), "big_endian": lambda: a.astype(">f4"),
        "short": lambda: a.reshape(-1)[: max(n - 1, 0)].copy(), "long": lambda: np.concatenate([a.reshape(-1), [1.0]]).astype(np.float32),
        "empty": lambda: np.zeros(0, np.float32),
        "strided": lambda: np.repeat(a.reshape(-1), 2)[::2],
        "read_only": lambda: _read_only(a.copy()), "list": lambda: a.reshape(-1).tolist(), "none": lambda: None,
        "str": lambda: "abc", "scalar": lambda: 1.5,
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
        for a, before in zip(args, snapshot):   # nothing was written
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
        scale = max(1.0, np.abs(w[finite]).max(), np.abs(np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in inputs if isinstance(x, np.ndarray) and x.size] or [np.zeros(1)])).max())
        assert np.abs(g[finite] - w[finite]).max() <= 1e-4 * scale * max(1, ints[0] * ints[2])


@SETTINGS
@given(data=st.data())
def test_layer_fuzz(data):
    """Random constructor arguments, inputs, deltas and update arguments: a correct result or
    TypeError/ValueError, and a failed call changes nothing."""
    dims = [data.draw(st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 2.0, None, True, "2"])), label=k)
            for k in ("batch", "w", "h", "c")]
    flavor = data.draw(st.sampled_from(["pjreddie", "alexeyab", "torch", "caffe", 3]), label="flavor")
    try:
        layer = make_batchnorm_layer(*dims, flavor=flavor)
    except (TypeError, ValueError):
        return
    b, w, h, c = layer.batch, layer.w, layer.h, layer.c
    n = b * c * h * w
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    good = rng.standard_normal(n).astype(np.float32).reshape(b, c, h, w)
    for step in range(3):
        bad = data.draw(st.sampled_from([None] + BAD_ARRAYS), label="input")
        x = good if bad is None else _mutate_array(good, bad, layer.output)
        train = data.draw(st.booleans(), label="train")
        fields = {k: getattr(layer, k).copy() for k in ("output", "mean", "variance", "rolling_mean", "rolling_variance")}
        try:
            layer.forward(x, train=train)
        except (TypeError, ValueError):
            for k, v in fields.items():
                assert np.array_equal(getattr(layer, k), v, equal_nan=True), k
            continue
        e = ref.forward(x, layer.scales, layer.biases, fields["rolling_mean"], fields["rolling_variance"],
                        (b, c, h, w), layer.flavor.name, train)
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
        args = [data.draw(st.sampled_from([0.01, 0, -1, float("nan"), "x", None]), label="lr"),
                data.draw(st.sampled_from([0.9, 1.5, float("inf")]), label="momentum"), 0.0005,
                data.draw(st.sampled_from([b, 0, -2, 1.5, None]), label="batch")]
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
        elif op == 2:   # change a number
            lines[i] = "".join(str(rng.integers(-3, 100000)) if ch.isdigit() else ch for ch in lines[i])
        elif op == 3:   # flip a character
            line = lines[i]
            if line:
                j = rng.integers(0, len(line))
                lines[i] = line[:j] + chr(rng.integers(32, 127)) + line[j + 1:]
        elif op == 4:
            j = rng.integers(0, len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(i, rng.choice(["[conv]\n", "=\n", "filters=\n", "stride=0\n", "size=-1\n", "[route]\nlayers=-99\n",
                                        "batch_normalize=1\n", "groups=0\n", "\x00\n", "width=99999999\n"]))
    return "".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, len(CFGS) - 1), seed=st.integers(0, 2**32 - 1),
       flavor=st.sampled_from(["pjreddie", "alexeyab"]))
def test_mutated_cfg_text(i, seed, flavor):
    text = CFGS[i].read_text()
    mutated = _mutate_text(text, np.random.default_rng(seed))
    try:
        load_network(mutated, flavor=flavor)
    except DarknetCfgError:
        pass


WEIGHTS = sorted((DATA / "expected" / "weights").rglob("*.weights"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, len(WEIGHTS) - 1), seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(["flip", "truncate", "both"]))
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
    assert len(net.bn_layers) > 0   # it loaded: the flips landed in values
