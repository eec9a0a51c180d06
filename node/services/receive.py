"""Receiving one C-STORE (PS3.4 Annex B, SCP role): the one implementation.

Every instance that reaches the node by C-STORE comes through :func:`receive_instance`:
the Storage SCP's (both association paths, pynetdicom and ``node.net``) and the
sub-operations of a C-GET or C-MOVE the node asked for (:mod:`node.retrieve.client`).
So each gets the same command-set checks, the same structure walk and duplicate
handling (:meth:`Archive.store`), the same custody records and the same status. The
status is Success only after the archive has returned: the file is durable and the
index committed.

No pynetdicom here: callers hand in plain values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.errors import NodeError
from node.net.status import DUPLICATE_CONFLICT_STATUS, Service, StorageStatus
from node.net.statusmap import status_for
from node.storage.archive import Archive, Custody, ReceivedInstance, StoreOutcome, StoreResult
from node.storage.audit import AuditEvent

log = logging.getLogger("node.store")

# A UI value holds at most 64 characters (PS3.5 Table 6.2-1, 9.1).
UID_LIMIT = 64

# Writes one custody record: (event, **fields). The Storage SCP's waits in memory when
# the database cannot be written (node.services.custody); a retrieve's is the archive's.
Recorder = Callable[..., Any]


def request_problem(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    context_sop_class_uid: str,
    has_data_set: bool,
    storage_classes: frozenset[str],
) -> tuple[StorageStatus, str] | None:
    """What is wrong with a C-STORE-RQ's command set, before its data set is looked at.

    One function for every receiving path, so they answer alike. A request may only
    use the SOP class its presentation context was accepted for (PS3.8 7.1.1.13: the
    context is negotiated per abstract syntax), and a store on a context that is no
    storage context (Verification) is a class this context does not support: both are
    0x0122 Refused: SOP Class not supported (PS3.7 Annex C.5, PS3.4 B.2.3). The Affected
    SOP Instance UID is mandatory in a C-STORE-RQ (PS3.7 Table 9.3-1) and a UI value
    holds at most 64 characters (PS3.5 9.1): without one, 0xC000 Cannot understand.
    """
    if context_sop_class_uid not in storage_classes:
        return (
            StorageStatus.FAILURE_SOP_CLASS_NOT_SUPPORTED,
            "no storage on this presentation context",
        )
    if sop_class_uid != context_sop_class_uid:
        return (
            StorageStatus.FAILURE_SOP_CLASS_NOT_SUPPORTED,
            "SOP Class differs from the presentation context's",
        )
    if not sop_instance_uid:
        return (
            StorageStatus.FAILURE_CANNOT_UNDERSTAND,
            "C-STORE-RQ without an Affected SOP Instance UID",
        )
    if len(sop_instance_uid) > UID_LIMIT:
        return (
            StorageStatus.FAILURE_CANNOT_UNDERSTAND,
            f"Affected SOP Instance UID longer than {UID_LIMIT} characters",
        )
    if not has_data_set:
        return StorageStatus.FAILURE_CANNOT_UNDERSTAND, "C-STORE-RQ without a data set"
    return None


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One C-STORE-RQ as it came: its command set's UIDs, its context, its data set."""

    sop_class_uid: str
    sop_instance_uid: str
    context_sop_class_uid: str  # the abstract syntax of the context it came on
    transfer_syntax_uid: str  # that context's
    dataset: bytes | None  # None: the request carried no data set


@dataclass(frozen=True, slots=True)
class Receipt:
    """How a C-STORE was answered, and what the archive did with the instance."""

    status: StorageStatus
    comment: str | None
    outcome: StoreOutcome | None = None  # None: refused or failed, nothing stored

    @property
    def failed(self) -> bool:
        return self.outcome is None


def receive_instance(
    archive: Archive,
    request: StoreRequest,
    custody: Custody,
    *,
    storage_classes: frozenset[str],
    record: Recorder,
    peer: str,
) -> Receipt:
    """Check, store and account for one received instance; the answer to send.

    ``storage_classes``: the SOP classes the association accepted storage contexts for.
    ``record`` writes the custody record of a refused or failed C-STORE (the archive
    writes those of stored instances); ``peer`` names the sender in log lines.
    """
    uid = request.sop_instance_uid
    problem = request_problem(
        sop_class_uid=request.sop_class_uid,
        sop_instance_uid=uid,
        context_sop_class_uid=request.context_sop_class_uid,
        has_data_set=request.dataset is not None,
        storage_classes=storage_classes,
    )
    if problem is not None:
        return refused(record, custody, peer, uid, *problem)
    assert request.dataset is not None  # request_problem() refuses a request without one
    received = ReceivedInstance(
        sop_class_uid=request.sop_class_uid,
        sop_instance_uid=uid,
        transfer_syntax_uid=request.transfer_syntax_uid,
        dataset=request.dataset,
        custody=custody,
    )
    try:
        outcome = archive.store(received)
    except NodeError as exc:
        return refused(record, custody, peer, uid, status_for(exc, Service.STORAGE), str(exc))
    except Exception as exc:  # never let a bug become a silent abort
        log.exception("C-STORE of %s failed unexpectedly", uid)
        return refused(record, custody, peer, uid, status_for(exc, Service.STORAGE), str(exc))
    if outcome.result is StoreResult.DUPLICATE_CONFLICT:
        log.warning(
            "C-STORE %s from %s: different copy of an archived instance kept aside as %s",
            uid,
            peer,
            outcome.relpath,
        )
        return Receipt(
            DUPLICATE_CONFLICT_STATUS, "duplicate SOP Instance UID: first copy kept", outcome
        )
    return Receipt(StorageStatus.SUCCESS, None, outcome)


def refused(
    record: Recorder,
    custody: Custody,
    peer: str,
    sop_uid: str,
    status: StorageStatus,
    reason: str,
) -> Receipt:
    """Log (one line) and audit a C-STORE answered with a failure status."""
    shown = sop_uid if len(sop_uid) <= UID_LIMIT else sop_uid[:UID_LIMIT] + "..."
    log.warning("C-STORE %s from %s failed (%s): %s", shown, peer, status.name, reason)
    try:
        record(
            AuditEvent.STORE_FAILED,
            sop_instance_uid=sop_uid if 0 < len(sop_uid) <= UID_LIMIT else None,
            association_id=custody.association_id,
            calling_ae=custody.calling_ae,
            status=status.name,
            reason=reason,
            **_via(custody),
        )
    except Exception:  # the failure answer must go out even if the audit cannot
        log.exception("cannot record the failed C-STORE of %s", shown)
    return Receipt(status, reason)


def _via(custody: Custody) -> dict[str, Any]:
    """How a refused arrival came, when it was no plain C-STORE to our Storage SCP."""
    if custody.via == "C-STORE":
        return {}
    return {"via": custody.via, **custody.extra}
