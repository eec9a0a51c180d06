"""The audit chain: intact chains verify; any edit, insertion or deletion is named."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from node.schema import open_database
from node.storage import audit


@pytest.fixture
def engine(database: str) -> Engine:
    engine = open_database(database)  # SQLite and PostgreSQL
    for i in range(5):
        with engine.begin() as conn:
            audit.append(conn, "instance-stored", sop_instance_uid=f"1.2.{i}", details={"n": i})
    return engine


def tamper(engine: Engine, sql: str) -> None:
    # What someone with raw write access to the database file can do.
    with engine.begin() as conn:
        on = " ON audit_log" if engine.dialect.name == "postgresql" else ""
        conn.exec_driver_sql(f"DROP TRIGGER audit_no_update{on}")
        conn.exec_driver_sql(f"DROP TRIGGER audit_no_delete{on}")
        conn.exec_driver_sql(sql)


def test_intact_chain_verifies(engine: Engine) -> None:
    report = audit.verify_chain(engine)
    assert report.ok
    assert report.count == 5
    assert report.head == audit.records(engine)[-1].hash


def test_database_refuses_edits(engine: Engine) -> None:
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET event = 'x' WHERE seq = 2"))
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    assert audit.verify_chain(engine).count == 5


def test_edited_record_is_named(engine: Engine) -> None:
    tamper(engine, """UPDATE audit_log SET details = '{"n":99}' WHERE seq = 3""")
    report = audit.verify_chain(engine)
    assert report.broken_seq == 3
    assert "content" in (report.reason or "")


def test_deleted_record_is_named(engine: Engine) -> None:
    tamper(engine, "DELETE FROM audit_log WHERE seq = 2")
    assert audit.verify_chain(engine).broken_seq == 3


def test_rehashed_record_breaks_the_next_link(engine: Engine) -> None:
    records = audit.records(engine)
    forged = records[1]
    new_hash = audit.record_hash(
        forged.seq, forged.recorded_at, "forged", None, None, {}, forged.prev_hash
    )
    tamper(
        engine,
        f"UPDATE audit_log SET event='forged', sop_instance_uid=NULL, details='{{}}', "
        f"hash='{new_hash}' WHERE seq = 2",
    )
    report = audit.verify_chain(engine)
    assert report.broken_seq == 3
    assert "link" in (report.reason or "")


def test_append_many_continues_the_chain(engine: Engine) -> None:
    before = audit.verify_chain(engine).count
    with engine.begin() as conn:
        audit.append_many(
            conn,
            [audit.Entry("instance-sent", "1.2", f"1.2.{n}", {"status": 0}) for n in range(3)],
        )
        audit.append(conn, "transfer-completed", study_uid="1.2")
    report = audit.verify_chain(engine)
    assert report.ok and report.count == before + 4
    records = audit.records(engine)
    assert [r.sop_instance_uid for r in records[-4:-1]] == ["1.2.0", "1.2.1", "1.2.2"]
