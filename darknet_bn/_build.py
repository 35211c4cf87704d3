"""The cffi builder of darknet_bn's C kernels (out-of-line API mode).

setup.py names it in ``cffi_modules``; ``pip install .`` compiles ``darknet_bn._dbn`` from ``csrc/``.
The C declarations are read from ``csrc/darknet_bn.h`` (its preprocessor lines dropped), so the
signatures exist once.

Environment switches, read at build time:
- ``DARKNET_BN_OPENMP=0``: build without OpenMP (default: with it, when the compiler supports it).
- ``DARKNET_BN_PORTABLE=1``: plain C only -- the baseline engine, no intrinsics, no AVX2/AVX-512
  engines (what a non-x86 machine builds anyway; CI builds it on x86 to test that path).
- ``DARKNET_BN_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer (``-fsanitize=address,undefined``,
  any report aborts), at ``-O1``. Python must then run with the sanitizer runtime preloaded, e.g.
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 pytest`` (see README, "Reliability").
- ``DARKNET_BN_CFLAGS``: extra compiler flags, appended last.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "darknet_bn.h"
# The build compiles every csrc/*.c; these are the texts they include (headers and the engine template,
# engine.inc, which only the simd_*.c compile): a change to one rebuilds the module.
DEPENDS = sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("*.inc"))

# -ffp-contract=fast lets a*b+c become one FMA where the CPU has it (one rounding instead of two);
# it keeps IEEE semantics (NaN, Inf, subnormals), unlike -ffast-math, which is never used.
BASE_CFLAGS = ["-std=c11", "-O3", "-ffp-contract=fast", "-fno-math-errno", "-fvisibility=hidden", "-Wall", "-Wextra"]


# -O1 (after BASE_CFLAGS' -O3, so it wins), as the sanitizers' documentation recommends: the reports keep
# their line numbers, and the engine's instantiations compile in half the time of -O3 with the sanitizers
# (simd_avx512.c: 359 s against 767 s on a loaded 2-core machine).
SANITIZE_FLAGS = ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def cdef_from_header(text: str) -> str:
    """The header without its preprocessor lines: what cffi's cdef accepts."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _compiles_with(flags: list[str]) -> bool:
    """Whether the C compiler builds and links a small OpenMP program with these flags."""
    code = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "t.c")
        src.write_text(code)
        try:
            r = subprocess.run(
                _compiler() + flags + [str(src), "-o", str(Path(tmp, "t"))], capture_output=True, timeout=120
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return r.returncode == 0


def _openmp_flags() -> list[str]:
    if os.environ.get("DARKNET_BN_OPENMP", "1") == "0":
        return []
    if sys.platform == "darwin":  # Apple clang has no -fopenmp; a libomp install would need more flags
        return []
    return ["-fopenmp"] if _compiles_with(["-fopenmp"]) else []


def _source(name: str) -> str:
    path = CSRC / name
    try:  # setuptools prefers paths relative to the project root (the working directory of a build)
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def make_builder() -> FFI:
    omp = _openmp_flags()
    portable = ["-DDBN_PORTABLE"] if os.environ.get("DARKNET_BN_PORTABLE", "0") == "1" else []
    sanitize = SANITIZE_FLAGS if os.environ.get("DARKNET_BN_SANITIZE", "0") == "1" else []
    cflags = BASE_CFLAGS + omp + portable + sanitize + shlex.split(os.environ.get("DARKNET_BN_CFLAGS", ""))
    builder = FFI()
    builder.cdef(cdef_from_header(HEADER.read_text()))
    builder.set_source(
        "darknet_bn._dbn",
        '#include "darknet_bn.h"',
        sources=[_source(p.name) for p in sorted(CSRC.glob("*.c"))],
        depends=[_source(p.name) for p in DEPENDS],
        include_dirs=[str(CSRC)],
        extra_compile_args=cflags,
        extra_link_args=omp + sanitize,
        libraries=["m"] if sys.platform.startswith("linux") else [],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":  # a development build in place: python darknet_bn/_build.py
    os.chdir(ROOT)
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)
