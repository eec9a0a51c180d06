"""Store a received instance durably, index it and record its custody: one use case.

Order of work (PRODUCT.md "Nothing acknowledged is lost"): hash; write the Part 10
file to a temporary name, fsync, link to the final name, fsync the folder; then, in one
database transaction, the index rows and the audit record. Only after that commit does
the caller answer Success.

Duplicate policy (same SOP Instance UID received again):
- identical bytes: nothing is written, the result is ``DUPLICATE_IDENTICAL`` (Success);
- different bytes: the first copy stays the archived one; the second is kept aside
  under ``.quarantine/<uid>/<sha256>.dcm``, listed in the ``duplicates`` table and the
  audit log, and the result is ``DUPLICATE_CONFLICT`` (answered with a warning).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydicom.uid import UID
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from node.errors import DatasetMismatch, StorageError
from node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.storage import audit
from node.storage.audit import AuditEvent
from node.storage.database import duplicates, instances
from node.storage.files import FileStore, instance_relpath, quarantine_relpath
from node.storage.header import InstanceHeader, read_header
from node.storage.index import CursorHierarchy, find_instance
from node.storage.prepared import Prepared, raw_transaction
from node.storage.uids import checked_uid

PREAMBLE = b"\0" * 128 + b"DICM"


@dataclass(frozen=True, slots=True)
class Custody:
    """Where an instance came from: the facts the chain of custody records."""

    calling_ae: str
    peer_address: str
    association_id: str
    via: str = "C-STORE"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """A data set exactly as it arrived, with the request's identifiers."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes
    custody: Custody


class StoreResult(enum.Enum):
    STORED = "stored"
    DUPLICATE_IDENTICAL = "duplicate-identical"
    DUPLICATE_CONFLICT = "duplicate-conflict"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    result: StoreResult
    header: InstanceHeader
    relpath: PurePosixPath
    sha256: str
    size: int


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, ts: str, source_ae: str) -> bytes:
    """The Part 10 preamble and File Meta Information group (PS3.10 7.1), Explicit VR LE.

    Written by hand because this runs for every received instance: the inputs are
    validated UIDs and an AE title, so the encoding is fixed and simple.
    """
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _element(0x0002, 0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _element(0x0002, 0x0010, b"UI", _padded(ts, b"\0")),
            _element(0x0002, 0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\0")),
            _element(0x0002, 0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _element(0x0002, 0x0016, b"AE", _padded(source_ae, b" ")) if source_ae else b"",
        )
    )
    return PREAMBLE + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


_INSTANCE_COLUMNS = [c.name for c in instances.columns]


class Archive:
    """The archive: files plus index plus audit log, kept consistent with each other."""

    def __init__(self, files: FileStore, engine: Engine) -> None:
        self.files = files
        self.engine = engine
        # Series whose patient, study and series rows are known to exist: only a cache
        # to skip three upserts per instance; rows are never deleted, so it cannot lie.
        self._known_series: set[str] = set()
        # The C-STORE path's index writes, compiled once (node.storage.prepared).
        self._insert_instance = Prepared(engine, instances.insert(), _INSTANCE_COLUMNS)
        self._hierarchy = CursorHierarchy(engine)
        self._audit = audit.CursorAudit(engine)

    def store(self, item: ReceivedInstance) -> StoreOutcome:
        """Store ``item`` durably; raise InvalidRequest, DatasetMismatch or StorageError."""
        ts = UID(checked_uid(item.transfer_syntax_uid, "Transfer Syntax UID"))
        header = read_header(item.dataset, ts)
        if header.sop_class_uid != item.sop_class_uid:
            raise DatasetMismatch(
                f"SOP Class UID {header.sop_class_uid} in the data set differs from "
                f"{item.sop_class_uid} in the request"
            )
        if header.sop_instance_uid != item.sop_instance_uid:
            raise DatasetMismatch(
                f"SOP Instance UID {header.sop_instance_uid} in the data set differs from "
                f"{item.sop_instance_uid} in the request"
            )
        meta = file_meta_bytes(
            header.sop_class_uid, header.sop_instance_uid, ts, item.custody.calling_ae
        )
        digest = hashlib.sha256(meta)
        digest.update(item.dataset)
        sha = digest.hexdigest()
        size = len(meta) + len(item.dataset)
        relpath = instance_relpath(header.study_uid, header.series_uid, header.sop_instance_uid)
        chunks = (meta, item.dataset)

        # No index look-up first: the final name is taken exactly when the instance was
        # archived before (or a crash left an unindexed file), so the link tells us.
        try:
            self.files.write_new(relpath, chunks)
        except FileExistsError:
            # A file without an index row was never acknowledged (a crash between link
            # and commit, or a racing receiver). Re-check, then take its place.
            with self.engine.connect() as conn:
                existing = find_instance(conn, header.sop_instance_uid)
            if existing is not None:
                return self._duplicate(item, header, existing.sha256, sha, size, chunks)
            if self.files.sha256(relpath) != sha:
                self.files.replace(relpath, chunks)
        try:
            with raw_transaction(self.engine) as cursor:
                if header.series_uid not in self._known_series:
                    self._hierarchy.upsert(cursor, header)
                self._insert_instance.run(
                    cursor,
                    {
                        "sop_instance_uid": header.sop_instance_uid,
                        "series_uid": header.series_uid,
                        "sop_class_uid": header.sop_class_uid,
                        "instance_number": header.instance_number,
                        "transfer_syntax_uid": str(ts),
                        "path": str(relpath),
                        "size": size,
                        "sha256": sha,
                        **self._custody_columns(item.custody),
                    },
                )
                self._audit.append(
                    cursor,
                    AuditEvent.INSTANCE_STORED,
                    study_uid=header.study_uid,
                    sop_instance_uid=header.sop_instance_uid,
                    details=self._custody_details(item.custody, sha, size, str(relpath)),
                )
        except IntegrityError:
            # Another receiver indexed the same instance between our check and insert;
            # both wrote the same final name only if the bytes were identical.
            with self.engine.connect() as conn:
                existing = find_instance(conn, header.sop_instance_uid)
            if existing is None:
                raise
            return self._duplicate(item, header, existing.sha256, sha, size, chunks)
        except OperationalError as exc:
            self.files.remove(relpath)  # never leave a file that no row describes
            raise StorageError(f"index update failed: {exc.orig}") from exc
        self._known_series.add(header.series_uid)
        return StoreOutcome(StoreResult.STORED, header, relpath, sha, size)

    def _duplicate(
        self,
        item: ReceivedInstance,
        header: InstanceHeader,
        first_sha: str,
        sha: str,
        size: int,
        chunks: tuple[bytes, bytes],
    ) -> StoreOutcome:
        details = self._custody_details(item.custody, sha, size, None)
        if first_sha == sha:
            with self.engine.begin() as conn:
                audit.append(
                    conn,
                    AuditEvent.DUPLICATE_IDENTICAL,
                    study_uid=header.study_uid,
                    sop_instance_uid=header.sop_instance_uid,
                    details=details,
                )
            relpath = instance_relpath(header.study_uid, header.series_uid, header.sop_instance_uid)
            return StoreOutcome(StoreResult.DUPLICATE_IDENTICAL, header, relpath, sha, size)
        relpath = quarantine_relpath(header.sop_instance_uid, sha)
        with contextlib.suppress(FileExistsError):  # this exact copy is already aside
            self.files.write_new(relpath, chunks)
        details.update(path=str(relpath), first_sha256=first_sha)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    duplicates.insert().values(
                        sop_instance_uid=header.sop_instance_uid,
                        path=str(relpath),
                        sha256=sha,
                        **self._custody_columns(item.custody),
                    )
                )
                audit.append(
                    conn,
                    AuditEvent.DUPLICATE_CONFLICT,
                    study_uid=header.study_uid,
                    sop_instance_uid=header.sop_instance_uid,
                    details=details,
                )
        except OperationalError as exc:
            raise StorageError(f"index update failed: {exc.orig}") from exc
        return StoreOutcome(StoreResult.DUPLICATE_CONFLICT, header, relpath, sha, size)

    @staticmethod
    def _custody_columns(custody: Custody) -> dict[str, str]:
        return {
            "calling_ae": custody.calling_ae,
            "peer_address": custody.peer_address,
            "association_id": custody.association_id,
            "received_at": audit.utc_now(),
        }

    @staticmethod
    def _custody_details(custody: Custody, sha: str, size: int, path: str | None) -> dict[str, Any]:
        details: dict[str, Any] = {
            "calling_ae": custody.calling_ae,
            "peer_address": custody.peer_address,
            "association_id": custody.association_id,
            "via": custody.via,
            "sha256": sha,
            "size": size,
            **custody.extra,
        }
        if path:
            details["path"] = path
        return details

    def record(self, event: str, **fields: Any) -> None:
        """Append a custody event that is not tied to a stored file."""
        study_uid = fields.pop("study_uid", None)
        sop_uid = fields.pop("sop_instance_uid", None)
        with self.engine.begin() as conn:
            audit.append(conn, event, study_uid=study_uid, sop_instance_uid=sop_uid, details=fields)
