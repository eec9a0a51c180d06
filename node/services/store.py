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

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from node.config import Role
from node.errors import NodeError
from node.jobs.worker import SerialWorker
from node.net.contexts import storage_sop_classes
from node.net.status import DUPLICATE_CONFLICT_STATUS, Status
from node.net.statusmap import status_dataset, status_for
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.inflight import InFlight
from node.storage.archive import Archive, Custody, ReceivedInstance, StoreOutcome, StoreResult
from node.storage.audit import AuditEvent

log = logging.getLogger("node.store")

# Called after every stored instance (for example: MPPS completeness checks).
StoreListener = Callable[[StoreOutcome], None]

# A UI value holds at most 64 characters (PS3.5 Table 6.2-1, 9.1).
_UID_LIMIT = 64


def request_problem(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    context_sop_class_uid: str,
    has_data_set: bool,
    storage_classes: frozenset[str],
) -> tuple[Status, str] | None:
    """What is wrong with a C-STORE-RQ's command set, before its data set is looked at.

    One function for both association paths, so they answer alike. A request may only
    use the SOP class its presentation context was accepted for (PS3.8 7.1.1.13: the
    context is negotiated per abstract syntax), and a store on a context that is no
    storage context (Verification) is a class this context does not support: both are
    0x0122 Refused: SOP Class not supported (PS3.7 Annex C.5, PS3.4 B.2.3). The Affected
    SOP Instance UID is mandatory in a C-STORE-RQ (PS3.7 Table 9.3-1) and a UI value
    holds at most 64 characters (PS3.5 9.1): without one, 0xC000 Cannot understand.
    """
    if context_sop_class_uid not in storage_classes:
        return Status.FAILURE_SOP_CLASS_NOT_SUPPORTED, "no storage on this presentation context"
    if sop_class_uid != context_sop_class_uid:
        return (
            Status.FAILURE_SOP_CLASS_NOT_SUPPORTED,
            "SOP Class differs from the presentation context's",
        )
    if not sop_instance_uid:
        return Status.FAILURE_CANNOT_UNDERSTAND, "C-STORE-RQ without an Affected SOP Instance UID"
    if len(sop_instance_uid) > _UID_LIMIT:
        return (
            Status.FAILURE_CANNOT_UNDERSTAND,
            f"Affected SOP Instance UID longer than {_UID_LIMIT} characters",
        )
    if not has_data_set:
        return Status.FAILURE_CANNOT_UNDERSTAND, "C-STORE-RQ without a data set"
    return None


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
        problem = request_problem(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            context_sop_class_uid=context_sop_class_uid,
            has_data_set=dataset is not None,
            storage_classes=self.storage_classes,
        )
        if problem is not None:
            return self._refused(info, sop_instance_uid, *problem)
        assert dataset is not None  # request_problem() refuses a request without one
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
        return self._refused(info, sop_uid, status_for(exc), str(exc))

    def _refused(
        self, info: AssociationInfo, sop_uid: str, status: Status, reason: str
    ) -> tuple[Status, str | None]:
        """Count, log (one line) and audit a C-STORE answered with a failure status."""
        info.failures += 1
        shown = sop_uid if len(sop_uid) <= _UID_LIMIT else sop_uid[:_UID_LIMIT] + "..."
        log.warning("C-STORE %s from %s failed (%s): %s", shown, info.peer, status.name, reason)
        try:
            self.associations.custody.record(  # waits in memory if need be
                AuditEvent.STORE_FAILED,
                sop_instance_uid=sop_uid if 0 < len(sop_uid) <= _UID_LIMIT else None,
                association_id=info.id,
                calling_ae=info.calling_ae,
                status=status.name,
                reason=reason,
            )
        except Exception:  # the failure answer must go out even if the audit cannot
            log.exception("cannot record the failed C-STORE of %s", shown)
        return status, reason
