"""Build hook: compiles darknet_bn._dbn from csrc/ through cffi (metadata lives in pyproject.toml).

The extension uses only CPython's limited API (cffi's default, hence ``_dbn.abi3.so``), so the wheel is
tagged abi3: one wheel serves every CPython from 3.9 on.

The C sources of the one extension are compiled concurrently, one compiler process per CPU
(``DARKNET_BN_BUILD_JOBS=N`` sets the number; 1: one after the other, as setuptools does): the three
engine translation units (simd_base.c, simd_avx2.c, simd_avx512.c, each the whole engine.inc for one
instruction set) take most of the build, about as long each.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from setuptools import setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """``build_ext`` whose compiler turns each source into its object file in a pool of threads (each
    thread waits on its own compiler process); the objects keep the sources' order for the link."""

    def build_extension(self, ext):
        jobs = int(os.environ.get("DARKNET_BN_BUILD_JOBS") or os.cpu_count() or 1)
        compiler = self.compiler
        serial = compiler.compile

        def compile_parallel(sources, *args, **kwargs):
            if jobs <= 1 or len(sources) <= 1:
                return serial(sources, *args, **kwargs)
            with ThreadPoolExecutor(min(jobs, len(sources))) as pool:
                objects = list(pool.map(lambda src: serial([src], *args, **kwargs), sources))
            return [obj for objs in objects for obj in objs]

        compiler.compile = compile_parallel
        try:
            super().build_extension(ext)
        finally:
            del compiler.compile  # the instance attribute; the class's method again


setup(
    cffi_modules=["darknet_bn/_build.py:ffibuilder"],
    cmdclass={"build_ext": ParallelBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
