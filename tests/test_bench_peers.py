"""darknet_bn.bench: every row times what it names, in the state users call it; each peer computes the
same BN as ours (checked against a float64 reference written from the math here), and a peer whose
numbers differ is reported, not timed."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, skip_unless_usable

from darknet_bn import Layer, bench, kernels
from darknet_bn.flavors import get_flavor

SHAPE = (4, 3, 5, 6)
EPS = 1e-5


def _reference64(s: bench.Setup) -> dict:
    """PyTorch's BN math in float64, from the formulas: training forward, inference forward (the
    running statistics), inference + leaky, and the training backward of dy (the gradient of the
    training forward w.r.t. x)."""
    x, dy = s.x.astype(np.float64), s.dy.astype(np.float64)
    col = lambda v: np.asarray(v, np.float64).reshape(1, -1, 1, 1)  # noqa: E731
    ax = (0, 2, 3)
    m, v = x.mean(axis=ax, keepdims=True), x.var(axis=ax, keepdims=True)
    xhat = (x - m) / np.sqrt(v + EPS)
    y_infer = (x - col(s.rm)) / np.sqrt(col(s.rv) + EPS) * col(s.gamma) + col(s.beta)
    g = dy * col(s.gamma)
    dx = (g - g.mean(axis=ax, keepdims=True) - xhat * (g * xhat).mean(axis=ax, keepdims=True)) / np.sqrt(v + EPS)
    return {
        "train": xhat * col(s.gamma) + col(s.beta),
        "infer": y_infer,
        "infer+leaky": np.where(y_infer > 0, y_infer, 0.1 * y_infer),
        "backward": dx,
    }


def _setup(shape=SHAPE) -> bench.Setup:
    x, dy = bench.make_data(shape)
    return bench.Setup(
        shape,
        get_flavor("torch"),
        x,
        dy,
        *bench.make_params(shape[1]),
        threads=kernels.get_num_threads(),
        passes=bench.PASSES,
    )


PEERS = ["numpy", "torch", "torch-out", "ort", "openvino", "jax"]


@pytest.mark.parametrize("peer", PEERS)
def test_each_peer_computes_the_same_bn(peer):
    """Each pass a peer offers gives the float64 reference's numbers (float32 rounding), and it offers
    exactly the passes the bench says."""
    skip_unless_usable(peer)
    s = _setup()
    impl = bench.MAKERS[peer](s)
    ref = _reference64(s)
    assert set(impl.calls) == {p for p in bench.PASSES if bench.offers(peer, p)}
    assert set(impl.outputs) == set(impl.calls)
    for p in impl.calls:
        assert_close(impl.outputs[p](), ref[p], rtol=2e-5, name=f"{peer} {p}")


def test_ours_reference_matches_the_math():
    s = _setup()
    ref = bench.reference_outputs(s, bench.PASSES)
    for p, want in _reference64(s).items():
        got, top = ref[p]
        assert_close(got, want, rtol=2e-5, name=p)
        assert top == pytest.approx(float(np.abs(got).max()))


class _SpyLayer(Layer):
    """A Layer that records, for every backward, whether the last forward of that layer trained."""

    log: list = []

    def forward(self, input, train=True, activation=None):
        self.last_train = bool(train)
        return super().forward(input, train, activation)

    def backward(self, net_delta=None):
        _SpyLayer.log.append(("backward", self.renorm, self.last_train))
        return super().backward(net_delta)


def test_every_backward_row_times_the_training_backward(monkeypatch):
    """The timed backward follows a training forward (the old pass order train, infer, infer+leaky,
    backward timed the inference-mode backward), with and without renorm, whatever the peers."""
    _SpyLayer.log = []
    monkeypatch.setattr(bench.peers, "Layer", _SpyLayer)
    passes = bench.PASSES + bench.RENORM_PASSES
    results = bench.run([SHAPE], ["numpy"], rounds=2, passes=passes)
    assert [r.pass_ for r in results] == list(passes)
    calls = _SpyLayer.log
    assert {renorm for _, renorm, _ in calls} == {False, True}  # both layers' backwards ran
    assert all(train for _, _, train in calls), "a backward ran after an inference forward"
    # the training backward leaves the batch statistics' deltas it computed (the inference one zeroes them)
    layer = _SpyLayer(*SHAPE[:1], SHAPE[3], SHAPE[2], SHAPE[1], "torch")
    x, dy = bench.make_data(SHAPE)
    layer.forward(x, True)
    layer.delta[...] = dy
    layer.backward(layer.delta)
    assert np.any(layer.mean_delta != 0) and np.any(layer.variance_delta != 0)


def test_a_peer_that_differs_is_reported_not_timed(monkeypatch):
    real = bench.MAKERS["numpy"]

    def wrong(s):
        impl = real(s)
        f = impl.calls["infer"]
        impl.calls["infer"] = impl.outputs["infer"] = lambda: f() * np.float32(1.01)
        return impl

    monkeypatch.setitem(bench.MAKERS, "numpy", wrong)
    results = {r.pass_: r for r in bench.run([SHAPE], ["numpy"], rounds=2)}
    assert "numpy" not in results["infer"].median_ms
    assert "differs from ours" in results["infer"].not_timed["numpy"]
    assert results["infer"].ratio("numpy") != results["infer"].ratio("numpy")  # NaN
    for p in ("train", "infer+leaky", "backward"):
        assert "numpy" in results[p].median_ms and results[p].check_error["numpy"] < 1e-5
    text = bench.format_table(list(results.values()), ["numpy"])
    assert "NOT TIMED: numpy on 4x3x5x6 infer: differs from ours" in text


def test_a_peer_that_fails_to_set_up_is_reported(monkeypatch):
    def broken(s):
        raise RuntimeError("no such device")

    monkeypatch.setitem(bench.MAKERS, "numpy", broken)
    results = bench.run([SHAPE], ["numpy"], rounds=2)
    assert all("numpy" not in r.median_ms for r in results)
    assert all(r.not_timed["numpy"] == "failed to set up: RuntimeError: no such device" for r in results)


def test_budget_gives_every_row_min_rounds_and_progress_sums():
    done = []
    shapes = [(2, 3, 4, 5), (8, 16, 1, 1)]
    results = bench.run(shapes, ["numpy"], budget_s=1e-3, progress=done.append)
    assert all(r.rounds == bench.MIN_ROUNDS for r in results)
    assert sum(done) == sum(len(bench.PASSES) * bench.default_rounds(s) for s in shapes)
    results = bench.run(shapes[:1], [], budget_s=1e4)
    assert all(r.rounds == bench.default_rounds(shapes[0]) for r in results)


def test_cpu_info_names_the_cpu_and_its_caches():
    info = bench.cpu_info()
    assert info["cores"] >= 1 and info["logical_cpus"] >= info["cores"]
    import glob
    import platform

    if platform.system() == "Linux":
        assert info["cpu"]
        sysfs = {}
        for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
            level, kind, size = (open(f"{d}/{k}").read().strip() for k in ("level", "type", "size"))
            if kind != "Instruction":
                sysfs[f"L{level}{'d' if kind == 'Data' else ''}"] = size
        if sysfs:
            assert info["caches"] == sysfs
        assert "L3" in info["caches"] or not sysfs
    assert info["cpu"] in bench.describe_cpu(info) or info["cpu"] is None


def _fake_impl(log: list, tag: str, passes) -> bench.Impl:
    """An implementation whose calls only record who ran (``tag:pass``), nothing to check."""
    return bench.Impl(calls={p: (lambda p=p: log.append(f"{tag}:{p}")) for p in passes})


@pytest.mark.parametrize("pass_", ["infer+leaky", "train+swish", "backward+renorm"])
def test_a_rows_baseline_follows_what_ours_follows(monkeypatch, pass_):
    """A row with a baseline (ours' plain pass timed in its rounds, ``ours:<pass>``) compares ours with
    it in equal conditions: over the rounds, each runs right after the other as often as right after a
    peer. (The rotation alone ran the baseline after ours in every round and ours after a peer: with
    peers whose threads still spin, infer+leaky / infer read 1.34 on the table where both medians
    were equal.)"""
    base = bench.ours_baseline(pass_).split(":", 1)[1]
    log: list = []
    peers = ["numpy", "plain"]
    monkeypatch.setitem(bench.MAKERS, "ours", lambda s: _fake_impl(log, "ours", (pass_, base)))
    for p in peers:
        monkeypatch.setitem(bench.MAKERS, p, lambda s, p=p: _fake_impl(log, p, (bench.PEER_PASS.get(pass_, pass_),)))
    monkeypatch.setattr(bench.peers, "offers", lambda peer, p: True)

    class Triad:  # the bandwidth samples after the row's rounds
        n = 1

        def sample(self):
            log.append("triad")
            return 1.0

    rounds = 8
    bench.run([SHAPE], peers, rounds=rounds, passes=(pass_,), triad=Triad())
    names = [f"ours:{pass_}", f"ours:{base}"] + [f"{p}:{bench.PEER_PASS.get(pass_, pass_)}" for p in peers]
    # the row: one untimed call of each implementation, the rounds, then the triad's samples
    assert log[: len(names)] == names
    assert log[-bench.harness.TRIAD_SAMPLES :] == ["triad"] * bench.harness.TRIAD_SAMPLES
    assert "triad" not in log[: -bench.harness.TRIAD_SAMPLES]
    body = log[len(names) : -bench.harness.TRIAD_SAMPLES]
    runs = [k for i, k in enumerate(body) if i == 0 or body[i - 1] != k]  # one entry per sample (its calls)
    # a round that ends with the implementation the next one starts with would run it twice in a row
    orders = [bench.harness.round_order(names, r, pair=True) for r in range(rounds)]
    assert len(runs) == rounds * len(names) - sum(a[-1] == b[0] for a, b in zip(orders, orders[1:]))
    ours, mine = f"ours:{pass_}", f"ours:{base}"
    after = {ours: [], mine: []}
    for i, k in enumerate(runs):
        if k in after and i:
            after[k].append(runs[i - 1])
    for k, other in ((ours, mine), (mine, ours)):
        by_ours = sum(p == other for p in after[k])
        by_peer = sum(p.split(":")[0] in peers for p in after[k])
        assert by_ours == by_peer == rounds // 2, (k, after[k])
    assert sum(p == mine for p in after[ours]) == sum(p == ours for p in after[mine]), after


@pytest.mark.parametrize("n_peers", [0, 1, 2, 5])
def test_round_order_of_a_row_with_a_baseline_balances_every_two_rounds(n_peers):
    names = ["ours", "ours:infer"] + [f"p{i}" for i in range(n_peers)]
    seq: list = []
    for rnd in range(6):
        order = bench.harness.round_order(names, rnd, pair=True)
        assert sorted(order) == sorted(names)
        seq += order
        if rnd % 2:  # after every two rounds, round boundaries included
            prev = {n: [seq[i - 1] for i in range(1, len(seq)) if seq[i] == n] for n in names[:2]}
            for me, other in (("ours", "ours:infer"), ("ours:infer", "ours")):
                by_other = prev[me].count(other)
                by_peer = sum(p.startswith("p") for p in prev[me])
                assert by_other == (rnd + 1) // 2, prev
                assert by_peer == ((rnd + 1) // 2 if n_peers else 0), prev


def test_round_order_varies_who_follows_whom():
    names = ["ours", "ours:infer", "a", "b", "c"]
    preds: dict = {n: set() for n in names}
    for rnd in range(2 * len(names)):
        order = bench.harness.round_order(names, rnd)
        assert sorted(order) == sorted(names)
        for prev, n in zip(order, order[1:]):
            preds[n].add(prev)
    assert all(len(p) == 2 for p in preds.values()), preds  # both neighbours of the cyclic list


def test_table_gives_microsecond_passes_four_significant_digits():
    # a 256x32 pass takes ~2.4 us: three decimals of a millisecond (0.002) would hide a 2x difference
    r = bench.Result(shape=(256, 32, 1, 1), pass_="train", bytes_min=12 * 256 * 32, triad_gbs=30.0)
    r.median_ms["ours"], r.q1_ms["ours"], r.q3_ms["ours"] = 0.0023814, 0.0021, 0.00355
    r2 = bench.Result(shape=(64, 64, 112, 112), pass_="train", bytes_min=12, triad_gbs=30.0)
    r2.median_ms["ours"], r2.q1_ms["ours"], r2.q3_ms["ours"] = 218.826, 213.6, 221.04
    rows = bench.format_table([r, r2], []).splitlines()[2:4]
    assert rows[0].split()[2:4] == ["0.002381", "0.0021-0.00355"]
    assert rows[1].split()[2:4] == ["218.8", "213.6-221"]
