"""The house rules of node/ that an import contract cannot see (ARCHITECTURE.md).

The layers themselves are checked by ``lint-imports`` (pyproject's [tool.importlinter]),
which scripts/test.sh runs; these tests hold the rest: small modules, and process-wide
state written only by the composition root.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
MODULES = sorted(NODE.rglob("*.py"))
MAX_LINES = 500
# The composition root: the only modules that may set process-wide state.
COMPOSITION_ROOT = {NODE / "app.py", NODE / "cli" / "main.py"}
GC_SETTERS = {"disable", "enable", "set_threshold", "freeze", "unfreeze", "set_debug"}
ENVIRON_WRITERS = {"setdefault", "update", "pop", "clear", "__setitem__", "__delitem__"}


def _rel(path: Path) -> str:
    return str(path.relative_to(NODE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_rel(path)} has {lines} lines (at most {MAX_LINES})"


def _process_state_writes(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, name = node.func.value, node.func.attr
            if isinstance(owner, ast.Name) and owner.id == "gc" and name in GC_SETTERS:
                found.append(f"line {node.lineno}: gc.{name}()")
            if isinstance(owner, ast.Name) and owner.id == "os" and name in {"putenv", "unsetenv"}:
                found.append(f"line {node.lineno}: os.{name}()")
            if _is_environ(owner) and name in ENVIRON_WRITERS:
                found.append(f"line {node.lineno}: os.environ.{name}()")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript) and _is_environ(target.value):
                found.append(f"line {node.lineno}: os.environ[...] written")
    return found


def _is_environ(expr: ast.expr) -> bool:
    return (
        isinstance(expr, ast.Attribute)
        and expr.attr == "environ"
        and isinstance(expr.value, ast.Name)
        and expr.value.id == "os"
    )


@pytest.mark.parametrize("path", [p for p in MODULES if p not in COMPOSITION_ROOT], ids=_rel)
def test_only_the_composition_root_sets_process_state(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert _process_state_writes(tree) == []


def test_the_check_sees_what_it_forbids() -> None:
    code = "import gc, os\ngc.disable()\nos.environ['X'] = '1'\nos.environ.setdefault('Y', '2')\n"
    assert len(_process_state_writes(ast.parse(code))) == 3
