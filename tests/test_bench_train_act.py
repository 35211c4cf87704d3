"""darknet_bn.bench's +ACT rows (``--activation NAME``): train+ACT and backward+ACT time what they name
(the backward after a training forward with the activation, from the activation output's delta), each
peer computes BN then the activation (checked against a float64 reference written from the math here:
the activations of tests/reference.py, their derivatives by central differences in float64), and the
summary's ratios are the ones the medians give."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, skip_unless_usable
from reference import act64

import darknet_bn
from darknet_bn import Layer, bench, kernels
from darknet_bn.bench.harness import Result
from darknet_bn.flavors import get_flavor

SHAPE = (4, 3, 5, 6)
EPS = 1e-5
ACTS = ["leaky", "swish", "mish"]


def _dact64(name: str, v: np.ndarray) -> np.ndarray:
    """The activation's derivative at v, by a central difference of act64 in float64 (error ~1e-10;
    the kinks of the piecewise kinds are hit with probability 0 by the uniform data)."""
    h = 1e-5
    return (act64(name, v + h) - act64(name, v - h)) / (2 * h)


def _reference64(s: bench.Setup, act: str, gamma=None, beta=None) -> dict:
    """BN (PyTorch's training math, eps 1e-5) then ``act``, in float64: the training forward's output,
    and the gradient w.r.t. x of the activation's output delta dy by the chain rule (dy times the
    activation's derivative at the pre-activation, then BN's training backward)."""
    x, dy = s.x.astype(np.float64), s.dy.astype(np.float64)
    col = lambda v: np.asarray(v, np.float64).reshape(1, -1, 1, 1)  # noqa: E731
    g = col(s.gamma if gamma is None else gamma)
    b = col(s.beta if beta is None else beta)
    ax = (0, 2, 3)
    m, v = x.mean(axis=ax, keepdims=True), x.var(axis=ax, keepdims=True)
    xhat = (x - m) / np.sqrt(v + EPS)
    pre = xhat * g + b
    gp = dy * _dact64(act, pre) * g
    dx = (gp - gp.mean(axis=ax, keepdims=True) - xhat * (gp * xhat).mean(axis=ax, keepdims=True)) / np.sqrt(v + EPS)
    return {f"train+{act}": act64(act, pre), f"backward+{act}": dx}


def _setup(act: str, shape=SHAPE, passes=None) -> bench.Setup:
    x, dy = bench.make_data(shape)
    return bench.Setup(
        shape,
        get_flavor("torch"),
        x,
        dy,
        *bench.make_params(shape[1]),
        threads=kernels.get_num_threads(),
        passes=bench.act_passes(act) if passes is None else passes,
    )


def test_act_pass_names():
    assert bench.act_passes() == ("train+leaky", "backward+leaky")
    assert bench.act_passes("swish") == ("train+swish", "backward+swish")
    assert bench.split_act_pass("backward+mish") == ("backward", "mish")
    for p in ("train", "infer+leaky", "train+renorm", "backward+renorm", "train+nope"):
        assert bench.split_act_pass(p) is None
    assert bench.ours_baseline("train+swish") == "ours:train"
    assert bench.ours_baseline("backward+swish") == "ours:backward"
    assert bench.ours_baseline("infer+leaky") == "ours:infer" and bench.ours_baseline("train") is None
    assert bench.bytes_per_element("train+leaky") == 12 and bench.bytes_per_element("backward+leaky") == 20
    with pytest.raises(ValueError, match="expected one of linear, leaky"):
        bench.act_passes("swiss")
    # the peers of the rows: torch where it has the activation, darknet only in them
    assert bench.offers("torch", "train+swish") and not bench.offers("torch", "train+hard_mish")
    assert bench.offers("darknet", "backward+mish") and not bench.offers("darknet", "train")
    assert bench.offers("plain", "backward+leaky") and bench.offers("jax", "train+leaky")
    assert not bench.offers("jax", "backward+hard_mish") and not bench.offers("torch-out", "train+leaky")
    assert not bench.offers("ort", "train+leaky") and not bench.offers("openvino", "backward+leaky")


@pytest.mark.parametrize("act", list(darknet_bn.ACTIVATIONS))
def test_ours_reference_matches_the_math(act):
    s = _setup(act)
    ref = bench.reference_outputs(s, s.passes)
    for p, want in _reference64(s, act).items():
        got, top = ref[p]
        assert_close(got, want, rtol=2e-5, name=p)
        assert top == pytest.approx(float(np.abs(got).max()))


# torch's and jax's selu have its exact constants (Darknet's are rounded: 4e-5 apart, within the bench's
# check but not within float32 rounding of the reference); hard_mish: neither has it
TORCH_ACTS = [a for a in bench.TORCH_ACTIVATIONS if a != "selu"]
assert set(bench.peers.JAX_ACTIVATIONS) == set(bench.TORCH_ACTIVATIONS)


@pytest.mark.parametrize(
    "peer, act",
    [(p, a) for p in ("torch", "jax") for a in TORCH_ACTS] + [("darknet", a) for a in darknet_bn.ACTIVATIONS],
)
def test_each_act_peer_computes_bn_then_the_activation(peer, act):
    """The +ACT rows' checked peers give the float64 reference's numbers, for both passes."""
    skip_unless_usable(peer)
    s = _setup(act)
    impl = bench.MAKERS[peer](s)
    assert set(s.passes) <= set(impl.calls) and set(s.passes) <= set(impl.outputs)
    if peer == "darknet":
        assert set(impl.calls) == set(s.passes)  # the +ACT rows only
    for p, want in _reference64(s, act).items():
        assert_close(impl.outputs[p](), want, rtol=2e-5, name=f"{peer} {p}")


@pytest.mark.parametrize("act", ["leaky", "swish"])
def test_plain_act_rows_are_darknets_passes(act):
    """plain (the bench's flavor, scales 1, biases 0): the training forward then Darknet's activation,
    and its backward from the activation output's delta, on the plain kernels."""
    s = _setup(act)
    impl = bench.MAKERS["plain"](s)
    c = s.shape[1]
    want = _reference64(s, act, gamma=np.ones(c), beta=np.zeros(c))
    tr, bw = s.passes
    assert_close(impl.calls[tr](), want[tr], rtol=2e-5, name=f"plain {tr}")
    impl.prepare[bw]()
    impl.reset[bw]()
    assert_close(impl.calls[bw](), want[bw], rtol=2e-5, name=f"plain {bw}")


class _SpyLayer(Layer):
    """A Layer that records, for every backward, the mode and activation of that layer's last forward."""

    log: list = []

    def forward(self, input, train=True, activation=None):
        self.last = (bool(train), activation)
        return super().forward(input, train, activation)

    def backward(self, net_delta=None):
        _SpyLayer.log.append((id(self), *self.last))
        return super().backward(net_delta)


def test_backward_act_row_follows_a_train_act_forward(monkeypatch):
    """The timed backward+leaky follows a training forward with leaky (a backward after a plain or an
    inference forward would skip the activation's derivative, or the batch statistics' deltas); the
    ours:backward timed in its rounds follows a plain training forward, on another layer."""
    _SpyLayer.log = []
    monkeypatch.setattr(bench.peers, "Layer", _SpyLayer)
    passes = bench.PASSES + bench.act_passes("leaky")
    results = bench.run([SHAPE], [], rounds=2, passes=passes)
    assert [r.pass_ for r in results] == list(passes)
    row = results[-1]
    assert set(row.median_ms) == {"ours", "ours:backward"}
    assert set(results[-2].median_ms) == {"ours", "ours:train"}
    calls = _SpyLayer.log
    assert all(train for _, train, _ in calls), "a backward ran after an inference forward"
    by_layer: dict = {}
    for ident, _, act in calls:
        by_layer.setdefault(ident, set()).add(act)
    assert sorted(map(sorted, by_layer.values()), key=str) == sorted([["leaky"], [None]], key=str), by_layer


def test_backward_act_delta_is_restored_before_each_sample(monkeypatch):
    """Each sample of backward+ACT starts from the same delta (an in-place backward through leaky's
    derivative would otherwise shrink it call after call), and so does the row's first untimed call."""
    real = bench.MAKERS["ours"]
    seen = []

    def counting(s):
        impl = real(s)
        f = impl.reset["backward+leaky"]
        impl.reset["backward+leaky"] = lambda: (seen.append(1), f())
        return impl

    monkeypatch.setitem(bench.MAKERS, "ours", counting)
    results = bench.run([SHAPE], [], rounds=3, passes=bench.act_passes("leaky"))
    assert results[1].rounds == 3 and len(seen) == 1 + 3


def test_run_times_the_act_peers(monkeypatch):
    peers = ["plain", "darknet"] + (["torch"] if bench.available("torch") else [])
    passes = ("train",) + bench.act_passes("swish")
    results = {r.pass_: r for r in bench.run([SHAPE], peers, rounds=2, passes=passes)}
    for p in bench.act_passes("swish"):
        r = results[p]
        assert set(peers) <= set(r.median_ms), r.not_timed
        for peer in set(peers) - {"plain"}:  # plain follows the bench's flavor: not checked
            assert r.check_error[peer] < 1e-5
        assert r.as_dict()["over_baseline"] == pytest.approx(r.ours_ms / r.median_ms[bench.ours_baseline(p)])
        assert r.bytes_min == bench.bytes_per_element(p) * np.prod(SHAPE)
    assert results["train"].not_timed["darknet"] == "does not offer this pass"
    text = bench.format_table(list(results.values()), peers)
    assert "swish fused in training" in text and "targets: fused fwd+bwd / plain fwd+bwd <= 1.1" in text
    assert "darknet does not offer: train" in text


def _result(shape, pass_, **ms) -> Result:
    r = Result(shape=shape, pass_=pass_, bytes_min=1)
    r.median_ms = {k.replace("_", ":", 1) if k.startswith("ours_") else k: v for k, v in ms.items()}
    return r


def test_activation_summary_ratios():
    """The summary's ratios, from medians chosen by hand: costs, fwd+bwd sums, targets met."""
    a, b = (2, 3, 4, 5), (8, 16, 1, 1)
    results = [
        _result(a, "train+leaky", ours=1.25, ours_train=1.0, darknet=2.0, torch=3.0),
        _result(a, "backward+leaky", ours=2.5, ours_backward=2.0, darknet=3.0),  # torch: not timed here
        _result(b, "train+leaky", ours=1.0, ours_train=0.5, darknet=1.0),
        _result(b, "backward+leaky", ours=1.0, ours_backward=1.5, darknet=2.0),
        _result(b, "train", ours=0.5),
    ]
    s = bench.activation_summary(results)
    assert list(s) == ["leaky"]
    pa, pb = s["leaky"]["per_shape"]
    assert pa["shape"] == list(a) and pb["shape"] == list(b)
    assert pa["train_cost"] == pytest.approx(1.25) and pa["backward_cost"] == pytest.approx(1.25)
    assert pa["fused_over_plain"] == pytest.approx(1.25) and pa["fused_ms"] == pytest.approx(3.75)
    assert pa["peer_over_fused"] == pytest.approx({"darknet": 5.0 / 3.75})  # torch is in one row only
    assert pb["train_cost"] == pytest.approx(2.0) and pb["backward_cost"] == pytest.approx(2 / 3)
    assert pb["fused_over_plain"] == pytest.approx(1.0) and pb["peer_over_fused"]["darknet"] == pytest.approx(1.5)
    geo = s["leaky"]["geomean"]
    assert geo["train_cost"] == pytest.approx((1.25 * 2.0) ** 0.5)
    assert geo["fused_over_plain"] == pytest.approx(1.25**0.5)
    assert geo["peer_over_fused"]["darknet"] == pytest.approx((5.0 / 3.75 * 1.5) ** 0.5)
    t = s["leaky"]["targets"]["fused_over_plain"]
    assert (t["max"], t["worst"], t["worst_shape"], t["shapes_met"], t["shapes"]) == (1.1, 1.25, list(a), 1, 2)
    t = s["leaky"]["targets"]["separate_over_fused"]
    assert (t["peer"], t["min"], t["shapes_met"], t["shapes"]) == ("darknet", 1.5, 1, 2)
    assert t["worst"] == pytest.approx(5.0 / 3.75) and t["worst_shape"] == list(a)
    lines = bench.format_activation_summary(results, ["darknet", "torch"])
    assert any(line.split() == ["2x3x4x5", "1.25", "1.25", "1.25", "1.33"] for line in lines), lines
    assert "met on 1 of 2 shapes" in lines[-1] and "separate passes (darknet)" in lines[-1]
    assert bench.activation_summary(results[-1:]) == {} and bench.format_activation_summary(results[-1:], []) == []
