"""The package as users get it: which darknet_bn the tests import, and one source for the version.

.ci/run builds an sdist, builds the wheel from it, installs the wheel into a fresh virtual environment
and runs this suite from the repository root with DARKNET_BN_EXPECT_INSTALLED=1: the tests must then
exercise the installed wheel, never the source tree beside them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from pathlib import Path

import darknet_bn

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_under_test_is_a_built_one():
    pkg = Path(darknet_bn.__file__).resolve().parent
    compiled = list(pkg.glob("_dbn.*.so")) + list(pkg.glob("_dbn*.pyd"))
    assert compiled, f"{pkg} holds no compiled _dbn module"
    if os.environ.get("DARKNET_BN_EXPECT_INSTALLED") == "1":
        assert pkg != ROOT / "darknet_bn", f"the tests imported the source tree ({pkg}), not the installed wheel"
        assert pkg.is_relative_to(Path(sys.prefix).resolve()), f"{pkg} is not inside this environment ({sys.prefix})"


def test_one_version_source():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text, "the version is not dynamic"
    assert not re.search(r'^version\s*=\s*"', text, re.M), "pyproject.toml states a version of its own"
    assert importlib.metadata.version("darknet_bn") == darknet_bn.__version__


def test_typed_marker_is_installed():
    assert (Path(darknet_bn.__file__).parent / "py.typed").is_file()
