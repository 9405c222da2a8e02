"""The package's shape, read from its source with ``ast``: no import cycle (function-level imports included), the
import rule between layers, and the size limits a reader can hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "faceattr_batch"
MAX_MODULE_LINES = 450
MAX_CLI_LINES = 500
MAX_FUNCTION_LINES = 90


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its body (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    # a module's own package __init__ is not an edge worth reporting (``from faceattr_batch import __version__``)
    return found - {"faceattr_batch"}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_the_package_modules():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "faceattr_batch.errors", GRAPH["faceattr_batch.errors"] | {"faceattr_batch.cli"})
    assert _cycle() is not None


# only the command shell (cli, cli_train) reaches the pipelines: cli -> pipelines -> {engines, data, models, io, ...}
PIPELINE_CALLERS = {
    "faceattr_batch.cli", "faceattr_batch.cli_train", "faceattr_batch.summaries", "faceattr_batch.__main__"
}  # fmt: skip


def test_no_pipeline_imports_another_and_no_lower_layer_imports_a_pipeline():
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.startswith("faceattr_batch.pipelines.") and name not in PIPELINE_CALLERS
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_function_sizes(name: str):
    source = MODULES[name].read_text()
    limit = MAX_CLI_LINES if name == "faceattr_batch.cli" else MAX_MODULE_LINES
    assert len(source.splitlines()) <= limit, f"{name}: {len(source.splitlines())} lines (limit {limit})"
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
