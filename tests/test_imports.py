"""The import graph of promptlearn stays acyclic, function-level (lazy) imports included.

Imports under `if TYPE_CHECKING:` are left out: they never run, so a cycle through them costs nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (source folder, the package it installs as): optimizers/ is installed as promptlearn.optimizers
PACKAGES = ((REPO / "promptlearn", "promptlearn"), (REPO / "optimizers", "promptlearn.optimizers"))


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES:
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those under `if TYPE_CHECKING:`."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


def import_graph() -> dict[str, set[str]]:
    """The graph, built in a fresh interpreter: CPython 3.11's ast.parse can raise "AST constructor recursion
    depth mismatch" in a process where an earlier test hit a RecursionError (the fuzz tests nest YAML deeply)."""
    import json

    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_imports as t; " \
           "print(json.dumps({k: sorted(v) for k, v in t.build_import_graph().items()}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    return {k: set(v) for k, v in json.loads(out.stdout).items()}


def build_import_graph() -> dict[str, set[str]]:
    """module -> the promptlearn modules it imports anywhere in its body (`from pkg import mod` counts as mod)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_sees_lazy_and_package_relative_imports():
    graph = import_graph()
    assert "promptlearn.checks.ifeval_rules" in graph["promptlearn.checks.ifeval"]  # from promptlearn.checks import x
    assert "promptlearn.checks.assertions" in graph["promptlearn.checks.build"]  # inside a function
    assert "promptlearn.local" in graph["promptlearn.lm"]  # inside a function
    assert "promptlearn.lm" not in graph["promptlearn.checks.base"]  # only under TYPE_CHECKING


def test_no_import_cycles():
    graph = import_graph()
    for a, b in [("promptlearn.checks.base", "promptlearn.checks.assertions"),
                 ("promptlearn.local", "promptlearn.guidance"), ("promptlearn.task", "promptlearn.importers")]:
        assert not (b in graph[a] and a in graph[b]), f"{a} and {b} import each other again"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_help_imports_no_heavy_package():
    code = ("import sys, promptlearn.cli; heavy = {'litellm', 'llama_cpp', 'dspy', 'optuna', 'numpy'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
