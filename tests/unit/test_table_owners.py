"""Each table of the index has one owner package; no other package touches it.

The owner reads and writes its tables and gives others the answers they need as
functions (node.mpps: which study, which state; node.storage.audit: the arrivals since a
record). This walks the source of node/ with ast: it finds every ``Table(...)``
definition, checks the table -> owner map, then fails on any module outside the owner
that imports a table object, names one as an attribute of its defining module, or
spells the table in SQL text (upper-case keywords, as the node writes them).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node"

OWNERS = {
    "patients": "node.storage",
    "studies": "node.storage",
    "series": "node.storage",
    "instances": "node.storage",
    "duplicates": "node.storage",
    "audit_log": "node.storage",
    "mpps": "node.mpps",
    "mpps_expected": "node.mpps",
    "acquisitions": "node.mpps",
    "transfers": "node.transfer",
    "transfer_items": "node.transfer",
    "received_manifests": "node.signed_manifests",
    "manifest_references": "node.signed_manifests",
}


@dataclass(frozen=True)
class Defined:
    module: str
    name: str  # the Python name bound to the Table
    table: str  # the SQL name


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(NODE.rglob("*.py"))}


def definitions(trees: dict[str, ast.Module]) -> list[Defined]:
    found = []
    for module, tree in trees.items():
        for stmt in tree.body:
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
                continue
            call = stmt.value
            if isinstance(call.func, ast.Name) and call.func.id == "Table" and call.args:
                first = call.args[0]
                assert isinstance(first, ast.Constant), f"{module}: table name not literal"
                for target in stmt.targets:
                    assert isinstance(target, ast.Name)
                    found.append(Defined(module, target.id, str(first.value)))
    return found


def owner_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def touches(module: str, tree: ast.Module, defined: list[Defined]) -> set[str]:
    """The tables ``module`` imports, names through its defining module, or spells in SQL."""
    by_module: dict[str, dict[str, str]] = {}
    for d in defined:
        by_module.setdefault(d.module, {})[d.name] = d.table
    touched, aliases = _imports(tree, by_module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            tables = by_module.get(aliases.get(base, base), {})
            if node.attr in tables:
                touched.add(tables[node.attr])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            touched.update(_in_sql(node.value))
    return touched


def _imports(
    tree: ast.Module, by_module: dict[str, dict[str, str]]
) -> tuple[set[str], dict[str, str]]:
    """Tables imported by name, and local names bound to a table-defining module."""
    touched: set[str] = set()
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            tables = by_module.get(node.module, {})
            touched.update(tables[a.name] for a in node.names if a.name in tables)
            for alias in node.names:
                if f"{node.module}.{alias.name}" in by_module:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in by_module:
                    aliases[alias.asname or alias.name] = alias.name
    return touched, aliases


def _in_sql(text: str) -> set[str]:
    return {
        table for table in OWNERS if re.search(rf"\b(FROM|JOIN|INTO|UPDATE|ON)\s+{table}\b", text)
    }


TREES = sources()
DEFINED = definitions(TREES)


def test_every_table_is_defined_once_in_its_owner_package() -> None:
    assert sorted(d.table for d in DEFINED) == sorted(OWNERS)
    assert {d.table: owner_of(d.module) for d in DEFINED} == OWNERS


def test_every_owner_table_is_on_the_one_metadata() -> None:
    import node.schema  # registers every owner's tables

    assert set(node.schema.metadata.tables) == set(OWNERS)


@pytest.mark.parametrize("module", sorted(TREES))
def test_no_module_touches_a_table_of_another_owner(module: str) -> None:
    if module == "node.schema":
        return  # imports the owners' table modules to register them, names no table
    foreign = {t for t in touches(module, TREES[module], DEFINED) if OWNERS[t] != owner_of(module)}
    assert foreign == set(), f"{module} touches {sorted(foreign)}"


def test_the_check_sees_each_kind_of_reference() -> None:
    """The walker itself: a direct import, a module attribute, raw SQL."""
    cases = {
        "from node.mpps.tables import mpps": {"mpps"},
        "from node.mpps import tables\ntables.acquisitions.c.state": {"acquisitions"},
        "import node.transfer.tables as t\nt.transfers": {"transfers"},
        "from node.storage import database\ndatabase.audit_log": {"audit_log"},
        "q = 'SELECT seq FROM audit_log WHERE seq > 1'": {"audit_log"},
        "from node.storage.database import metadata, open_database": set(),
    }
    for source, expected in cases.items():
        assert touches("node.elsewhere", ast.parse(source), DEFINED) == expected, source
