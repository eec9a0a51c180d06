"""The append-only, hash-chained custody audit log.

Each record holds the SHA-256 of the record before it; its own hash covers the
canonical JSON of all its fields (sequence number, time, event, UIDs, details and the
previous hash). Editing, inserting or deleting a record breaks the chain at that point,
and ``verify_chain`` names the first broken record. The sequence number is the primary
key, so two writers can never both extend the same head.

Limit: removing records from the *end* of the log leaves a valid shorter chain; only a
copy of a later head hash (for example one in an exported ``.dcm.sig``) reveals that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from node.storage.database import audit_log
from node.storage.prepared import Prepared

GENESIS = "0" * 64


class AuditEvent:
    """Names of custody events (one vocabulary for every part of the node)."""

    ASSOCIATION_ACCEPTED = "association-accepted"
    ASSOCIATION_REJECTED = "association-rejected"
    INSTANCE_STORED = "instance-stored"
    DUPLICATE_IDENTICAL = "duplicate-identical"
    DUPLICATE_CONFLICT = "duplicate-conflict"
    STORE_FAILED = "store-failed"
    # A final file without its index row (a writer died before its commit): never
    # acknowledged, so it is adopted only when whole and consistent, else set aside.
    UNINDEXED_ADOPTED = "unindexed-file-adopted"
    UNINDEXED_QUARANTINED = "unindexed-file-quarantined"
    EXPORTED = "exported"
    REPORT_CREATED = "report-created"  # a dictation report draft and its CDA were written
    REPORT_SIGNED = "report-signed"  # a report got its author signature and was archived
    REPORT_VERIFIED = "report-verified"  # a verified report (new instance) was archived
    RETRIEVED = "retrieved"  # arrived by C-GET/C-MOVE we requested (source, method, WADO URL)
    RETRIEVE_FAILED = "retrieve-failed"  # a requested object did not arrive
    WADO_RETRIEVED = "wado-retrieved"  # an archived object served over WADO-URI (client, UIDs)
    INSTANCE_SENT = "instance-sent"  # a peer acknowledged an instance we sent (any use)
    C_MOVE_SERVED = "c-move-served"  # our Q/R SCP answered a C-MOVE (counts, status)
    C_GET_SERVED = "c-get-served"  # our Q/R SCP answered a C-GET (counts, status)
    # Transfers to partners (node.transfer) and received Signed Manifests (node.signed_manifests).
    TRANSFER_QUEUED = "transfer-queued"
    INSTANCE_REFUSED = "instance-refused"  # a partner refused an instance for good
    TRANSFER_ATTEMPT_FAILED = "transfer-attempt-failed"
    MANIFEST_BUILT = "manifest-built"
    MANIFEST_SENT = "manifest-sent"
    TRANSFER_COMPLETED = "transfer-completed"
    TRANSFER_FAILED = "transfer-failed"
    MANIFEST_RECEIVED = "manifest-received"
    MANIFEST_VERIFIED = "manifest-verified"
    MANIFEST_CHECK_FAILED = "manifest-check-failed"
    # Records lost while the database could not be written (node.services.custody).
    AUDIT_GAP = "audit-gap"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    recorded_at: str
    event: str
    study_uid: str | None
    sop_instance_uid: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "recorded_at": self.recorded_at,
            "event": self.event,
            "study_uid": self.study_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def canonical_json(value: object) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes that get hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(
    seq: int,
    recorded_at: str,
    event: str,
    study_uid: str | None,
    sop_instance_uid: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "recorded_at": recorded_at,
        "event": event,
        "study_uid": study_uid,
        "sop_instance_uid": sop_instance_uid,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# Built once (every stored instance appends a record): see node.storage.archive.
_LAST_RECORD = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT_RECORD = audit_log.insert()


def _chained(
    last: Sequence[Any] | None,
    event: str,
    study_uid: str | None,
    sop_instance_uid: str | None,
    details: Mapping[str, Any] | None,
) -> AuditRecord:
    """The record that follows ``last`` (its seq and hash, or None for the first one)."""
    seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
    when = utc_now()
    body = dict(details or {})
    digest = record_hash(seq, when, event, study_uid, sop_instance_uid, body, prev)
    return AuditRecord(seq, when, event, study_uid, sop_instance_uid, body, prev, digest)


def _row(record: AuditRecord) -> dict[str, Any]:
    row = record.as_dict()
    row["details"] = canonical_json(row["details"]).decode()
    return row


def append(
    conn: Connection,
    event: str,
    *,
    study_uid: str | None = None,
    sop_instance_uid: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append one record inside the caller's transaction (it commits with the caller)."""
    record = _chained(
        conn.execute(_LAST_RECORD).first(), event, study_uid, sop_instance_uid, details
    )
    conn.execute(_INSERT_RECORD, _row(record))
    return record


