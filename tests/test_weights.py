"""darknet_bn.darknet.weights and Network.load_weights/save_weights against the .weights files the real Darknet
wrote (tests/data/darknet/expected/weights/<fork>/<cfg>/: the file, layout.tsv, arrays/): header, layout,
arrays, byte-identical round trip; truncated, trailing and corrupted files; the transposed-connected
header; speed on a 250 MB file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from darknet_bn.darknet import (
    ArraySpec,
    DarknetWeightsError,
    WeightsHeader,
    load_network,
    read_weights,
    seen_bytes,
    write_weights,
)

WEIGHTS = DATA / "expected" / "weights"
CASES = [(fork, d) for fork in ("pjreddie", "alexeyab") for d in sorted((WEIGHTS / fork).iterdir())]
IDS = [f"{f}-{d.name}" for f, d in CASES]


def cfg_for(fork: str, name: str) -> Path:
    for sub in (fork, "oracle"):
        p = DATA / "cfg" / sub / f"{name}.cfg"
        if p.exists():
            return p
    raise FileNotFoundError(name)


def read_layout(d: Path):
    """(header facts from the comment line, rows (layer, type, array, count, offset), end offset)."""
    lines = (d / "layout.tsv").read_text().splitlines()
    head = dict(kv.split("=") for kv in lines[0].split() if "=" in kv and not kv.startswith("file="))
    rows = [
        (int(a), t, n, int(c), int(o))
        for a, t, n, c, o in (ln.split("\t") for ln in lines[2:] if ln and not ln.startswith("#"))
    ]
    end = dict(kv.split("=") for kv in lines[-1][2:].split())
    assert int(end["manifest_mismatches"]) == 0
    return head, rows, int(end["end_offset"])


def test_weights_data_is_there():
    assert [f"{f}/{d.name}" for f, d in CASES] == [
        "pjreddie/bn_small",
        "pjreddie/yolov3-tiny-mini",
        "alexeyab/bn_small",
    ]


@pytest.mark.parametrize("fork,d", CASES, ids=IDS)
def test_header_and_layout_match_darknets(fork, d):
    head, rows, end = read_layout(d)
    net = load_network(cfg_for(fork, d.name), d / f"{d.name}.weights", flavor=fork)
    h = net.header
    assert (h.major, h.minor, h.revision, h.seen, h.seen_size) == (
        int(head["major"]),
        int(head["minor"]),
        int(head["revision"]),
        int(head["seen"]),
        8,
    )
    assert h.nbytes == rows[0][4] == 20
    got, off = [], h.nbytes
    for s in net.weights_layout():
        got.append((s.layer, s.layer_type, s.name, s.count, off))
        off += s.nbytes
    assert got == rows
    assert off == end == (d / f"{d.name}.weights").stat().st_size == net.weights_bytes()


@pytest.mark.parametrize("fork,d", CASES, ids=IDS)
def test_arrays_match_exactly(fork, d):
    net = load_network(cfg_for(fork, d.name), d / f"{d.name}.weights", flavor=fork)
    files = sorted((d / "arrays").glob("*.f32"))
    assert files
    for f in files:
        tag, typ, name = f.stem.split("_", 2)
        layer = net.layers[int(tag[1:])]
        assert layer.type == typ
        want = np.fromfile(f, dtype="<f4")
        got = layer.arrays[name]
        assert got.dtype == np.float32 and got.size == want.size
        assert np.array_equal(got.reshape(-1).view(np.uint32), want.view(np.uint32)), f.name
    # every BN layer's Layer carries the file's values
    for bn in net.bn_layers:
        lyr = bn.layer
        assert (lyr.batch, lyr.c, lyr.h, lyr.w) == bn.shape
        for name in ("scales", "rolling_mean", "rolling_variance"):
            want = np.fromfile(d / "arrays" / f"L{bn.index:03d}_{bn.type}_{name}.f32", dtype="<f4")
            assert np.array_equal(getattr(lyr, name), want), (bn, name)
        b = d / "arrays" / f"L{bn.index:03d}_{bn.type}_biases.f32"
        if b.exists():
            assert np.array_equal(lyr.biases, np.fromfile(b, dtype="<f4"))
        else:  # pjreddie's [batchnorm] stores no biases: Darknet's initial 0
            assert fork == "pjreddie" and bn.type == "batchnorm" and not lyr.biases.any()


@pytest.mark.parametrize("make_layers", [False, True])
@pytest.mark.parametrize("fork,d", CASES, ids=IDS)
def test_read_write_is_byte_identical(fork, d, make_layers, tmp_path):
    src = d / f"{d.name}.weights"
    net = load_network(cfg_for(fork, d.name), src, flavor=fork)
    if make_layers:
        for bn in net.bn_layers:
            _ = bn.layer  # the host arrays become the Layer's
    out = tmp_path / "out.weights"
    assert net.save_weights(out) == src.stat().st_size
    assert out.read_bytes() == src.read_bytes()


def test_changed_scales_are_what_is_saved(tmp_path):
    d = WEIGHTS / "pjreddie" / "bn_small"
    net = load_network(cfg_for("pjreddie", "bn_small"), d / "bn_small.weights")
    net.bn_layers[1].layer.scales[:] = [10, 20, 30, 40]  # layer 1, pjreddie [batchnorm]
    out = tmp_path / "x.weights"
    net.save_weights(out)
    _, rows, _ = read_layout(d)
    off = next(o for layer, _, name, _, o in rows if layer == 1 and name == "scales")
    assert np.array_equal(np.fromfile(out, dtype="<f4", count=4, offset=off), [10, 20, 30, 40])
    assert load_network(cfg_for("pjreddie", "bn_small"), out).bn_layers[1].scales.tolist() == [10, 20, 30, 40]


# -- the forks' [batchnorm] layouts differ ---------------------------------------------------------------


def test_pjreddie_file_is_short_for_alexeyab_rules():
    """AlexeyAB stores [batchnorm] biases, pjreddie does not: pjreddie's bn_small.weights lacks 2 x (4 + 10)
    floats for AlexeyAB's rules."""
    _, pj_rows, pj_end = read_layout(WEIGHTS / "pjreddie" / "bn_small")
    _, ab_rows, ab_end = read_layout(WEIGHTS / "alexeyab" / "bn_small")
    assert ab_end - pj_end == 4 * (4 + 10)
    with pytest.raises(DarknetWeightsError) as e:
        load_network(
            cfg_for("alexeyab", "bn_small"), WEIGHTS / "pjreddie" / "bn_small" / "bn_small.weights", flavor="alexeyab"
        )
    assert e.value.missing == ab_end - pj_end
    assert f"{ab_end - pj_end} bytes short" in str(e.value)
    with pytest.raises(DarknetWeightsError, match=f"{ab_end - pj_end} bytes follow the last array") as e:
        load_network(cfg_for("pjreddie", "bn_small"), WEIGHTS / "alexeyab" / "bn_small" / "bn_small.weights")
    net = load_network(
        cfg_for("pjreddie", "bn_small"), WEIGHTS / "alexeyab" / "bn_small" / "bn_small.weights", allow_trailing=True
    )
    assert net.weights_trailing == ab_end - pj_end


