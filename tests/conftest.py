"""Fixtures and pytest hooks only (helpers: helpers.py; references: reference.py). torch (when installed)
is imported before darknet_bn so that both use one OpenMP runtime."""

from __future__ import annotations

import os

import numpy as np
import pytest

try:  # noqa: SIM105
    import torch  # noqa: F401
except ImportError:
    pass

from helpers import ISAS, skip_unless_isa  # noqa: E402

from darknet_bn import kernels  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=ISAS)
def isa(request):
    """Each instruction set in turn, set with darknet_bn.kernels.set_isa (skipped where not available);
    restored to the default after the test."""
    skip_unless_isa(request.param)
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa(None)


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (a tensor of more than 2**31 elements: 8 GiB)",
    )


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
