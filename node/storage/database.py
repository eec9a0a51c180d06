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

The schema is SQLAlchemy Core, so a ``postgresql://`` URL can replace the embedded
SQLite file. With SQLite, every transaction starts with ``BEGIN IMMEDIATE`` so that
several receiver processes serialise their writes (the audit chain needs that), the
journal is WAL and ``synchronous=FULL`` makes each commit durable.

Query keys per level (for C-FIND in the Q/R issue): patient (PatientID, PatientName),
study (StudyInstanceUID, StudyDate, AccessionNumber, StudyID), series
(SeriesInstanceUID, Modality, SeriesNumber), instance (SOPInstanceUID, SOPClassUID,
InstanceNumber).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
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
    Column("size", Integer, nullable=False),
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
# raw access to the file can still drop these triggers; the hash chain detects that.
_SQLITE_APPEND_ONLY = (
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
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
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for ddl in _SQLITE_APPEND_ONLY:
                conn.exec_driver_sql(ddl)
    return engine


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
