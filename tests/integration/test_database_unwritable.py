"""The index database refuses writes: C-STORE answers 0xA700, C-ECHO goes on, and the node
recovers by itself, with the association records it could not write appended late."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event

from node.app import Node
from node.config import NodeConfig
from node.storage import audit
from tests.helpers import ct_dataset
from tests.integration.scu import association, store_status

OUT_OF_RESOURCES = 0xA700


class Unwritable:
    """Makes the node's SQLite connections read-only (SQLITE_READONLY on any write) or not.

    A real SQLite condition, set on every connection as it leaves the pool, so it holds
    for the node's own transactions whichever code path opens them (root ignores file
    modes, so a read-only file would not stop the test's process).
    """

    def __init__(self, node: Node) -> None:
        self.on = False
        self.engine = node.archive.engine
        event.listen(self.engine.pool, "checkout", self._checkout)

    def _checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.execute(f"PRAGMA query_only={int(self.on)}")

    def remove(self) -> None:
        event.remove(self.engine.pool, "checkout", self._checkout)


class Lines(logging.Handler):
    """The node's log records, for the one-line-per-failure checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def matching(self, name: str, level: int) -> list[str]:
        with self._lock:
            return [r.getMessage() for r in self.records if r.name == name and r.levelno == level]

    def tracebacks(self) -> list[str]:
        with self._lock:
            return [r.getMessage() for r in self.records if r.exc_info]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("node")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom"])
def test_store_answers_out_of_resources_echo_works_and_node_recovers(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    lines: Lines,
) -> None:
    node = start_node(make_config(node={"fast_path": fast_path}))
    db = Unwritable(node)
    try:
        with association(node.port, "BEFORE") as assoc:
            assert store_status(assoc, ct_dataset(seed=1)) == 0
        before = len(audit.records(node.archive.engine))

        db.on = True
        refused = ct_dataset(seed=2)
        with association(node.port, "WHILE_FULL") as assoc:
            assert assoc.send_c_echo().Status == 0
            assert store_status(assoc, refused) == OUT_OF_RESOURCES
            assert store_status(assoc, ct_dataset(seed=3)) == OUT_OF_RESOURCES
            assert assoc.send_c_echo().Status == 0
        with association(node.port, "ECHO_ONLY") as assoc:
            assert assoc.send_c_echo().Status == 0
        assert node.registry.custody.pending >= 2  # two association-accepted records
        assert (
            not (node.config.storage.archive / "1.2.826.0.1.3680043.8.498.1")
            .joinpath("1.2.826.0.1.3680043.8.498.1.1", f"{refused.SOPInstanceUID}.dcm")
            .exists()
        )

        db.on = False  # space returns: no restart, no command
        with association(node.port, "AFTER") as assoc:
            assert store_status(assoc, refused) == 0
        assert node.registry.custody.pending == 0
    finally:
        db.remove()

    records = audit.records(node.archive.engine)
    assert audit.verify_chain(node.archive.engine).ok
    late = [r for r in records[before:] if r.details.get("late")]
    callers = {r.details.get("calling_ae") for r in late}
    assert {"WHILE_FULL", "ECHO_ONLY"} <= callers
    assert all(
        r.event == audit.AuditEvent.ASSOCIATION_ACCEPTED
        for r in late
        if r.details.get("calling_ae") == "ECHO_ONLY"
    )
    assert any(
        r.details.get("calling_ae") == "AFTER" and not r.details.get("late") for r in records
    )
    assert lines.tracebacks() == []
    # One line per failed C-STORE, one when audit records start to wait, one at recovery.
    assert len(lines.matching("node.store", logging.WARNING)) == 2
    assert len(lines.matching("node.audit", logging.WARNING)) == 1
    assert len(lines.matching("node.audit", logging.INFO)) == 1
