"""The "torch" flavor against torch.nn.functional.batch_norm (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SHAPES, assert_close, make_data

from darknet_bn import make_batchnorm_layer

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'darknet_bn[torch]')")


def _torch_run(x, dy, scales, biases, rm, rv, train):
    def t(a):
        return torch.tensor(np.asarray(a, np.float64))

    xt = t(x).requires_grad_(True)
    w, b = t(scales).requires_grad_(True), t(biases).requires_grad_(True)
    rmt, rvt = t(rm), t(rv)
    y = torch.nn.functional.batch_norm(xt, rmt, rvt, w, b, training=train, momentum=0.1, eps=1e-5)
    # Darknet's delta is the negative gradient: loss = -sum(delta * y)
    (-(t(dy) * y).sum()).backward()
    return dict(
        output=y.detach().numpy(),
        rolling_mean=rmt.numpy(),
        rolling_variance=rvt.numpy(),
        dx=-xt.grad.numpy(),
        dscale=-w.grad.numpy(),
        dbias=-b.grad.numpy(),
    )


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] * s[2] * s[3] > 1])
@pytest.mark.parametrize("train", [True, False])
def test_torch_flavor_matches_pytorch(shape, train):
    b, c, h, w = shape
    rng = np.random.default_rng(31)
    x = make_data(shape, 30)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make_batchnorm_layer(b, w, h, c, flavor="torch")
    layer.scales[:] = rng.uniform(0.5, 1.5, c)
    layer.biases[:] = rng.standard_normal(c)
    layer.rolling_mean[:] = rng.standard_normal(c)
    layer.rolling_variance[:] = rng.uniform(0.5, 2, c)
    e = _torch_run(x, dy, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance, train)
    layer.forward(x, train=train)
    layer.delta[:] = dy
    dx = layer.backward()
    assert_close(layer.output, e["output"], name="output")
    assert_close(layer.rolling_mean, e["rolling_mean"], name="running_mean")
    assert_close(layer.rolling_variance, e["rolling_variance"], name="running_var")
    # the input grad's terms are of size |dy| * scale / sigma; they cancel to ~0 when N = 2
    sigma = np.sqrt(x.astype(np.float64).var(axis=(0, 2, 3)) + 1e-5) if train else np.sqrt(e["rolling_variance"] + 1e-5)
    assert_close(dx, e["dx"], scale=np.abs(dy).max() * (layer.scales / sigma).max(), name="input grad")
    gs = np.abs(dy).sum(axis=(0, 2, 3)).max()
    assert_close(layer.scale_updates, e["dscale"], scale=gs, name="weight grad")
    assert_close(layer.bias_updates, e["dbias"], scale=gs, name="bias grad")


def test_torch_flavor_matches_pytorch_float32_module():
    """The same through torch's own float32 BatchNorm2d module, as users run it."""
    shape = (8, 16, 12, 12)
    x = make_data(shape, 40)
    bn = torch.nn.BatchNorm2d(16)
    layer = make_batchnorm_layer(8, 12, 12, 16, flavor="torch")
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = bn(xt)
    g = np.random.default_rng(41).standard_normal(shape).astype(np.float32)
    y.backward(-torch.from_numpy(g))
    layer.forward(x)
    layer.delta[:] = g
    dx = layer.backward()
    assert_close(layer.output, y.detach().numpy(), name="output")
    assert_close(layer.rolling_mean, bn.running_mean.numpy(), name="running_mean")
    assert_close(layer.rolling_variance, bn.running_var.numpy(), name="running_var")
    assert_close(dx, -xt.grad.numpy(), name="input grad")
    assert_close(layer.scale_updates, -bn.weight.grad.numpy(), name="weight grad")
    assert_close(layer.bias_updates, -bn.bias.grad.numpy(), name="bias grad")
