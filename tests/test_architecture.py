"""The import graph of darknet_bn points one way: cli -> library -> _capi -> C.

The graph is read from the source of the package under test (ast, relative imports resolved; imports
inside functions count too, as they run when called): no cycles among darknet_bn's modules; argparse
only under darknet_bn/cli/; the compiled ``darknet_bn._dbn`` (cffi ffi/lib) only in darknet_bn/_capi.py;
nothing but the command line (and ``python -m darknet_bn``) imports darknet_bn.cli or the examples;
nothing outside darknet_bn/torch/ imports darknet_bn.torch; ``import darknet_bn`` does not import torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import darknet_bn

ROOT = Path(darknet_bn.__file__).resolve().parent
ENTRY_POINTS = {"darknet_bn.__main__"}  # python -m darknet_bn: runs the command line


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from pkg import sub`` gives pkg.sub when
    pkg.sub is a module of darknet_bn)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out.update(subs)
            # ``from . import sub`` inside a package imports the submodule; the package itself is the
            # importer's own parent, imported implicitly (not an edge)
            if not (len(subs) == len(node.names) and under(name, target)):
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {"darknet_bn._dbn"}
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def internal(g: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if t in g and t != m} for m, ts in g.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.fixture(scope="module")
def g() -> dict[str, set[str]]:
    return graph()


def test_the_graph_reader_sees_the_imports(g):
    # a reader that missed relative imports would pass every rule below: check known edges first
    assert "darknet_bn._capi" in g["darknet_bn.kernels"]  # from ._capi import ...
    assert "darknet_bn._dbn" in g["darknet_bn._capi"]  # from ._dbn import ffi, lib
    assert "darknet_bn.cli.bench" in g["darknet_bn.cli"]  # from .bench import ... (a package)
    assert "darknet_bn.bench" in g["darknet_bn.cli.bench"]  # from .. import bench
    assert "darknet_bn.layer" in g["darknet_bn.bench.peers"]  # from ..layer import Layer
    assert "argparse" in g["darknet_bn.cli.common"]
    assert "torch" in g["darknet_bn.torch._backend"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycles(g):
    assert cycles(internal(g)) == []


def test_argparse_only_under_cli(g):
    bad = sorted(m for m, ts in g.items() if "argparse" in ts and not under(m, "darknet_bn.cli"))
    assert bad == []


def test_only_capi_touches_the_compiled_library(g):
    bad = sorted(m for m, ts in g.items() if "darknet_bn._dbn" in ts and m != "darknet_bn._capi")
    assert bad == []


def test_nothing_below_the_command_line_imports_it(g):
    for package in ("darknet_bn.cli", "darknet_bn.examples"):
        bad = sorted(
            m
            for m, ts in g.items()
            if any(under(t, package) for t in ts)
            and not under(m, "darknet_bn.cli")
            and not under(m, package)
            and m not in ENTRY_POINTS
        )
        assert bad == [], package


def test_the_library_does_not_import_the_torch_face(g):
    bad = sorted(
        m for m, ts in g.items() if any(under(t, "darknet_bn.torch") for t in ts) and not under(m, "darknet_bn.torch")
    )
    assert bad == []


def test_import_darknet_bn_does_not_import_torch_or_the_cli(tmp_path):
    prefixes = ("torch", "darknet_bn.cli", "darknet_bn.examples", "darknet_bn.torch", "darknet_bn.bench")
    code = (
        f"import sys, darknet_bn; print(sorted(m for m in sys.modules if m in {prefixes!r} "
        f"or m.startswith(tuple(p + '.' for p in {prefixes!r}))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
