"""The package layout is the architecture: imports go one way, no cycles, small modules.

Read from the source with `ast` (every import, also those inside functions), so a new upward
import or cycle fails here rather than as a confusing partial-import error at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "minillm_jax"
# Layer of each top-level name under minillm_jax: a module may import its own layer and below.
LAYERS = {
    "config": 0, "deps": 0,
    "model": 1, "optim": 1, "data": 1,
    "train": 2,
    "experiments": 3, "export": 3, "main": 3, "sample": 3, "evaluate": 3, "sweep": 3,
}
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 8


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module a dotted import name refers to (an attribute of a package -> the package)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """minillm_jax modules imported anywhere in `path`."""
    found = set()
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("minillm_jax"):
                target = _resolve(name, modules)
                if target != this:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    assert [m for m in _graph() if m != "minillm_jax" and _layer(m) is None] == []


def test_imports_never_go_up_a_layer():
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                    if t != "minillm_jax" and _layer(m) is not None and _layer(t) > _layer(m))
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The rule test above must be able to fail: two modules importing each other are caught."""
    fake = {"minillm_jax.a": {"minillm_jax.b"}, "minillm_jax.b": {"minillm_jax.a"},
            "minillm_jax.c": {"minillm_jax.a"}}
    monkeypatch.setattr(__import__(__name__, fromlist=["_graph"]), "_graph", lambda: fake)
    try:
        test_no_import_cycles()
    except AssertionError as err:
        assert "minillm_jax.a" in str(err) and "minillm_jax.b" in str(err)
    else:
        raise AssertionError("the cycle between a and b was not found")


def test_modules_are_small():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_top_level_stays_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
