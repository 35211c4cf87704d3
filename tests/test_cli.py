"""The darknet-bn command line: info, bench (options, JSON, plot, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, skip_unless_usable

from darknet_bn import bench, cli, kernels

run = run_cli


def test_info(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0
    assert "OpenMP" in out and "self-check" in out and "ok" in out


def test_bench_small_run_with_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    code, out, _ = run(
        [
            "bench",
            "--shape",
            "2x3x4x5",
            "--shape",
            "8X16x1x1",
            "--repeat",
            "3",
            "--compare",
            "plain,numpy",
            "--threads",
            "1",
            "--flavor",
            "pjreddie",
            "--json",
            str(path),
        ],
        capsys,
    )
    assert code == 0, out
    assert "2x3x4x5" in out and "8x16x1x1" in out and "x plain" in out and "x numpy" in out
    data = json.loads(path.read_text())
    assert data["machine"]["threads"] == 1
    rows = data["results"]
    assert {(tuple(r["shape"]), r["pass"]) for r in rows} == {
        (s, p) for s in ((2, 3, 4, 5), (8, 16, 1, 1)) for p in ("train", "infer", "infer+leaky", "backward")
    }
    for r in rows:
        assert r["median_ms"]["ours"] > 0 and r["median_ms"]["plain"] > 0 and r["median_ms"]["numpy"] > 0
        assert r["q1_ms"]["ours"] <= r["median_ms"]["ours"] <= r["q3_ms"]["ours"]
        assert r["triad_gbs"] > 0 and r["bytes_min"] == {"train": 12, "infer": 8, "infer+leaky": 8, "backward": 20}[
            r["pass"]
        ] * (2 * 3 * 4 * 5 if r["shape"][0] == 2 else 8 * 16)
        assert r["ratios"]["plain"] == pytest.approx(r["median_ms"]["plain"] / r["median_ms"]["ours"])
    kernels.set_num_threads(None)


def test_bench_renorm_rows(capsys):
    code, out, _ = run(["bench", "--shape", "4x3x5x5", "--repeat", "2", "--compare", "plain", "--renorm"], capsys)
    assert code == 0
    assert "train+renorm" in out and "backward+renorm" in out


@pytest.mark.parametrize("act", ["leaky", "swish"])
def test_bench_activation_rows(act, tmp_path, capsys):
    """--activation NAME adds train+NAME and backward+NAME (our plain passes timed in their rounds), the
    summary of what the activation costs and the targets, in the table and the JSON."""
    path = tmp_path / "r.json"
    argv = ["bench", "--shape", "2x3x4x5", "--shape", "8x16x1x1", "--repeat", "2", "--compare", "plain,darknet"]
    code, out, _ = run(argv + ["--activation", act, "--json", str(path)], capsys)
    assert code == 0, out
    assert f"train+{act}" in out and f"backward+{act}" in out and f"{act} fused in training" in out
    assert "targets: fused fwd+bwd / plain fwd+bwd <= 1.1" in out and "separate passes (darknet)" in out
    data = json.loads(path.read_text())
    rows = {(tuple(r["shape"]), r["pass"]): r for r in data["results"]}
    for shape in ((2, 3, 4, 5), (8, 16, 1, 1)):
        tr, bw = rows[shape, f"train+{act}"], rows[shape, f"backward+{act}"]
        assert tr["baseline"] == "ours:train" and bw["baseline"] == "ours:backward"
        assert tr["over_baseline"] == pytest.approx(tr["median_ms"]["ours"] / tr["median_ms"]["ours:train"])
        assert {"plain", "darknet"} <= set(tr["ratios"]) and {"plain", "darknet"} <= set(bw["ratios"])
        assert "darknet" not in rows[shape, "train"]["median_ms"]
    summary = data["activation"][act]
    assert [tuple(d["shape"]) for d in summary["per_shape"]] == [(2, 3, 4, 5), (8, 16, 1, 1)]
    for d in summary["per_shape"]:
        tr, bw = rows[tuple(d["shape"]), f"train+{act}"], rows[tuple(d["shape"]), f"backward+{act}"]
        plain = tr["median_ms"]["ours:train"] + bw["median_ms"]["ours:backward"]
        fused = tr["median_ms"]["ours"] + bw["median_ms"]["ours"]
        assert d["fused_over_plain"] == pytest.approx(fused / plain)
        sep = tr["median_ms"]["darknet"] + bw["median_ms"]["darknet"]
        assert d["peer_over_fused"]["darknet"] == pytest.approx(sep / fused)
    assert set(summary["targets"]) == {"fused_over_plain", "separate_over_fused"}


def test_bench_activation_adds_the_separate_passes_peer(monkeypatch, capsys):
    """With --activation and no --compare, darknet (the separate passes) joins the default peers; the
    default budget grows with the rows."""
    seen = []
    real = bench.run

    def fake_run(shapes, peers, **kw):
        seen.append((list(peers), kw["passes"], kw["budget_s"]))
        return real(shapes, [p for p in peers if p == "darknet"], **{**kw, "rounds": 2})

    monkeypatch.setattr(bench, "run", fake_run)
    for extra in ([], ["--activation", "mish"], ["--activation", "mish", "--compare", "plain"]):
        code, _, _ = run(["bench", "--shape", "2x3x4x5"] + extra, capsys)
        assert code == 0
    (p0, q0, b0), (p1, q1, b1), (p2, q2, b2) = seen
    assert "darknet" not in p0 and tuple(q0) == bench.PASSES
    assert p1 == p0 + ["darknet"] and tuple(q1) == bench.PASSES + ("train+mish", "backward+mish")
    assert p2 == ["plain"] and tuple(q2) == tuple(q1)
    # the default budget per row stays the default run's
    assert b0 == bench.DEFAULT_BUDGET_S and b1 == b2 == pytest.approx(1.5 * bench.DEFAULT_BUDGET_S)


def test_demo_command_is_wired(capsys):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'darknet_bn[demo]')")
    code, out, _ = run(["demo", "--epochs", "1", "--json", ""], capsys)
    assert code == 0
    assert "training mode on 4-image batches" in out


@pytest.mark.parametrize("peer", ["torch", "torch-out", "ort", "openvino", "jax"])
def test_bench_peer_or_note(peer, capsys):
    """An installed peer gets a column; a missing one a note saying how to install it."""
    if bench.available(peer):
        skip_unless_usable(peer)
    code, out, _ = run(["bench", "--shape", "2x3x4x5", "--repeat", "2", "--compare", peer], capsys)
    assert code == 0
    if bench.available(peer):
        assert f"x {peer}" in out and "NOT TIMED" not in out
        assert "checked against ours before timing" in out
    else:
        assert f"{peer} is not installed (pip install" in out


def test_bench_default_peers_are_the_installed_ones(monkeypatch, tmp_path, capsys):
    real_available = bench.available
    monkeypatch.setattr(bench, "available", lambda p: p in ("torch", "torch-out") and real_available(p))
    real = bench.run
    seen = {}

    def fake_run(shapes, peers, **kw):
        seen["peers"] = list(peers)
        return real(shapes, [p for p in peers if p == "numpy"], **kw)  # time nothing heavy

    monkeypatch.setattr(bench, "run", fake_run)
    path = tmp_path / "r.json"
    code, out, _ = run(["bench", "--shape", "2x3x4x5", "--repeat", "2", "--json", str(path)], capsys)
    assert code == 0
    expected = [p for p in ("torch", "torch-out") if real_available(p)]
    assert seen["peers"] == expected
    for p in ("ort", "openvino", "jax"):
        assert f"note: {p} is not installed" in out
    data = json.loads(path.read_text())
    m = data["machine"]
    assert m["cpu"] == bench.cpu_info()["cpu"] and m["cores"] >= 1 and isinstance(m["caches"], dict)
    assert m["elapsed_s"] > 0 and set(m["peers"]) == set(expected)
    assert f"{m['cores']} core(s)" in out.splitlines()[0]


def test_bench_cfg_keeps_only_peers_with_every_pass(monkeypatch):
    import argparse

    monkeypatch.setattr(bench, "available", lambda p: True)
    args = argparse.Namespace(threads=None, repeat=None, compare="plain,ort,openvino", plot=None, cfg="x.cfg")
    peers, notes, _ = cli.common.bench_options(args)
    assert peers == ["plain"]
    assert any("ort offers only some passes" in n for n in notes)


def test_bench_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install matplotlib)")
    path = tmp_path / "p.png"
    code, _, _ = run(
        ["bench", "--shape", "2x3x4x5", "--repeat", "2", "--compare", "plain", "--plot", str(path)], capsys
    )
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "--shape", "2x3x4"], "BxCxHxW"),
        (["bench", "--shape", "2x0x4x4"], "BxCxHxW"),
        (["bench", "--shape", "axbxcxd"], "BxCxHxW"),
        (["bench", "--compare", "caffe"], "unknown peer"),
        (["bench", "--threads", "0"], "--threads"),
        (["bench", "--repeat", "0"], "--repeat"),
        (["bench", "--budget", "0"], "--budget"),
        (["bench", "--compare", "torch,pytorch"], "unknown peer"),
        (["bench", "--flavor", "caffe"], "invalid choice"),
        (["bench", "--threads", "two"], "invalid int"),
        (["bench", "--activation", "swiss"], "--activation: activation: expected one of linear, leaky"),
        (["bench", "--activation", "Leaky"], "got 'Leaky'"),
        (["bench", "--activation", "leaky", "--cfg", "x.cfg"], "--activation: not with --cfg"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, words, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert words in err


def test_console_script_and_module(tmp_path):
    """The installed entry points run (from another directory, so the checkout cannot shadow the package)."""
    script = Path(sys.executable).parent / "darknet-bn"
    for cmd in ([str(script)] if script.exists() else []) + [[sys.executable, "-m", "darknet_bn"]]:
        cmd = cmd if isinstance(cmd, list) else [cmd]
        r = subprocess.run(
            cmd + ["info"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, "PYTHONPATH": ""},
        )
        assert r.returncode == 0, r.stderr
        assert "self-check" in r.stdout
