"""Against the real Darknet: tests/data/darknet/expected/numeric/{pjreddie,alexeyab}/small/, written by
each fork's own forward_batchnorm_layer, backward_batchnorm_layer (and AlexeyAB's
update_batchnorm_layer) on a 4x3x5x7 layer (see tests/data/darknet/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from helpers import DATA, assert_close

from darknet_bn import make_batchnorm_layer

SHAPE = (4, 3, 5, 7)  # batch, c, h, w


def load(fork):
    d = DATA / "expected" / "numeric" / fork / "small"
    files = {p.stem: np.fromfile(p, dtype="<f4") for p in d.glob("*.f32")}
    meta = (d / "meta.txt").read_text()
    assert "shape batch 4 c 3 h 5 w 7" in meta
    return files


def run_layer(fork):
    e = load(fork)
    layer = make_batchnorm_layer(4, 7, 5, 3, flavor=fork)
    layer.scales[:] = e["init_scales"]
    layer.biases[:] = e["init_biases"]
    layer.rolling_mean[:] = e["init_rolling_mean"]
    layer.rolling_variance[:] = e["init_rolling_variance"]
    x = e["input"].reshape(SHAPE)
    got = {}
    layer.forward(x, train=True)
    for k in ("output", "x", "x_norm", "mean", "variance", "rolling_mean", "rolling_variance"):
        got["train_" + k] = getattr(layer, k).copy()
    layer.delta[:] = e["delta_in"].reshape(SHAPE)
    net_delta = np.zeros(SHAPE, np.float32)
    layer.backward(net_delta)
    for k in ("scale_updates", "bias_updates", "mean_delta", "variance_delta"):
        got["bwd_" + k] = getattr(layer, k).copy()
    got["bwd_layer_delta"] = layer.delta.copy()
    got["bwd_input_delta"] = net_delta
    layer.forward(x, train=False)
    got["infer_output"] = layer.output.copy()
    return e, got, layer


# Darknet runs in float32 (built -Ofast); ours accumulates in double: agreement to float32 rounding.
COMPARED = [
    "train_output",
    "train_x",
    "train_x_norm",
    "train_mean",
    "train_variance",
    "train_rolling_mean",
    "train_rolling_variance",
    "bwd_scale_updates",
    "bwd_mean_delta",
    "bwd_variance_delta",
    "bwd_layer_delta",
    "bwd_input_delta",
    "infer_output",
]


@pytest.mark.parametrize("fork", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("key", COMPARED)
def test_matches_darknet(fork, key):
    e, got, _ = run_layer(fork)
    assert_close(got[key], e[key], rtol=1e-5, name=f"{fork} {key}")


def test_bias_updates_pjreddie():
    e, got, _ = run_layer("pjreddie")
    assert_close(got["bwd_bias_updates"], e["bwd_bias_updates"], rtol=1e-5, name="bias_updates")


def test_bias_updates_alexeyab_computed_where_darknet_does_not():
    """AlexeyAB's CPU backward never calls backward_bias (its bias_updates stay 0): we compute them, and
    they equal the sum of the output's delta (what pjreddie's Darknet gives on the same data)."""
    e, got, _ = run_layer("alexeyab")
    assert not e["bwd_bias_updates"].any()
    expect = e["delta_in"].reshape(SHAPE).astype(np.float64).sum(axis=(0, 2, 3))
    assert_close(got["bwd_bias_updates"], expect, rtol=1e-6, name="bias_updates")
    assert_close(got["bwd_bias_updates"], load("pjreddie")["bwd_bias_updates"], rtol=1e-5, name="vs pjreddie")


def test_alexeyab_update():
    """update_batchnorm_layer(batch=4, learning_rate=0.01, momentum=0.9, decay=0.0005)."""
    e, got, layer = run_layer("alexeyab")
    layer.update(0.01, 0.9, 0.0005, 4)
    assert_close(layer.scales, e["upd_scales"], rtol=1e-6, name="scales")
    assert_close(layer.scale_updates, e["upd_scale_updates"], rtol=1e-5, name="scale_updates")
    # Darknet's biases do not move (its bias_updates were 0); ours follow the same rule with ours.
    assert np.array_equal(e["upd_biases"], e["init_biases"])
    eb, ebu = ref.update(
        e["init_scales"], got["bwd_scale_updates"], e["init_biases"], got["bwd_bias_updates"], 0.01, 0.9, 4
    )[2:]
    assert_close(layer.biases, eb, rtol=1e-6, name="biases")
    assert_close(layer.bias_updates, ebu, rtol=1e-6, name="bias_updates")


def test_reference_reproduces_darknet():
    """The float64 reference, flavor by flavor, agrees with Darknet too (so it is a fair judge)."""
    for fork in ("pjreddie", "alexeyab"):
        e = load(fork)
        x = e["input"].reshape(SHAPE)
        f = ref.forward(
            x, e["init_scales"], e["init_biases"], e["init_rolling_mean"], e["init_rolling_variance"], SHAPE, fork
        )
        assert_close(f["output"], e["train_output"], name=f"{fork} output")
        b = ref.backward(
            x, e["delta_in"].reshape(SHAPE), e["init_scales"], e["train_mean"], e["train_variance"], SHAPE, fork
        )
        assert_close(b["delta"], e["bwd_input_delta"], name=f"{fork} delta")
