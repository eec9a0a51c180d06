"""Custody records wait in memory while the database refuses writes, within a bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from node.schema import open_database
from node.services.custody import CustodyRecorder
from node.storage import audit
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.files import FileStore


def test_pending_records_are_appended_in_order_and_overflow_is_a_gap(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'node.sqlite'}")
    archive = Archive(FileStore(tmp_path / "archive", fsync=False), engine)
    read_only = {"on": True}

    def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.execute(f"PRAGMA query_only={int(read_only['on'])}")

    event.listen(engine.pool, "checkout", checkout)
    custody = CustodyRecorder(archive, limit=2)
    for n in range(5):
        assert custody.record(AuditEvent.ASSOCIATION_REJECTED, peer_address=f"10.0.0.{n}") is False
    assert custody.pending == 5
    assert custody.flush() is False

    read_only["on"] = False
    assert custody.record(AuditEvent.ASSOCIATION_ACCEPTED, calling_ae="NOW") is True
    assert custody.pending == 0
    records = audit.records(engine)
    assert [r.event for r in records] == [
        AuditEvent.ASSOCIATION_REJECTED,
        AuditEvent.ASSOCIATION_REJECTED,
        AuditEvent.AUDIT_GAP,
        AuditEvent.ASSOCIATION_ACCEPTED,
    ]
    assert [r.details["peer_address"] for r in records[:2]] == ["10.0.0.0", "10.0.0.1"]
    assert all(r.details["late"] and r.details["occurred_at"] for r in records[:2])
    gap = records[2].details
    assert gap["lost"] == 3 and gap["events"] == {AuditEvent.ASSOCIATION_REJECTED: 3}
    assert gap["first_at"] <= gap["last_at"]
    assert "late" not in records[3].details
    assert audit.verify_chain(engine).ok
    event.remove(engine.pool, "checkout", checkout)
    engine.dispose()
