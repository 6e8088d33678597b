"""Architecture (issue #14): the import graph of eigjax's modules has no cycle, and the
library (everything but eigjax.app) never imports the application or its dependencies.

The graph is read from the AST of every module, so function-local (delayed) imports count.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "eigjax"
APP_ONLY = ("optax", "yaml", "tqdm", "matplotlib")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules=()) -> set[str]:
    """Absolute names of the modules (or packages) that ``name`` imports, at any depth.

    ``from M import x`` imports the submodule ``M.x`` where ``modules`` has one, else
    ``M`` itself. The parents that Python imports before a submodule are not edges: every
    ``eigjax._x`` imports ``eigjax/__init__`` first, which is not a cycle of the code.
    """
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in modules else mod)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in _imports(name, path, mods):
            # the module itself if it is one of ours, else its nearest enclosing package of ours
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _find_cycle(graph: dict[str, set[str]], skip=lambda m: False) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None. An import of a package
    imports its ``__init__``, which the graph holds under the package's name."""
    white, grey, black = 0, 1, 2
    color = {m: white for m in graph}
    stack: list[str] = []

    def visit(m):
        color[m] = grey
        stack.append(m)
        for d in sorted(graph[m]):
            if skip(d):
                continue
            if color[d] == grey:
                return stack[stack.index(d) :] + [d]
            if color[d] == white:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[m] = black
        return None

    for m in sorted(graph):
        if color[m] == white and not skip(m):
            found = visit(m)
            if found:
                return found
    return None


def _is_app(m: str) -> bool:
    return m == "eigjax.app" or m.startswith("eigjax.app.")


def _is_library(m: str) -> bool:
    return not (_is_app(m) or m == "eigjax.__main__" or m.split(".")[1:2] in (["experiments"], ["configs"]))


def test_graph_sees_local_imports():
    """The reader itself: relative, package and function-local imports resolve."""
    graph = _graph()
    assert "eigjax._eigh" in graph["eigjax"]
    assert "eigjax._native" in graph["eigjax._small_dispatch"]  # `from . import _native`
    assert "eigjax.app._check" in graph["eigjax.app._cli"]  # a function-local import


def test_library_import_graph_is_acyclic():
    cycle = _find_cycle(_graph(), skip=lambda m: not _is_library(m))
    assert cycle is None, "import cycle among eigjax's library modules: " + " -> ".join(cycle)


def test_import_graph_is_acyclic():
    """Every module under eigjax/, the application's included."""
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle among eigjax's modules: " + " -> ".join(cycle)


def test_library_never_imports_the_application():
    bad = []
    for name, path in _modules().items():
        if not _is_library(name):
            continue
        for imp in _imports(name, path):
            top = imp.split(".")[0]
            if top in APP_ONLY or _is_app(imp):
                bad.append(f"{name} imports {imp}")
    assert not bad, bad


def test_import_eigjax_loads_no_application_dependency():
    code = f"import eigjax, sys; print(sorted(m for m in {APP_ONLY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