class CursorAudit:
    """:func:`append` for a DB-API cursor in a :func:`node.storage.prepared.raw_transaction`."""

    def __init__(self, engine: Engine) -> None:
        self._last = Prepared(engine, _LAST_RECORD)
        self._insert = Prepared(engine, _INSERT_RECORD, [c.name for c in audit_log.columns])

    def append(
        self,
        cursor: Any,
        event: str,
        *,
        study_uid: str | None = None,
        sop_instance_uid: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        last = self._last.run(cursor).fetchone()
        record = _chained(last, event, study_uid, sop_instance_uid, details)
        self._insert.run(cursor, _row(record))
        return record


@dataclass(frozen=True, slots=True)
class Entry:
    """One record to append with :func:`append_many`."""

    event: str
    study_uid: str | None = None
    sop_instance_uid: str | None = None
    details: Mapping[str, Any] | None = None


def append_many(conn: Connection, entries: Sequence[Entry]) -> None:
    """Append several records, chained in order, with one read and one insert statement."""
    if not entries:
        return
    last: Sequence[Any] | None = conn.execute(_LAST_RECORD).first()
    rows = []
    for entry in entries:
        record = _chained(last, entry.event, entry.study_uid, entry.sop_instance_uid, entry.details)
        rows.append(_row(record))
        last = (record.seq, record.hash)
    conn.execute(_INSERT_RECORD, rows)


def _rows(conn: Connection, where: Any = None) -> Iterator[AuditRecord]:
    query = select(audit_log).order_by(audit_log.c.seq)
    if where is not None:
        query = query.where(where)
    for row in conn.execute(query):
        yield AuditRecord(
            row.seq,
            row.recorded_at,
            row.event,
            row.study_uid,
            row.sop_instance_uid,
            json.loads(row.details),
            row.prev_hash,
            row.hash,
        )


def records(engine: Engine, *, study_uid: str | None = None) -> list[AuditRecord]:
    """All records, or those of one study, in order."""
    with engine.connect() as conn:
        where = audit_log.c.study_uid == study_uid if study_uid else None
        return list(_rows(conn, where))


def head_seq(engine: Engine) -> int:
    """The sequence number of the last record (0 for an empty log)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0)


# The records of an instance taken in: stored, or a duplicate of one already archived.
ARRIVAL_EVENTS = (
    AuditEvent.INSTANCE_STORED,
    AuditEvent.DUPLICATE_IDENTICAL,
    AuditEvent.DUPLICATE_CONFLICT,
)


def arrivals_since(engine: Engine, seq: int, study_uids: Iterable[str]) -> list[AuditRecord]:
    """Instances of these studies taken in after record ``seq``, in order.

    What a C-MOVE requester learns of the instances the serving node received for it
    (PS3.4 C.4.2: they arrive on the node's own Storage SCP, not on the requesting
    association)."""
    studies = sorted(set(study_uids))
    if not studies:
        return []
    where = and_(
        audit_log.c.seq > seq,
        audit_log.c.event.in_(ARRIVAL_EVENTS),
        audit_log.c.study_uid.in_(studies),
        audit_log.c.sop_instance_uid.is_not(None),
    )
    with engine.connect() as conn:
        return list(_rows(conn, where))


@dataclass(frozen=True, slots=True)
class ChainReport:
    count: int
    head: str
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def check_records(items: Iterable[AuditRecord]) -> ChainReport:
    """Walk records in order and report the first whose link or hash is wrong."""
    prev, expected_seq, count = GENESIS, 1, 0
    for rec in items:
        count += 1
        if rec.seq != expected_seq:
            return ChainReport(count, prev, rec.seq, f"expected record {expected_seq} here")
        if rec.prev_hash != prev:
            return ChainReport(count, prev, rec.seq, "previous-hash link does not match")
        computed = record_hash(
            rec.seq,
            rec.recorded_at,
            rec.event,
            rec.study_uid,
            rec.sop_instance_uid,
            rec.details,
            rec.prev_hash,
        )
        if computed != rec.hash:
            return ChainReport(count, prev, rec.seq, "record content does not match its hash")
        prev, expected_seq = rec.hash, expected_seq + 1
    return ChainReport(count, prev)


def verify_chain(engine: Engine) -> ChainReport:
    with engine.connect() as conn:
        return check_records(_rows(conn))
