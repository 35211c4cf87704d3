"""darknet_bn.cli.layers and darknet_bn.cli.bench_cfg: ``darknet-bn layers`` and ``darknet-bn bench --cfg``
(output, JSON, exit codes: a missing file, a bad cfg or a weights file that does not match -> one line on
stderr, exit code 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, run_cli

from darknet_bn import bench
from darknet_bn.cli import common

# Loading every shared cfg by each fork's rules reports the keys that fork ignores; the tests that check
# those warnings catch them with pytest.warns (which sees them regardless of this filter).
pytestmark = pytest.mark.filterwarnings("ignore::darknet_bn.DarknetCfgWarning")


PJ_SMALL = DATA / "expected" / "weights" / "pjreddie" / "bn_small"
BN_SMALL_CFG = DATA / "cfg" / "oracle" / "bn_small.cfg"


run = run_cli


def _table_rows(fork, name):
    rows = []
    for line in (DATA / "expected" / "tables" / fork / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            t = line.split()
            rows.append((int(t[0]), t[1], int(t[2]), *map(int, t[3:9])))
    return rows


# -- darknet-bn layers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fork,name",
    [
        ("pjreddie", "yolov3-tiny"),
        ("alexeyab", "yolov4-tiny"),
        ("alexeyab", "efficientnet_b0"),
        ("pjreddie", "xyolo.test"),
    ],
)
def test_layers_prints_darknets_sizes(fork, name, capsys):
    cfg = next(p for p in [DATA / "cfg" / fork / f"{name}.cfg", DATA / "cfg" / "oracle" / f"{name}.cfg"] if p.exists())
    code, out, err = run(["layers", cfg, "--flavor", fork], capsys)
    assert code == 0, err
    lines = out.splitlines()
    rows = _table_rows(fork, name)
    assert f"{len(rows)} layers" in lines[0]
    body = [ln for ln in lines[2:] if not ln.startswith("ignored: ")]
    assert len(body) == len(rows)
    assert (f"{fork}'s rules, as asked" if fork == "pjreddie" else "AlexeyAB's rules, as asked") in lines[0]
    for line, (index, typ, bn, w, h, c, ow, oh, oc) in zip(body, rows):
        assert line.split()[:2] == [str(index), typ]
        if typ == "connected":  # as Darknet prints it: inputs -> outputs
            assert f"{c} -> {oc}" in " ".join(line.split())
        elif ow and oh and oc:
            assert f"{ow:4d} x{oh:4d} x{oc:4d}" in line
        if w and h and c and typ != "connected":
            assert f"{w:4d} x{h:4d} x{c:4d} ->" in line
        assert line.rstrip().endswith("bn") == (bn == 1 or typ == "batchnorm"), line


def test_layers_with_weights_prints_bn_statistics(capsys):
    code, out, err = run(["layers", BN_SMALL_CFG, "--weights", PJ_SMALL / "bn_small.weights"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "version 0.2.0" in lines[0] and "seen 123456789" in lines[0]
    assert "mean|scales|" in lines[1]
    for index, typ in ((0, "convolutional"), (1, "batchnorm"), (3, "connected"), (4, "batchnorm")):
        scales = np.fromfile(PJ_SMALL / "arrays" / f"L{index:03d}_{typ}_scales.f32", dtype="<f4")
        rv = np.fromfile(PJ_SMALL / "arrays" / f"L{index:03d}_{typ}_rolling_variance.f32", dtype="<f4")
        line = next(ln for ln in lines[2:] if ln.split()[0] == str(index))
        assert line.split()[-2:] == [
            f"{np.abs(scales).astype(np.float64).mean():.4g}",
            f"{rv.astype(np.float64).mean():.4g}",
        ]


def test_layers_recurrent_and_warnings(capsys):
    """The outer rnn layer's own flag is 0 (make_rnn_layer never sets it); its three inner connected
    layers follow as sub-rows, each with batch_normalize 1 and a BN mark."""
    code, out, err = run(["layers", DATA / "cfg" / "alexeyab" / "rnn.cfg", "--flavor", "alexeyab"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[-2:] == ["bnf", "BN"]
    assert lines[2].split()[:2] == ["0", "rnn"] and lines[2].split()[-1] == "0"
    assert [ln.split()[0] for ln in lines[3:6]] == [".input_layer", ".self_layer", ".output_layer"]
    assert all(ln.split()[-2:] == ["1", "bn"] for ln in lines[3:6])
    assert err.count("\n") == 1 and "warning(s)" in err
    code, out, err = run(
        ["layers", DATA / "cfg" / "alexeyab" / "rnn.cfg", "--flavor", "alexeyab", "--warnings"], capsys
    )
    assert code == 0 and "divides by zero" in err and err.startswith("warning: ")


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("darknet-bn: error: ")
    return lines[0]


def test_layers_exit_2_on_a_missing_file(tmp_path, capsys):
    code, out, err = run(["layers", tmp_path / "none.cfg"], capsys)
    assert code == 2 and out == "" and "none.cfg" in _one_error_line(err)
    code, out, err = run(["layers", BN_SMALL_CFG, "--weights", tmp_path / "none.weights"], capsys)
    assert code == 2 and "none.weights" in _one_error_line(err)


def test_layers_exit_2_on_a_bad_cfg(tmp_path, capsys):
    p = tmp_path / "bad.cfg"
    p.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters\n")
    code, out, err = run(["layers", p], capsys)
    assert code == 2 and f"{p}:6:" in _one_error_line(err)
    code, out, err = run(["layers", DATA / "cfg" / "alexeyab" / "resnet50.cfg", "--flavor", "alexeyab"], capsys)
    assert code == 2 and "[shortcut]" in _one_error_line(err)


def test_layers_exit_2_on_short_or_long_weights(tmp_path, capsys):
    src = (PJ_SMALL / "bn_small.weights").read_bytes()
    short = tmp_path / "short.weights"
    short.write_bytes(src[:-10])
    code, out, err = run(["layers", BN_SMALL_CFG, "--weights", short], capsys)
    line = _one_error_line(err)
    assert code == 2 and "layer 5 (connected) array 'weights'" in line and "10 bytes missing" in line
    long = tmp_path / "long.weights"
    long.write_bytes(src + b"\0" * 8)
    code, out, err = run(["layers", BN_SMALL_CFG, "--weights", long], capsys)
    assert code == 2 and "8 bytes follow" in _one_error_line(err)
    code, out, err = run(["layers", BN_SMALL_CFG, "--weights", long, "--allow-trailing"], capsys)
    assert code == 0
    code, out, err = run(["layers", BN_SMALL_CFG, "--batch", "0"], capsys)
    assert code == 2 and "--batch" in _one_error_line(err)


# -- darknet-bn bench --cfg ----------------------------------------------------------------------


def test_bench_cfg_per_layer_and_total(tmp_path, capsys):
    js = tmp_path / "b.json"
    code, out, err = run(
        [
            "bench",
            "--cfg",
            BN_SMALL_CFG,
            "--batch",
            "2",
            "--repeat",
            "2",
            "--compare",
            "plain",
            "--threads",
            "1",
            "--flavor",
            "pjreddie",
            "--json",
            js,
        ],
        capsys,
    )
    assert code == 0, err
    assert "pjreddie's rules, as asked (flavor 'pjreddie')" in out and "batch 2" in out
    rows = [ln for ln in out.splitlines() if ln[:1].isdigit()]
    assert [r.split()[:3] for r in rows] == [
        ["0", "convolutional", "2x4x8x8"],
        ["1", "batchnorm", "2x4x8x8"],
        ["3", "connected", "2x10x1x1"],
        ["4", "batchnorm", "2x10x1x1"],
    ]
    total = next(ln for ln in out.splitlines() if ln.startswith("total"))
    data = json.loads(js.read_text())
    assert [ly["index"] for ly in data["layers"]] == [0, 1, 3, 4] and data["fork"] == "pjreddie"
    from darknet_bn import bench

    assert set(data["total_ms"]) == set(bench.PASSES)
    for p in bench.PASSES:
        ours = [ly["median_ms"][p]["ours"] for ly in data["layers"]]
        assert all(v > 0 for v in ours)
        assert data["total_ms"][p]["ours"] == pytest.approx(sum(ours))
        assert data["total_ms"][p]["plain"] > 0
    assert len(data["results"]) == 2 * len(bench.PASSES)  # two distinct shapes
    assert "4 layers" in total and "x plain" in out


def test_bench_cfg_skips_layers_without_a_training_batch(capsys):
    code, out, err = run(["bench", "--cfg", BN_SMALL_CFG, "--repeat", "2", "--compare", "", "--threads", "1"], capsys)
    assert code == 0, err
    assert "not timed: 3 connected, 4 batchnorm" in out
    assert len([ln for ln in out.splitlines() if ln[:1].isdigit()]) == 2


def test_bench_cfg_function():
    res = bench.bench_cfg(BN_SMALL_CFG, batch=3, flavor="alexeyab", threads=1, repeat=2)
    assert res.net.fork == "alexeyab" and len(res.timed) == 4 and not res.skipped
    assert res.total_ms("infer") == pytest.approx(sum(res.layer_ms(b, "infer") for b in res.timed))
    assert "total" in bench.format_bench_cfg(res)


def test_bench_cfg_with_a_peer_that_fails_its_check_on_one_shape(monkeypatch, tmp_path, capsys):
    # bn_small at batch 2 has two BN shapes (2x4x8x8, 2x10x1x1); numpy's inference output is made wrong on
    # the first only: that row is not timed for numpy (no median), which bench --cfg reports instead of
    # failing (it raised KeyError looking the median up)
    real = bench.MAKERS["numpy"]

    def wrong_on_one_shape(s):
        impl = real(s)
        if s.shape == (2, 4, 8, 8):
            f = impl.calls["infer"]
            impl.calls["infer"] = impl.outputs["infer"] = lambda: f() * np.float32(1.01)
        return impl

    monkeypatch.setitem(bench.MAKERS, "numpy", wrong_on_one_shape)
    js = tmp_path / "cfg.json"
    code, out, err = run(
        [
            "bench",
            "--cfg",
            BN_SMALL_CFG,
            "--batch",
            "2",
            "--repeat",
            "1",
            "--compare",
            "numpy",
            "--threads",
            "1",
            "--json",
            js,
        ],
        capsys,
    )
    assert code == 0, err
    rows = {ln.split()[0] + " " + ln.split()[1]: ln.split() for ln in out.splitlines() if ln[:1].isdigit()}
    assert rows["0 convolutional"][-1] == "-" and rows["1 batchnorm"][-1] == "-"  # numpy not timed on infer
    assert float(rows["3 connected"][-1]) > 0 and float(rows["4 batchnorm"][-1]) > 0
    total = next(ln for ln in out.splitlines() if ln.startswith("total"))
    assert total.split()[-1] == "-"
    assert "NOT TIMED: numpy on 2x4x8x8 infer: differs from ours" in out
    data = json.loads(js.read_text())
    by_index = {ly["index"]: ly for ly in data["layers"]}
    assert math.isnan(by_index[0]["median_ms"]["infer"]["numpy"]) and by_index[3]["median_ms"]["infer"]["numpy"] > 0
    assert by_index[0]["median_ms"]["train"]["numpy"] > 0
    assert math.isnan(data["total_ms"]["infer"]["numpy"]) and data["total_ms"]["train"]["numpy"] > 0


def test_bench_cfg_errors(tmp_path, capsys):
    code, _, err = run(["bench", "--cfg", tmp_path / "none.cfg"], capsys)
    assert code == 2 and "none.cfg" in _one_error_line(err)
    code, _, err = run(["bench", "--cfg", BN_SMALL_CFG, "--shape", "1x2x3x4"], capsys)
    assert code == 2 and "--shape" in _one_error_line(err)
    code, _, err = run(["bench", "--cfg", BN_SMALL_CFG, "--compare", "caffe"], capsys)
    assert code == 2 and "caffe" in _one_error_line(err)
    nobn = tmp_path / "nobn.cfg"
    nobn.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n[maxpool]\n")
    code, _, err = run(["bench", "--cfg", nobn], capsys)
    assert code == 2 and "no batch-normalization layer" in _one_error_line(err)
    one = tmp_path / "one.cfg"
    one.write_text("[net]\ninputs=4\n[connected]\noutput=3\nbatch_normalize=1\n")
    code, _, err = run(["bench", "--cfg", one], capsys)
    assert code == 2 and "--batch 2" in _one_error_line(err)
    short = tmp_path / "short.weights"
    short.write_bytes((PJ_SMALL / "bn_small.weights").read_bytes()[:100])
    code, _, err = run(["bench", "--cfg", BN_SMALL_CFG, "--weights", short, "--flavor", "pjreddie"], capsys)
    assert code == 2 and "bytes missing" in _one_error_line(err)


def test_load_or_error_returns_the_network():
    net = common.load_or_error(str(BN_SMALL_CFG), str(PJ_SMALL / "bn_small.weights"), 1, "pjreddie")
    assert not isinstance(net, int) and len(net.bn_layers) == 4
    assert isinstance(Path(net.weights_file), Path)


# -- the default rules: detected from the cfg; ignored keys listed ------------------------------------


def test_layers_default_rules_follow_the_cfg(capsys):
    """The issue's case: yolov4-tiny by default has Darknet's (AlexeyAB's) 32 channels at route layer 3
    (tests/data/darknet/expected/tables/alexeyab/yolov4-tiny.txt), and the header says why."""
    code, out, err = run(["layers", DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "AlexeyAB's rules, detected: line 60: [route] groups= is read only by AlexeyAB's Darknet" in lines[0]
    assert "BN flavor alexeyab" in lines[0]
    route = next(ln for ln in lines[2:] if ln.split()[:2] == ["3", "route"])
    assert " 104 x 104 x  32 ->  104 x 104 x  32" in route
    code, out, err = run(["layers", DATA / "cfg" / "pjreddie" / "yolov3-tiny.cfg"], capsys)
    assert code == 0 and "pjreddie's rules, detected: no section, key or value" in out.splitlines()[0]
    # an explicit flavor or fork wins
    code, out, err = run(["layers", DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg", "--fork", "pjreddie"], capsys)
    assert code == 0 and "pjreddie's rules, as asked (fork='pjreddie')" in out
    assert "ignored: " in out and "[route] groups=2: pjreddie's Darknet does not read 'groups'" in out


def test_layers_lists_every_ignored_key(tmp_path, capsys):
    cfg = tmp_path / "typo.cfg"
    cfg.write_text(BN_SMALL_CFG.read_text().replace("[maxpool]\n", "[maxpool]\nstrde=2\n", 1))
    code, out, err = run(["layers", cfg], capsys)
    assert code == 0, err
    line = next(ln for ln in cfg.read_text().splitlines() if ln == "strde=2")
    no = cfg.read_text().splitlines().index(line) + 1
    ignored = [ln for ln in out.splitlines() if ln.startswith("ignored: ")]
    assert ignored == [
        f"ignored: {cfg}:{no}: [maxpool] strde=2: pjreddie's Darknet does not read 'strde' in a "
        "[maxpool] section, it is ignored (Darknet: 'Unused field')"
    ]
    assert "DarknetCfgWarning" not in err


def test_bench_cfg_default_rules_follow_the_cfg(tmp_path, capsys):
    js = tmp_path / "b.json"
    cfg = DATA / "cfg" / "oracle" / "yolov4-tiny-mini.cfg"
    code, out, err = run(
        ["bench", "--cfg", cfg, "--batch", "1", "--repeat", "1", "--compare", "", "--threads", "1", "--json", js],
        capsys,
    )
    assert code == 0, err
    assert "AlexeyAB's rules, detected: line 60" in out and "flavor torch timed" in out
    data = json.loads(js.read_text())
    assert data["fork"] == "alexeyab" and data["flavor"] == "torch"
    # every BN layer timed has the shape of AlexeyAB's own table (batch, out_c, out_h, out_w)
    want = [
        (i, [1, oc, oh, ow])
        for i, typ, bn, w, h, c, ow, oh, oc in _table_rows("alexeyab", "yolov4-tiny-mini")
        if bn == 1
    ]
    assert [(ly["index"], ly["shape"]) for ly in data["layers"]] == want and len(want) == 19
    code, out, err = run(
        ["bench", "--cfg", cfg, "--repeat", "1", "--compare", "", "--threads", "1", "--flavor", "pjreddie"], capsys
    )
    assert code == 0 and "pjreddie's rules, as asked (flavor 'pjreddie')" in out and "ignored: " in out
    res = bench.bench_cfg(cfg, repeat=1, passes=("train",))
    assert res.net.fork == "alexeyab"