# -- truncated files -----------------------------------------------------------------------------


@pytest.mark.parametrize("fork,d", CASES, ids=IDS)
def test_truncated_files_name_layer_array_and_missing_bytes(fork, d, tmp_path):
    head, rows, end = read_layout(d)
    data = (d / f"{d.name}.weights").read_bytes()
    cfg = cfg_for(fork, d.name)
    cuts = sorted({21, 24, 100, end - 1, end - 4, end // 2} | {o + 4 for *_, o in rows} | {o for *_, o in rows[1:]})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.weights"
        p.write_bytes(data[:cut])
        with pytest.raises(DarknetWeightsError) as e:
            load_network(cfg, p, flavor=fork)
        # the first array of layout.tsv that does not fit
        layer, typ, name, count, off = next(r for r in rows if r[4] + 4 * r[3] > cut)
        err = e.value
        assert (err.layer, err.array, err.missing) == (layer, name, end - cut), cut
        msg = str(err)
        assert f"layer {layer} ({typ}) array '{name}'" in msg
        assert f"{off + 4 * count - cut} bytes missing" in msg and f"{end - cut} bytes short" in msg
        assert msg.startswith(str(p))


@pytest.mark.parametrize("cut", [0, 1, 11, 12, 19])
def test_truncated_header(cut, tmp_path):
    d = WEIGHTS / "pjreddie" / "bn_small"
    p = tmp_path / "h.weights"
    p.write_bytes((d / "bn_small.weights").read_bytes()[:cut])
    with pytest.raises(DarknetWeightsError, match="header") as e:
        load_network(cfg_for("pjreddie", "bn_small"), p)
    assert e.value.missing == (12 if cut < 12 else 20) - cut


@pytest.mark.parametrize("extra", [1, 4, 1000])
def test_trailing_bytes_are_an_error_unless_allowed(extra, tmp_path):
    d = WEIGHTS / "pjreddie" / "yolov3-tiny-mini"
    src = d / "yolov3-tiny-mini.weights"
    p = tmp_path / "t.weights"
    p.write_bytes(src.read_bytes() + b"\x01" * extra)
    cfg = cfg_for("pjreddie", "yolov3-tiny-mini")
    with pytest.raises(DarknetWeightsError, match=f"{extra} bytes follow the last array after layer 22"):
        load_network(cfg, p)
    net = load_network(cfg, p, allow_trailing=True)
    assert net.weights_trailing == extra
    ref = load_network(cfg, src)
    for a, b in zip(net.layers, ref.layers):
        for k in a.arrays:
            assert np.array_equal(a.arrays[k], b.arrays[k])
    out = tmp_path / "o.weights"
    net.save_weights(out)
    assert out.read_bytes() == src.read_bytes()  # the trailing bytes are not Darknet's: not written


_SMALL_SRC = (WEIGHTS / "pjreddie" / "bn_small" / "bn_small.weights").read_bytes()


@settings(max_examples=300, deadline=None)
@given(
    head=st.binary(min_size=0, max_size=24),
    cut=st.integers(0, len(_SMALL_SRC)),
    junk=st.binary(max_size=12),
    flavor=st.sampled_from(["pjreddie", "alexeyab"]),
)
def test_corrupted_files_raise_only_darknet_weights_error(head, cut, junk, flavor, tmp_path_factory):
    """Any header bytes, any length, any tail: the file loads or raises DarknetWeightsError."""
    p = tmp_path_factory.mktemp("w") / "c.weights"
    p.write_bytes(head + _SMALL_SRC[len(head) : cut] + junk)
    cfg = cfg_for("pjreddie", "bn_small")
    try:
        net = load_network(cfg, p, flavor=flavor)
    except DarknetWeightsError as e:
        assert str(e).startswith(str(p))
        return
    assert net.weights_bytes() == p.stat().st_size


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "major,minor,pj,ab",
    [
        (0, 2, 8, 8),
        (0, 1, 4, 4),
        (0, 0, 4, 4),
        (1, 0, 8, 8),
        (0, 1000, 4, 8),
        (1000, 0, 4, 8),
        (1001, 2, 4, 8),
        (0, 999, 8, 8),
        (-1, 5, 4, 4),
    ],
)
def test_seen_size_rule(major, minor, pj, ab):
    """README: 8 bytes when major*10+minor >= 2 (pjreddie also requires major and minor < 1000)."""
    assert seen_bytes(major, minor, "pjreddie") == pj
    assert seen_bytes(major, minor, "alexeyab") == ab


def _with_header(src: bytes, major: int, minor: int, revision: int, seen: int, seen_size: int) -> bytes:
    return WeightsHeader(major, minor, revision, seen, seen_size).to_bytes() + src[20:]


def test_four_byte_seen(tmp_path):
    d = WEIGHTS / "pjreddie" / "bn_small"
    src = (d / "bn_small.weights").read_bytes()
    p = tmp_path / "old.weights"
    p.write_bytes(_with_header(src, 0, 1, 0, 4242, 4))
    assert len(p.read_bytes()) == len(src) - 4
    for fork in ("pjreddie",):
        net = load_network(cfg_for(fork, "bn_small"), p, flavor=fork)
        assert (net.header.seen, net.header.seen_size, net.header.nbytes) == (4242, 4, 16)
        ref = load_network(cfg_for(fork, "bn_small"), d / "bn_small.weights", flavor=fork)
        assert np.array_equal(net.layers[3].weights, ref.layers[3].weights)
        out = tmp_path / "o.weights"
        net.save_weights(out)
        assert out.read_bytes() == p.read_bytes()


def test_transposed_connected_weights(tmp_path):
    """major > 1000: [connected] weights are stored (inputs, outputs); in memory they are (outputs,
    inputs). AlexeyAB reads an 8-byte seen there, pjreddie a 4-byte one."""
    d = WEIGHTS / "alexeyab" / "bn_small"
    src = (d / "bn_small.weights").read_bytes()
    p = tmp_path / "tr.weights"
    p.write_bytes(_with_header(src, 1001, 2, 5, 1000, 8))
    cfg = cfg_for("alexeyab", "bn_small")
    net = load_network(cfg, p, flavor="alexeyab")
    assert net.header.transpose and net.header.seen_size == 8
    _, rows, _ = read_layout(d)
    for layer, inputs, outputs in ((3, 64, 10), (5, 10, 5)):
        off, count = next((o, c) for ly, _, name, c, o in rows if ly == layer and name == "weights")
        stored = np.frombuffer(src, dtype="<f4", count=count, offset=off)
        assert net.layers[layer].weights.shape == (outputs, inputs)
        assert np.array_equal(net.layers[layer].weights, stored.reshape(inputs, outputs).T)
    assert np.array_equal(
        net.layers[0].weights.reshape(-1),  # convolutional weights are not transposed
        load_network(cfg, d / "bn_small.weights", flavor="alexeyab").layers[0].weights.reshape(-1),
    )
    out = tmp_path / "o.weights"
    net.save_weights(out)
    assert out.read_bytes() == p.read_bytes()
    # pjreddie reads a 4-byte seen for major >= 1000
    pj = WEIGHTS / "pjreddie" / "bn_small" / "bn_small.weights"
    q = tmp_path / "trpj.weights"
    q.write_bytes(_with_header(pj.read_bytes(), 1001, 2, 0, 77, 4))
    pnet = load_network(cfg, q, flavor="pjreddie")
    assert (pnet.header.seen, pnet.header.seen_size) == (77, 4)
    ref = load_network(cfg, pj, flavor="pjreddie")
    assert np.array_equal(pnet.layers[3].weights, ref.layers[3].weights.reshape(-1).reshape(64, 10).T)
    pnet.save_weights(out)
    assert out.read_bytes() == q.read_bytes()
    q.write_bytes(_with_header(pj.read_bytes(), 1001, 2, 0, 77, 8))  # an 8-byte seen is 4 bytes too many
    with pytest.raises(DarknetWeightsError, match="4 bytes follow"):
        load_network(cfg, q, flavor="pjreddie")


def test_header_type_checks():
    with pytest.raises(ValueError):
        WeightsHeader(0, 2, 0, seen=-1)
    with pytest.raises(ValueError):
        WeightsHeader(0, 2, 0, seen=2**32, seen_size=4)
    with pytest.raises(ValueError):
        WeightsHeader(2**31, 2, 0)
    assert WeightsHeader.for_fork("pjreddie") == WeightsHeader(0, 2, 0, 0, 8)
    assert WeightsHeader.for_fork("alexeyab").to_bytes() == bytes([0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0]) + bytes(8)


def test_save_without_weights_writes_darknets_initial_values(tmp_path):
    cfg = cfg_for("alexeyab", "bn_small")
    net = load_network(cfg, flavor="alexeyab")
    out = tmp_path / "fresh.weights"
    assert net.save_weights(out) == net.weights_bytes() == read_layout(WEIGHTS / "alexeyab" / "bn_small")[2]
    assert out.read_bytes()[:12] == bytes([0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0])
    back = load_network(cfg, out, flavor="alexeyab")
    for bn in back.bn_layers:
        assert np.all(bn.scales == 1) and not bn.biases.any() and not bn.rolling_mean.any()
        assert not bn.rolling_variance.any()


# -- layouts that depend on cfg keys ----------------------------------------------------------------

CONV = "[net]\nwidth=5\nheight=5\nchannels=2\n[convolutional]\nfilters=3\nsize=2\nbatch_normalize=1\n"


def test_dontload_and_dontloadscales_change_what_is_read():
    full = [(s.layer, s.name) for s in load_network(CONV).weights_layout()]
    assert full == [(0, "biases"), (0, "scales"), (0, "rolling_mean"), (0, "rolling_variance"), (0, "weights")]
    net = load_network(CONV + "dontloadscales=1\n")
    assert [s.name for s in net.weights_layout()] == ["biases", "weights"]
    assert [s.name for s in net.weights_layout(write=True)] == [n for _, n in full]
    assert load_network(CONV + "dontload=1\n").weights_layout() == []
    assert load_network(CONV + "dontsave=1\n").weights_layout(write=True) == []
    assert len(load_network(CONV + "dontsave=1\n", flavor="alexeyab").weights_layout(write=True)) == 5


def test_numload_reads_the_first_filters(tmp_path):
    net = load_network(CONV + "numload=2\n")
    assert [(s.name, s.count) for s in net.weights_layout()] == [
        ("biases", 2),
        ("scales", 2),
        ("rolling_mean", 2),
        ("rolling_variance", 2),
        ("weights", 2 * 2 * 2 * 2),
    ]
    values = np.arange(2 + 6 + 16, dtype=np.float32) + 1
    p = tmp_path / "n.weights"
    p.write_bytes(WeightsHeader(0, 2, 0).to_bytes() + values.tobytes())
    net.load_weights(p)
    lyr = net.layers[0]
    assert lyr.biases.tolist() == [1, 2, 0] and lyr.arrays["scales"].tolist() == [3, 4, 1]
    assert np.array_equal(lyr.weights[:2].reshape(-1), values[8:]) and not lyr.weights[2].any()


def test_flipped_convolution_weights(tmp_path):
    """flipped=1: the file holds (c*size*size, n); Darknet transposes to (n, c*size*size)."""
    net = load_network(CONV.replace("batch_normalize=1", "flipped=1"))
    values = np.arange(3 + 24, dtype=np.float32)
    p = tmp_path / "f.weights"
    p.write_bytes(WeightsHeader(0, 2, 0).to_bytes() + values.tobytes())
    net.load_weights(p)
    w = net.layers[0].weights
    assert w.shape == (3, 2, 2, 2)
    assert np.array_equal(w.reshape(3, 8), values[3:].reshape(8, 3).T)
    out = tmp_path / "o.weights"
    net.save_weights(out)
    assert out.read_bytes() == p.read_bytes()


def test_recurrent_layers_hold_their_inner_arrays(tmp_path):
    text = "[net]\ninputs=4\n[rnn]\noutput=3\nhidden=5\nbatch_normalize=1\n"
    net = load_network(text, flavor="alexeyab")
    names = [(s.name, s.count) for s in net.weights_layout()]
    assert names[:5] == [
        ("input_layer.biases", 5),
        ("input_layer.weights", 20),
        ("input_layer.scales", 5),
        ("input_layer.rolling_mean", 5),
        ("input_layer.rolling_variance", 5),
    ]
    assert sum(c for _, c in names) == (5 + 20 + 15) + (5 + 25 + 15) + (3 + 15 + 9)
    values = np.arange(sum(c for _, c in names), dtype=np.float32)
    p = tmp_path / "r.weights"
    p.write_bytes(WeightsHeader(0, 2, 5).to_bytes() + values.tobytes())
    net.load_weights(p)
    bn = net.bn_layers[0]
    assert bn.part == "input_layer" and bn.layer.scales.tolist() == values[25:30].tolist()
    out = tmp_path / "o.weights"
    net.save_weights(out)
    assert out.read_bytes() == p.read_bytes()


def test_read_write_weights_directly(tmp_path):
    specs = [ArraySpec("a", 0, "convolutional", "biases", 3), ArraySpec("b", 0, "convolutional", "weights", 2)]
    p = tmp_path / "d.weights"
    n = write_weights(p, WeightsHeader(0, 2, 0, 7), specs, {"a": [1, 2, 3], "b": np.array([4.5, 5.5])})
    assert n == 20 + 20 == p.stat().st_size
    data = read_weights(p, specs, fork="pjreddie")
    assert data.header.seen == 7 and data.arrays["a"].tolist() == [1, 2, 3] and data.arrays["b"].dtype == np.float32
    with pytest.raises(ValueError, match="has 2 values"):
        write_weights(p, WeightsHeader(0, 2, 0), specs, {"a": [1, 2], "b": [1, 2]})
    with pytest.raises(FileNotFoundError):
        read_weights(tmp_path / "missing.weights", specs, fork="pjreddie")


# -- speed ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_250_mb_file_loads_about_as_fast_as_it_reads(tmp_path):
    """4 connected layers of 4096x4096 with BN: 268,697,620 bytes. Loading (header, 20 array views,
    4 BN parameter sets) must take about the time of reading the file (the best of 3 runs each,
    page cache warm)."""
    cfg = (
        "[net]\nbatch=1\nwidth=1\nheight=1\nchannels=4096\n"
        + "[connected]\noutput=4096\nbatch_normalize=1\nactivation=leaky\n" * 4
    )
    net = load_network(cfg)
    rng = np.random.default_rng(0)
    for layer in net.layers:
        for name in layer.array_names():
            layer.array(name)[...] = rng.standard_normal(layer.array_shape(name), dtype=np.float32)
    p = tmp_path / "big.weights"
    size = net.save_weights(p)
    assert size == p.stat().st_size > 250_000_000

    def best(f):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            r = f()
            times.append(time.perf_counter() - t)
            del r
        return min(times)

    t_read = best(lambda: np.fromfile(p, dtype=np.uint8))
    t_load = best(lambda: load_network(cfg, p))
    print(f"\n250 MB weights: np.fromfile {t_read:.3f} s, load_network {t_load:.3f} s ({size / t_load / 1e9:.2f} GB/s)")
    assert t_load < 2 * t_read + 0.1, (t_load, t_read)
    back = load_network(cfg, p)
    assert np.array_equal(back.layers[2].weights, net.layers[2].weights)
