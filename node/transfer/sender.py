"""One attempt at a transfer: C-STORE the pending instances, then the Signed Manifest.

PS3.17 Annex W case 2. An attempt sends, on one association, every instance still
pending, each in the transfer syntax it is stored in (node.scu.store), and records the
partner's answers in batches, each answer only after the partner gave it. When no
instance is pending any more, the Signed Manifest is built over the acknowledged ones
(once: its UID is fixed in the queue first, so a retry resends the same document) and
sent last. A lost association, a partner that cannot be reached or one short of
resources ends the attempt; the queue schedules the next one with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage

from node.config import NodeConfig, RemoteAE
from node.documents.publish import DocumentPublisher
from node.errors import NodeError, OperationFailed
from node.identity import new_uid
from node.scu.associate import store_association
from node.scu.store import (
    ACKNOWLEDGED,
    BUSY,
    NOT_NEGOTIATED,
    Outgoing,
    accepted_pairs,
    classify,
    proposals_for,
    send_instance,
)
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow, find_instance
from node.transfer.queue import (
    COMPLETED,
    FAILED,
    PARTIAL,
    PENDING,
    REFUSED,
    RETRYING,
    SENT,
    ItemResult,
    Transfer,
    TransferQueue,
)
from node.transfer.signed_manifest import build_signed_manifest

log = logging.getLogger("node.transfer")

BATCH_SIZE = 64  # answers recorded per commit
BATCH_SECONDS = 0.5  # and at least this often
MANIFEST_PAIR = (str(KeyObjectSelectionDocumentStorage), str(ExplicitVRLittleEndian))

Progress = Callable[[int, int], None]


class _Busy(Exception):
    """The partner answered Out of Resources: stop this attempt and retry later."""


class TransferSender:
    def __init__(
        self, config: NodeConfig, archive: Archive, queue: TransferQueue,
        publisher: DocumentPublisher,
    ) -> None:  # fmt: skip
        self.config = config
        self.archive = archive
        self.queue = queue
        self.publisher = publisher
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def run(
        self, transfer_id: int, progress: Progress | None = None, *, claimed: bool = False
    ) -> str:
        """Make one attempt if the transfer is due and free; return its state afterwards.

        ``claimed``: the caller already holds it (created ``sending`` by ``enqueue``).
        """
        if not claimed and not self.queue.claim(transfer_id):
            current = self.queue.get(transfer_id)
            return current.state if current else "unknown"
        transfer = self.queue.get(transfer_id)
        assert transfer is not None
        partner = self.config.partner(transfer.partner)
        if partner is None:
            self.queue.finish(transfer, FAILED, f"partner {transfer.partner!r} is not configured")
            return FAILED
        with self._slot(partner) as free:
            if not free:
                self.queue.release(transfer_id)  # every association to it is busy
                return RETRYING
            try:
                return self._attempt(transfer, partner, progress)
            except (OperationFailed, _Busy) as exc:
                state = self.queue.retry_later(transfer, str(exc), partner.retry)
                log.warning("transfer %d to %s: %s (%s)", transfer_id, partner.name, exc, state)
                return state
            except Exception as exc:  # a bug must not leave the transfer claimed forever
                log.exception("transfer %d failed unexpectedly", transfer_id)
                return self.queue.retry_later(transfer, f"internal error: {exc}", partner.retry)

    @contextmanager
    def _slot(self, partner: RemoteAE) -> Iterator[bool]:
        """At most ``max_associations`` concurrent associations to one partner."""
        with self._lock:
            slot = self._slots.setdefault(
                partner.name, threading.BoundedSemaphore(partner.max_associations)
            )
        free = slot.acquire(blocking=False)
        try:
            yield free
        finally:
            if free:
                slot.release()

    def _attempt(self, transfer: Transfer, partner: RemoteAE, progress: Progress | None) -> str:
        pending, vanished = self.queue.archived_items(transfer.transfer_id, PENDING)
        self.queue.record(
            transfer,
            [ItemResult(uid, REFUSED, None, "no longer in the archive") for uid in vanished],
        )
        outgoing = [self._outgoing(row) for row in pending]
        proposals = proposals_for(outgoing, also=[MANIFEST_PAIR])
        with store_association(self.config, partner, proposals) as assoc:
            self._send_instances(assoc, transfer, outgoing, progress)
            acknowledged, _ = self.queue.archived_items(transfer.transfer_id, SENT)
            if not acknowledged:
                total = len(self.queue.items(transfer.transfer_id, REFUSED))
                error = f"{partner.name} accepted none of the {total} instances"
                self.queue.finish(transfer, FAILED, error)
                return FAILED
            manifest = self._manifest(transfer, acknowledged)
            status = send_instance(assoc, manifest)
        outcome = classify(status) if status != NOT_NEGOTIATED else "not-negotiated"
        if outcome == BUSY:
            raise _Busy(
                f"{partner.name} is out of resources for the manifest (status {status:#06x})"
            )
        if outcome != ACKNOWLEDGED:
            why = (
                "accepted no presentation context for the manifest"
                if status == NOT_NEGOTIATED
                else f"refused the manifest (status {status:#06x})"
            )
            self.queue.finish(transfer, FAILED, f"{partner.name} {why}")
            return FAILED
        self.archive.record(
            AuditEvent.MANIFEST_SENT,
            study_uid=transfer.study_uid,
            sop_instance_uid=manifest.sop_instance_uid,
            transfer_id=transfer.transfer_id,
            partner=transfer.partner,
            status=status,
            references=len(acknowledged),
        )
        refused = self.queue.counts(transfer.transfer_id).refused
        state = PARTIAL if refused else COMPLETED
        self.queue.finish(transfer, state, details={"manifest_uid": manifest.sop_instance_uid})
        log.info(
            "transfer %d of study %s to %s: %s (%d sent, %d refused, manifest %s)",
            transfer.transfer_id,
            transfer.study_uid,
            partner.name,
            state,
            len(acknowledged),
            refused,
            manifest.sop_instance_uid,
        )
        return state

    def _send_instances(
        self, assoc: Any, transfer: Transfer, outgoing: list[Outgoing], progress: Progress | None
    ) -> None:
        accepted = accepted_pairs(assoc)
        batch: list[ItemResult] = []
        flushed = time.monotonic()
        busy: ItemResult | None = None
        try:
            for done, item in enumerate(outgoing, start=1):
                result = self._result(item, send_instance(assoc, item, accepted=accepted))
                if result.state == BUSY:
                    busy = result  # stays pending; the rest waits for the next attempt
                    break
                batch.append(result)
                if len(batch) >= BATCH_SIZE or time.monotonic() - flushed > BATCH_SECONDS:
                    self.queue.record(transfer, batch)
                    batch, flushed = [], time.monotonic()
                if progress:
                    progress(done, len(outgoing))
        finally:
            # What the partner answered is kept even when the attempt stops half-way.
            self.queue.record(transfer, batch)
        if busy is not None:
            raise _Busy(f"{transfer.partner} is out of resources (status {busy.status:#06x})")

    @staticmethod
    def _result(item: Outgoing, status: int) -> ItemResult:
        if status == NOT_NEGOTIATED:
            return ItemResult(
                item.sop_instance_uid,
                REFUSED,
                None,
                f"no accepted presentation context for {item.sop_class_uid} "
                f"in {item.transfer_syntax_uid}",
            )
        outcome = classify(status)
        if outcome == ACKNOWLEDGED:
            return ItemResult(item.sop_instance_uid, SENT, status)
        if outcome == BUSY:
            return ItemResult(item.sop_instance_uid, BUSY, status)
        return ItemResult(item.sop_instance_uid, REFUSED, status, f"refused (status {status:#06x})")

    def _outgoing(self, row: InstanceRow) -> Outgoing:
        return Outgoing(
            self.archive.files.path(row.path),
            row.sop_class_uid,
            row.sop_instance_uid,
            row.transfer_syntax_uid,
        )

    def _manifest(self, transfer: Transfer, acknowledged: list[InstanceRow]) -> Outgoing:
        """The transfer's manifest, built now unless an earlier attempt built it."""
        if transfer.manifest_uid is None:
            transfer = dataclasses.replace(transfer, manifest_uid=new_uid())
            self.queue.set_manifest(transfer.transfer_id, str(transfer.manifest_uid))
        with self.archive.engine.connect() as conn:
            row = find_instance(conn, str(transfer.manifest_uid))
        if row is not None:
            return self._outgoing(row)  # built by an earlier attempt
        try:
            built = build_signed_manifest(self.publisher, transfer, acknowledged)
        except NodeError as exc:
            raise OperationFailed(f"cannot build the Signed Manifest: {exc}") from exc
        sop_class, syntax = MANIFEST_PAIR
        return Outgoing(built.path, sop_class, built.sop_instance_uid, syntax)
