"""Shared test helpers. torch (when installed) is imported before darknet_bn so that both use one
OpenMP runtime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

try:  # noqa: SIM105
    import torch  # noqa: F401
except ImportError:
    pass

DATA = Path(__file__).resolve().parent / "data" / "darknet"

SHAPES = [  # (batch, c, h, w)
    (1, 3, 5, 7),      # batch 1, spatial > 1
    (4, 1, 5, 7),      # one channel
    (16, 8, 1, 1),     # the MLP case: 1x1 spatial, batch > 1
    (3, 5, 7, 11),     # odd and prime sizes
    (2, 13, 17, 19),
    (1, 1, 1, 2),      # the smallest trainable: N = 2
    (256, 32, 1, 1),   # an MLP batch
    (2, 64, 9, 9),
    (5, 3, 31, 37),
]


def assert_close(actual, expected, rtol=1e-5, scale=None, name=""):
    """max |actual - expected| <= rtol * scale, with scale the largest |expected| (or given): an error
    relative to the data's scale, which is what float32 rounding gives."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape or actual.size == expected.size, (name, actual.shape, expected.shape)
    actual = actual.reshape(expected.shape)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    scale = max(scale, np.finfo(np.float32).tiny)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{name}: NaN positions differ"
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * scale {scale:.3g} (rel {err / scale:.3g})"


def make_data(shape, seed, offset=True):
    """float32 NCHW data with a different mean and spread per channel."""
    rng = np.random.default_rng(seed)
    b, c, h, w = shape
    x = rng.standard_normal(shape)
    if offset:
        x = x * rng.uniform(0.5, 3.0, size=(1, c, 1, 1)) + rng.uniform(-2, 2, size=(1, c, 1, 1))
    return x.astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (a tensor of more than 2**31 elements: 8 GiB)")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow are deselected (not skipped) unless --run-slow: .ci/run runs them apart."""
    if config.getoption("--run-slow"):
        return
    keep = [item for item in items if "slow" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if "slow" in item.keywords])
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    """With DARKNET_BN_NO_SKIPS=1 (set by .ci/run) a skipped test fails the run: CI installs every
    optional peer, so a skip there means something is missing."""
    if os.environ.get("DARKNET_BN_NO_SKIPS") == "1" and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped:
            reporter.write_line(f"DARKNET_BN_NO_SKIPS=1: {len(skipped)} test(s) skipped", red=True)
            session.exitstatus = 1
