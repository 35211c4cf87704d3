"""Build hook: compiles darknet_bn._dbn from csrc/ through cffi (metadata lives in pyproject.toml)."""
from setuptools import setup

setup(cffi_modules=["darknet_bn/_build.py:ffibuilder"])
