"""The index database: the one MetaData, the archive and audit tables, and an engine
that works for SQLite and PostgreSQL.

Each table has one owner package, which alone reads and writes it and gives others the
answers they need as functions: the archive hierarchy (patients, studies, series,
instances, duplicates) and the audit log belong to node.storage and are defined here;
node.mpps (``mpps/tables.py``), node.transfer (``transfer/tables.py``) and
node.signed_manifests (``manifests/tables.py``) define theirs on this module's ``metadata``.
Storage sits below those packages, so it cannot import their tables: ``open_database``
creates whatever is registered on ``metadata``, and :mod:`node.schema` (above the
owners) imports every owner's table module first. Open the database through
:func:`node.schema.open_database`.

The schema is SQLAlchemy Core, so a ``postgresql://`` URL (psycopg 3; the plain scheme
is mapped to ``postgresql+psycopg``) can replace the embedded SQLite file. Every
transaction of the node is serialised with every other one on the same database, because
the audit chain reads its last record and inserts the next one (its sequence number is
the primary key), and the MPPS, transfer and manifest bookkeeping read before they write:

- SQLite: each transaction starts with ``BEGIN IMMEDIATE``; the journal is WAL and
  ``synchronous=FULL`` makes each commit durable.
- PostgreSQL: each transaction first takes one transaction-scoped advisory lock
  (``pg_advisory_xact_lock``), released by its COMMIT or ROLLBACK -- the same
  serialisation, across processes and hosts. READ COMMITTED (set, whatever the server's
  default): every statement after the lock sees what the previous holder committed; a
  REPEATABLE READ snapshot would be taken before the lock is granted. ``lock_timeout``
  (30 s) matches SQLite's busy timeout. Durability: every session sets
  ``synchronous_commit=on``, whatever the server's defaults. Chosen over SERIALIZABLE
  with retries: no transaction of the node has to be written to be re-run, and a C-STORE
  never fails on a serialisation conflict.

Query keys per level (for C-FIND in the Q/R issue): patient (PatientID, PatientName),
study (StudyInstanceUID, StudyDate, AccessionNumber, StudyID), series
(SeriesInstanceUID, Modality, SeriesNumber), instance (SOPInstanceUID, SOPClassUID,
InstanceNumber).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from node.errors import StorageError

metadata = MetaData()

patients = Table(
    "patients",
    metadata,
    Column("patient_key", String(200), primary_key=True),  # PatientID + issuer
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False),
    Column("patient_name", Text, nullable=False),
    Column("birth_date", String(8), nullable=False),
    Column("sex", String(16), nullable=False),
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_key", String(200), ForeignKey("patients.patient_key"), nullable=False),
    Column("study_date", String(8), nullable=False),
    Column("study_time", String(16), nullable=False),
    Column("accession_number", String(16), nullable=False),
    Column("study_id", String(16), nullable=False),
    Column("study_description", Text, nullable=False),
    Column("referring_physician", Text, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", String(64), primary_key=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("modality", String(16), nullable=False),
    Column("series_number", String(12), nullable=False),
    Column("series_description", Text, nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("series_uid", String(64), ForeignKey("series.series_uid"), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", String(12), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("path", Text, nullable=False),
    # 64-bit on PostgreSQL, whose INTEGER stops at 2 GiB (SQLite's is always 64-bit).
    Column("size", Integer().with_variant(BigInteger(), "postgresql"), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("calling_ae", String(16), nullable=False),
    Column("peer_address", String(64), nullable=False),
    Column("association_id", String(64), nullable=False),
    Column("received_at", String(40), nullable=False),
    Index("ix_instances_series", "series_uid"),
)

duplicates = Table(
    "duplicates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("calling_ae", String(16), nullable=False),
    Column("peer_address", String(64), nullable=False),
    Column("association_id", String(64), nullable=False),
    Column("received_at", String(40), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("recorded_at", String(40), nullable=False),
    Column("event", String(64), nullable=False),
    Column("study_uid", String(64)),
    Column("sop_instance_uid", String(64)),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_study", "study_uid"),
    Index("ix_audit_instance", "sop_instance_uid"),
)

# The audit log is append-only: the database refuses edits and deletions. Someone with
# raw access to the file (or a PostgreSQL owner) can still drop these triggers; the hash
# chain detects that.
_SQLITE_APPEND_ONLY = (
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
)


# One advisory lock key for the node's transactions on a PostgreSQL database ("DCMN").
SERIALISING_LOCK = 0x44434D4E
LOCK_STATEMENT = f"SELECT pg_advisory_xact_lock({SERIALISING_LOCK})"
_LOCK_TIMEOUT_MS = 30_000


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url``: plain ``postgresql://`` means psycopg 3, the driver
    the node depends on (SQLAlchemy 2.0 would pick psycopg2, which is not installed)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


# The same refusal on PostgreSQL (TRUNCATE too, which skips row triggers). Replaced in
# one transaction at each start, so a second start never fails on an existing trigger.
_POSTGRESQL_APPEND_ONLY = (
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$""",
    "DROP TRIGGER IF EXISTS audit_no_update ON audit_log",
    "DROP TRIGGER IF EXISTS audit_no_delete ON audit_log",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON audit_log",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
)


def open_database(url: str) -> Engine:
    """Create the engine, configure SQLite for durability and create missing tables."""
    try:
        return _open(url)
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise StorageError(f"cannot open the index database {url}: {reason}") from exc


def _open(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
    else:
        engine = _server_engine(engine_url(url))
    if engine.dialect.name == "postgresql":
        _unbounded_strings()
    metadata.create_all(engine)
    append_only = (
        _SQLITE_APPEND_ONLY if engine.dialect.name == "sqlite" else _POSTGRESQL_APPEND_ONLY
    )
    with engine.begin() as conn:
        for ddl in append_only:
            conn.exec_driver_sql(ddl)
    return engine


def _unbounded_strings() -> None:
    """Every ``String(n)`` of every registered table becomes an unbounded VARCHAR on
    PostgreSQL. The lengths are DICOM's (UI 64, SH 16...) and SQLite never enforced them;
    values that exceed them reach the index (a KOS's custody origin names its MPPS UID,
    a peer's LO value may be longer than allowed), and must be stored on PostgreSQL as
    they are on SQLite, not refused with "value too long". Idempotent."""
    for table in metadata.tables.values():
        for column in table.columns:
            kind = column.type
            bounded = isinstance(kind, String) and not isinstance(kind, Text) and kind.length
            if bounded and "postgresql" not in kind._variant_mapping:
                column.type = kind.with_variant(String(), "postgresql")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (pysqlite would defer it).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _server_engine(url: URL) -> Engine:
    if url.get_backend_name() != "postgresql":
        raise StorageError(
            f"database {url.get_backend_name()} is not supported (SQLite or PostgreSQL)"
        )
    # synchronous_commit=on: a commit returns only once its WAL is flushed, whatever the
    # server, database or role default says; a C-STORE's Success depends on it. Options
    # the URL names come first, so ours win where both set one.
    given = url.query.get("options", "")
    ours = f"-c lock_timeout={_LOCK_TIMEOUT_MS} -c synchronous_commit=on"
    options = f"{given if isinstance(given, str) else ' '.join(given)} {ours}".strip()
    engine = create_engine(
        url.difference_update_query(["options"]),
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={"options": options},
    )

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(LOCK_STATEMENT)

    return engine
