"""The model library's layout, read from its sources: modules import each other without a
cycle (not even inside a function), nothing from the package's other layers, and each
file stays short."""

from __future__ import annotations

import ast
from pathlib import Path

import sharpeye_ros.model

PACKAGE = "sharpeye_ros.model"
ROOT = Path(sharpeye_ros.model.__file__).parent
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every sharpeye_ros module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the submodule when there is one
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "sharpeye_ros")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in sorted(ROOT.rglob("*.py"))}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_model_modules_import_each_other_without_a_cycle():
    graph = _graph()
    assert len(graph) > 10 and "sharpeye_ros.model.sharpeyes" in graph
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_model_imports_nothing_from_the_other_layers():
    outside = {path.name: sorted(m for m in _imports(path) if not m.startswith(PACKAGE))
               for path in ROOT.rglob("*.py")}
    assert {name: found for name, found in outside.items() if found} == {}


def test_no_model_file_is_long():
    lengths = {path.name: len(path.read_text().splitlines()) for path in ROOT.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
