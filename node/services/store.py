"""Storage SCP (PS3.4 Annex B): the C-STORE handler.

The handler only translates the event to a :class:`StoreRequest`, checks the peer's
role, keeps the association's counters and runs the after-store listeners. Receiving
itself (checks, storing, custody, status) is :func:`node.services.receive.receive_instance`,
which answers Success only after :meth:`Archive.store` has returned: the file is durable
and the index committed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from node.config import Role
from node.jobs.worker import SerialWorker
from node.net.contexts import storage_sop_classes
from node.net.status import StorageStatus
from node.net.statusmap import status_dataset
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.inflight import InFlight
from node.services.receive import StoreRequest, receive_instance, refused, request_problem
from node.storage.archive import Archive, Custody, StoreOutcome, StoreResult

# request_problem is re-exported: the pynetdicom path's guard asks it first.
__all__ = ["StoreListener", "StoreService", "request_problem"]

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
    # SOP classes a C-STORE may be served on (the accepted storage contexts).
    storage_classes: frozenset[str] = field(
        default_factory=lambda: frozenset(str(uid) for uid in storage_sop_classes())
    )

    def handle(self, event: Event) -> Dataset:
        """EVT_C_STORE handler (pynetdicom path)."""
        request = event.request
        # What pynetdicom hands an EVT_C_STORE handler (it answers a failing one 0xC211).
        assert isinstance(request, C_STORE) and request.DataSet is not None
        status, comment = self.receive(
            self.associations.info(event.assoc),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            context_sop_class_uid=str(event.context.abstract_syntax),
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
        context_sop_class_uid: str,
        transfer_syntax_uid: str,
        dataset: bytes | None,
        followups: list[Callable[[], None]] | None = None,
    ) -> tuple[StorageStatus, str | None]:
        """Store one received instance; the status and error comment to answer with.

        Shared by both association paths (pynetdicom and ``node.net``); the checks,
        custody records and status are :func:`node.services.receive.receive_instance`'s,
        as for the instances a retrieve brings in. The deferred listeners
        are handed to the worker at once, or appended to ``followups`` for a caller that
        can run them after its answer has gone out (the worker thread would otherwise
        take the interpreter lock just before the response is sent).
        """
        custody = Custody(info.calling_ae, info.address, info.id)
        if Role.STORE not in info.roles:
            info.failures += 1
            denied = refused(
                self.associations.custody.record,
                custody,
                info.peer,
                sop_instance_uid,
                StorageStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
                "peer has no store role",
            )
            return denied.status, denied.comment
        request = StoreRequest(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            context_sop_class_uid=context_sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            dataset=dataset,
        )
        with self.inflight.track():
            receipt = receive_instance(
                self.archive,
                request,
                custody,
                storage_classes=self.storage_classes,
                record=self.associations.custody.record,  # waits in memory if need be
                peer=info.peer,
            )
        outcome = receipt.outcome
        if outcome is None:
            info.failures += 1
            return receipt.status, receipt.comment
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
        if outcome.result is StoreResult.STORED:
            info.stored += 1
        else:
            info.duplicates += 1
        return receipt.status, receipt.comment
