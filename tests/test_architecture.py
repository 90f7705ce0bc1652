"""Architecture rules checked on the source (AST), not by importing it: host code never
imports the simulator, the library never imports click, and no two modules of ``citycard``
depend on each other (directly or round a longer loop), lazy imports inside functions
included, ``if TYPE_CHECKING:`` imports excluded (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import citycard

PACKAGE = Path(citycard.__file__).resolve().parent
#: host-side packages: they talk to cards through a transport and never need the simulator
HOST_PACKAGES = ("citycard.perso", "citycard.terminal", "citycard.keys", "citycard.transport", "citycard.shell")


def module_files(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``)."""
    root = package_dir.parent
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node that can run (skips ``if TYPE_CHECKING:`` bodies)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(name: str, path: Path, is_pkg: bool) -> set[str]:
    """Absolute dotted names imported by module ``name``: ``import a.b`` gives ``a.b``;
    ``from M import x`` gives ``M`` and ``M.x`` (``x`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        module = node.module or ""
        if node.level:
            module = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
        out.add(module)
        out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it depends on.  ``from M import x`` depends
    on the submodule ``M.x`` when there is one (importing it runs ``M``'s ``__init__`` too,
    but that is a dependency of ``M.x`` on its package, counted only when written), else on
    ``M``; ``import a.b.c`` on the longest module prefix of ``a.b.c``."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps: set[str] = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                module = node.module or ""
                if node.level:
                    module = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target:
                    deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# ------------------------------------------------------------------ the checker itself
def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


def test_checker_finds_cycles_lazy_imports_included(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import f\n",
        "b.py": "def f():\n    from . import a\n",            # lazy: still a dependency loop
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n",
        "d.py": "from .c import Y\n",                          # only a typing import back: no loop
        "e/__init__.py": "from .f import g\n",
        "e/f.py": "from .. import e\n",                       # a submodule importing its package
        "h.py": "from . import e\n",
    })
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"], ["pkg.e", "pkg.e.f"]]


def test_checker_sees_sim_imports_of_every_form(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "", "sim/__init__.py": "", "sim/card.py": "",
        "host1.py": "import pkg.sim.card\n",
        "host2.py": "def f():\n    from .sim import card\n",
        "host3.py": "from .sim.card import X\n",
        "host4.py": "from . import sim\n",
        "clean.py": "from . import host1\n",
    })
    graph = import_graph(pkg)
    assert sorted(m for m, deps in graph.items() if any(_under(d, ("pkg.sim",)) for d in deps)) == \
        ["pkg.host1", "pkg.host2", "pkg.host3", "pkg.host4"]


# ------------------------------------------------------------------ the rules on citycard
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_host_code_never_imports_the_simulator(graph):
    offenders = {m: sorted(d for d in deps if _under(d, ("citycard.sim", "citycard.vpcd")))
                 for m, deps in graph.items() if _under(m, HOST_PACKAGES)}
    assert {m: d for m, d in offenders.items() if d} == {}
    assert "citycard.perso.batch" in graph and "citycard.transport.open" in graph   # the scan saw them


def test_the_library_never_imports_click():
    users = []
    for name, (path, is_pkg) in module_files(PACKAGE).items():
        if _under(name, ("citycard.cli",)):
            continue
        if any(n == "click" or n.startswith("click.") for n in imported_names(name, path, is_pkg)):
            users.append(name)
    assert users == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []
