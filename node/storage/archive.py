"""Store a received instance durably, index it and record its custody: one use case.

Order of work (a Success is sent only after this returns, PS3.4 B.2.3): walk the data
set's structure (:mod:`node.storage.structure`) and read its header; hash; write the
Part 10 file to a temporary name, fsync, move it to the final name without replacing,
fsync the folder; then, in one database transaction, the index rows and the audit
record. Only after that commit does the caller answer Success.

One writer per final name: the writer owns the file (:class:`node.storage.files.HeldFile`)
until its row is committed or the file removed; receivers of the same SOP Instance UID in
this process queue behind each other (:class:`UidClaims`), and one in another process
waits on the file's lock (:meth:`FileStore.settle`). Nothing ever replaces an archived
file. A file left without a row by a writer that died is resolved by the serving node
only (:mod:`node.storage.recovery`).

Duplicate policy (same SOP Instance UID received again), by the received data set bytes
(not the file meta, which holds the sender's AE title):
- identical data set: nothing is written, the result is ``DUPLICATE_IDENTICAL``
  (Success), and the second sender is recorded in the audit log;
- different bytes: the first copy stays the archived one; the second is kept aside
  under ``.quarantine/<uid>/<sha256>.dcm``, listed in the ``duplicates`` table and the
  audit log, and the result is ``DUPLICATE_CONFLICT`` (answered with a warning).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydicom.uid import UID
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from node.errors import DatasetMismatch, InvalidRequest, StorageError
from node.storage import audit
from node.storage.audit import AuditEvent
from node.storage.database import duplicates, instances
from node.storage.filemeta import data_set_digest, file_meta_bytes
from node.storage.files import (
    FileStore,
    HeldFile,
    instance_relpath,
    quarantine_relpath,
    unindexed_quarantine_relpath,
)
from node.storage.header import DEFAULT_MAX_INFLATED, InstanceHeader, read_header
from node.storage.index import CursorHierarchy, InstanceRow, find_instance
from node.storage.prepared import CommitUncertain, Prepared, raw_transaction
from node.storage.uids import checked_uid

log = logging.getLogger("node.archive")
# How long a receiver waits for another process's writer of the same instance.
WRITER_WAIT = 30.0
_ATTEMPTS = 3  # a final name freed by a failed writer is taken again; more is a fault


class UidClaims:
    """One receiver at a time per SOP Instance UID within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[Any]] = {}  # uid -> [lock, number of claimants]

    @contextlib.contextmanager
    def claim(self, uid: str) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(uid, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._held[uid]


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


_INSTANCE_COLUMNS = [c.name for c in instances.columns]


def _reason(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


class _Incoming:
    """A checked instance on its way in: what every step of :meth:`Archive.store` uses."""

    __slots__ = ("chunks", "header", "item", "relpath", "sha256", "size", "transfer_syntax")

    def __init__(
        self,
        item: ReceivedInstance,
        header: InstanceHeader,
        transfer_syntax: str,
        sha256: str,
        chunks: tuple[bytes, bytes],
    ) -> None:
        self.item = item
        self.header = header
        self.transfer_syntax = transfer_syntax
        self.sha256 = sha256
        self.chunks = chunks
        self.size = len(chunks[0]) + len(chunks[1])
        self.relpath = instance_relpath(
            header.study_uid, header.series_uid, header.sop_instance_uid
        )


class Archive:
    """The archive: files plus index plus audit log, kept consistent with each other."""

    def __init__(
        self,
        files: FileStore,
        engine: Engine,
        *,
        max_inflated: int = DEFAULT_MAX_INFLATED,
        resolves_unindexed: bool = False,
    ) -> None:
        self.files = files
        self.engine = engine
        self.max_inflated = max_inflated
        # Only the serving node (holding the archive lock) may move a file it did not
        # write: commands beside it refuse such an instance instead.
        self.resolves_unindexed = resolves_unindexed
        self._claims = UidClaims()
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
        header = read_header(item.dataset, ts, max_inflated=self.max_inflated)
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
        incoming = _Incoming(item, header, str(ts), digest.hexdigest(), (meta, item.dataset))
        with self._claims.claim(header.sop_instance_uid):
            for _attempt in range(_ATTEMPTS):
                try:
                    held = self.files.write_held(incoming.relpath, incoming.chunks)
                except FileExistsError:
                    existing = self._settled(incoming)
                    if existing is None:
                        continue  # the name was freed meanwhile: take it
                    return self._duplicate(incoming, existing)
                try:
                    return self._index(incoming, held)
                finally:
                    held.release()
        raise StorageError(f"{incoming.relpath}: the final name keeps changing; not stored")

    def _settled(self, incoming: _Incoming) -> InstanceRow | None:
        """The index row of the instance whose final name is taken, once its writer is
        done; None when the name is free again (a writer failed, a file was set aside)."""
        held = self.files.settle(incoming.relpath, WRITER_WAIT)
        if held is None:
            return None
        try:
            existing = self._find(incoming.header.sop_instance_uid)
            if existing is not None and existing.path == str(incoming.relpath):
                return existing
            # Owned, and no row for this file (none for the instance, or one naming another
            # file): its writer died before committing. Never acknowledged, so it is set
            # aside and this copy takes the name.
            if not self.resolves_unindexed:
                raise StorageError(
                    f"{incoming.relpath} exists without an index row; the serving node resolves it"
                )
            self.set_aside_unindexed(held, "found without an index row while storing")
            return None
        finally:
            held.release()

    def _find(self, sop_instance_uid: str) -> InstanceRow | None:
        try:
            with self.engine.connect() as conn:
                return find_instance(conn, sop_instance_uid)
        except SQLAlchemyError as exc:
            raise StorageError(f"index look-up failed: {_reason(exc)}") from exc

    def _index(
        self,
        incoming: _Incoming,
        held: HeldFile,
        event: str = AuditEvent.INSTANCE_STORED,
        *,
        remove_on_failure: bool = True,
    ) -> StoreOutcome:
        """Commit the rows of a file this receiver wrote; remove the file on failure."""
        header, relpath = incoming.header, incoming.relpath
        remove = held.remove if remove_on_failure else lambda: None
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
                        "transfer_syntax_uid": incoming.transfer_syntax,
                        "path": str(relpath),
                        "size": incoming.size,
                        "sha256": incoming.sha256,
                        **self._custody_columns(incoming.item.custody),
                    },
                )
                self._audit.append(
                    cursor,
                    event,
                    study_uid=header.study_uid,
                    sop_instance_uid=header.sop_instance_uid,
                    details=self._custody_details(
                        incoming.item.custody, incoming.sha256, incoming.size, str(relpath)
                    ),
                )
        except IntegrityError:
            return self._already_indexed(incoming, remove, adopting=not remove_on_failure)
        except CommitUncertain as exc:
            committed = self._committed_anyway(incoming)
            if committed:
                return StoreOutcome(
                    StoreResult.STORED, header, relpath, incoming.sha256, incoming.size
                )
            if committed is False:
                remove()
            # Unknown: the file stays (it may be what a committed row describes); a file
            # without its row is resolved at the next start or by the next copy.
            raise StorageError(f"index commit failed: {_reason(exc)}") from exc
        except SQLAlchemyError as exc:
            remove()  # never leave a file that no row describes
            raise StorageError(f"index update failed: {_reason(exc)}") from exc
        except BaseException:
            remove()
            raise
        self._known_series.add(header.series_uid)
        return StoreOutcome(StoreResult.STORED, header, relpath, incoming.sha256, incoming.size)

    def _already_indexed(
        self, incoming: _Incoming, remove: Callable[[], None], *, adopting: bool
    ) -> StoreOutcome:
        """The instance has a row although its final name was free: the row's file is
        missing (removed behind the archive's back), or the row names another file (the
        same SOP Instance UID under other study or series UIDs)."""
        header = incoming.header
        existing = self._find(header.sop_instance_uid)
        if existing is None:
            remove()
            raise StorageError(f"index refused {header.sop_instance_uid}") from None
        if adopting:
            raise InvalidRequest(f"its instance is archived as {existing.path}")
        if existing.path == str(incoming.relpath) and existing.sha256 == incoming.sha256:
            # The very bytes the row describes: this copy restores the missing file.
            log.error("archived file %s was missing; restored by a new copy", existing.path)
            details = self._custody_details(
                incoming.item.custody, incoming.sha256, incoming.size, existing.path
            )
            self.record(
                AuditEvent.DUPLICATE_IDENTICAL,
                study_uid=header.study_uid,
                sop_instance_uid=header.sop_instance_uid,
                restored_missing_file=True,
                **details,
            )
            return StoreOutcome(
                StoreResult.DUPLICATE_IDENTICAL,
                header,
                incoming.relpath,
                incoming.sha256,
                incoming.size,
            )
        remove()  # the row is the acknowledged copy; this one is compared with it
        return self._duplicate(incoming, existing)

    def _committed_anyway(self, incoming: _Incoming) -> bool | None:
        """After an uncertain COMMIT: whether the row was committed all the same (a lost
        reply); None when that cannot be known now. Success is answered only on True."""
        try:
            existing = self._find(incoming.header.sop_instance_uid)
        except StorageError:
            return None
        return (
            existing is not None
            and existing.path == str(incoming.relpath)
            and existing.sha256 == incoming.sha256
        )

    def _same_data_set(self, incoming: _Incoming, existing: InstanceRow) -> bool:
        """Whether the archived copy holds exactly the received data set bytes."""
        if not self.files.path(existing.path).is_file():
            return False  # a row without its file is never "the same"
        if existing.sha256 == incoming.sha256:
            return True  # same bytes, file meta included (the usual resend)
        if abs(existing.size - len(incoming.chunks[0]) - len(incoming.item.dataset)) > 18:
            return False  # the two file metas differ by an AE title (0-16 bytes) at most
        try:
            archived = data_set_digest(self.files.path(existing.path))
        except OSError:
            return False
        return archived == hashlib.sha256(incoming.item.dataset).hexdigest()

    def _duplicate(self, incoming: _Incoming, existing: InstanceRow) -> StoreOutcome:
        item, header, sha, size = incoming.item, incoming.header, incoming.sha256, incoming.size
        details = self._custody_details(item.custody, sha, size, None)
        details["first_sha256"] = existing.sha256
        try:
            if self._same_data_set(incoming, existing):
                with self.engine.begin() as conn:
                    audit.append(
                        conn,
                        AuditEvent.DUPLICATE_IDENTICAL,
                        study_uid=header.study_uid,
                        sop_instance_uid=header.sop_instance_uid,
                        details={**details, "path": existing.path},
                    )
                relpath = PurePosixPath(existing.path)
                return StoreOutcome(StoreResult.DUPLICATE_IDENTICAL, header, relpath, sha, size)
            relpath = quarantine_relpath(header.sop_instance_uid, sha)
            with contextlib.suppress(FileExistsError):  # this exact copy is already aside
                self.files.write_new(relpath, incoming.chunks)
            details.update(path=str(relpath))
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
        except SQLAlchemyError as exc:
            raise StorageError(f"index update failed: {_reason(exc)}") from exc
        return StoreOutcome(StoreResult.DUPLICATE_CONFLICT, header, relpath, sha, size)

    def adopt_unindexed(
        self, held: HeldFile, item: ReceivedInstance, header: InstanceHeader, meta: bytes
    ) -> None:
        """Index an owned, whole file found without its row (:mod:`node.storage.recovery`).

        ``item`` describes the file as it lies: its data set, and the custody its file
        meta tells (the sender's AE title). The file stays untouched whatever happens.
        """
        digest = hashlib.sha256(meta)
        digest.update(item.dataset)
        ts = item.transfer_syntax_uid
        incoming = _Incoming(item, header, ts, digest.hexdigest(), (meta, item.dataset))
        if incoming.relpath != held.relpath:
            raise InvalidRequest(f"its UIDs name another file ({incoming.relpath})")
        existing = self._find(header.sop_instance_uid)
        if existing is not None:
            raise InvalidRequest(f"its instance is archived as {existing.path}")
        self._index(incoming, held, AuditEvent.UNINDEXED_ADOPTED, remove_on_failure=False)

    def set_aside_unindexed(self, held: HeldFile, reason: str) -> PurePosixPath:
        """Move an owned file that has no index row into quarantine, and record it."""
        sha = self.files.sha256(held.relpath)
        target = unindexed_quarantine_relpath(sha)
        self.files.set_aside(held, target)
        self.record(
            AuditEvent.UNINDEXED_QUARANTINED,
            path=str(held.relpath),
            quarantined_as=str(target),
            sha256=sha,
            reason=reason,
        )
        return target

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
        try:
            with self.engine.begin() as conn:
                audit.append(
                    conn, event, study_uid=study_uid, sop_instance_uid=sop_uid, details=fields
                )
        except SQLAlchemyError as exc:
            raise StorageError(f"audit record failed: {_reason(exc)}") from exc
