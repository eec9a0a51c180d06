"""Storage SCP (PS3.4 Annex B): the C-STORE handler.

The handler only translates: event to :class:`ReceivedInstance`, domain result or
error to a named status. Success is returned only after :meth:`Archive.store` has
returned, which is after the file is durable and the index committed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from node.config import Role
from node.errors import NodeError
from node.jobs.worker import SerialWorker
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.inflight import InFlight
from node.services.status import DUPLICATE_CONFLICT_STATUS, Status
from node.services.statusmap import status_dataset, status_for
from node.storage.archive import Archive, Custody, ReceivedInstance, StoreOutcome, StoreResult
from node.storage.audit import AuditEvent

log = logging.getLogger("node.store")

# Called after every stored instance (for example: MPPS completeness checks).
StoreListener = Callable[[StoreOutcome], None]


@dataclass
class StoreService:
    archive: Archive
    associations: AssociationRegistry
    inflight: InFlight
    listeners: list[StoreListener] = field(default_factory=list)
    # Run after the answer, in order, on one background thread (see SerialWorker).
    deferred: list[StoreListener] = field(default_factory=list)
    worker: SerialWorker = field(default_factory=lambda: SerialWorker("after-store"))

    def handle(self, event: Any) -> Dataset:
        """EVT_C_STORE handler (pynetdicom path)."""
        request = event.request
        status, comment = self.receive(
            self.associations.info(event.assoc),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            dataset=request.DataSet.getvalue(),
        )
        return status_dataset(status, comment)

    def receive(
        self,
        info: AssociationInfo,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        dataset: bytes,
        followups: list[Callable[[], None]] | None = None,
    ) -> tuple[Status, str | None]:
        """Store one received instance; the status and error comment to answer with.

        Shared by both association paths (pynetdicom and ``node.net``), so every
        C-STORE gets the same checks, custody record and status. The deferred listeners
        are handed to the worker at once, or appended to ``followups`` for a caller that
        can run them after its answer has gone out (the worker thread would otherwise
        take the interpreter lock just before the response is sent).
        """
        if Role.STORE not in info.roles:
            info.failures += 1
            log.warning("C-STORE refused: %s has no store role", info.peer)
            return Status.FAILURE_REFUSED_NOT_AUTHORIZED, "peer has no store role"
        received = ReceivedInstance(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            dataset=dataset,
            custody=Custody(info.calling_ae, info.address, info.id),
        )
        with self.inflight.track():
            try:
                outcome = self.archive.store(received)
            except NodeError as exc:
                return self._failed(info, sop_instance_uid, exc)
            except Exception as exc:  # never let a bug become a silent abort
                log.exception("C-STORE of %s failed unexpectedly", sop_instance_uid)
                return self._failed(info, sop_instance_uid, exc)
        for listener in self.listeners:
            try:
                listener(outcome)
            except Exception:
                log.exception("after-store listener failed for %s", sop_instance_uid)
        for listener in self.deferred:
            if followups is None:
                self.worker.submit(listener, outcome)
            else:
                followups.append(functools.partial(self.worker.submit, listener, outcome))
        if outcome.result is StoreResult.DUPLICATE_CONFLICT:
            info.duplicates += 1
            log.warning(
                "C-STORE %s from %s: different copy of an archived instance kept aside as %s",
                sop_instance_uid,
                info.peer,
                outcome.relpath,
            )
            return DUPLICATE_CONFLICT_STATUS, "duplicate SOP Instance UID: first copy kept"
        if outcome.result is StoreResult.DUPLICATE_IDENTICAL:
            info.duplicates += 1
        else:
            info.stored += 1
        return Status.SUCCESS, None

    def _failed(
        self, info: AssociationInfo, sop_uid: str, exc: BaseException
    ) -> tuple[Status, str | None]:
        info.failures += 1
        status = status_for(exc)
        log.warning("C-STORE %s from %s failed (%s): %s", sop_uid, info.peer, status.name, exc)
        try:
            self.associations.custody.record(  # waits in memory if need be
                AuditEvent.STORE_FAILED,
                sop_instance_uid=sop_uid if len(sop_uid) <= 64 else None,
                association_id=info.id,
                calling_ae=info.calling_ae,
                status=status.name,
                reason=str(exc),
            )
        except Exception:  # the failure answer must go out even if the audit cannot
            log.exception("cannot record the failed C-STORE of %s", sop_uid)
        return status, str(exc)
