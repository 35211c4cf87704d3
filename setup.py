"""Build hook: compiles darknet_bn._dbn from csrc/ through cffi (metadata lives in pyproject.toml).

The extension uses only CPython's limited API (cffi's default, hence ``_dbn.abi3.so``), so the wheel is
tagged abi3: one wheel serves every CPython from 3.9 on.
"""

from setuptools import setup

setup(cffi_modules=["darknet_bn/_build.py:ffibuilder"], options={"bdist_wheel": {"py_limited_api": "cp39"}})
