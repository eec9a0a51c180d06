"""C-MOVE and C-GET sub-operations of the Q/R SCP (PS3.4 C.4.2.3, C.4.3.3): the archived
files sent as stored, counted as pynetdicom reports them.

Sub-operations send the archived files untouched. pynetdicom hands every data set a
handler yields to ``Association.send_c_store``, which would encode it anew (pydicom
drops group lengths, deflates again, may change a VR). So the handlers yield
:class:`ArchivedInstance` stand-ins, and on the association carrying the sub-operations
(the requestor's own for C-GET, the sub-association pynetdicom opens for C-MOVE)
:func:`send_archived` sends the stored file through :func:`node.scu.store.send_instance`
instead of pynetdicom's ``send_c_store``, which gets any other data set unchanged. A
stand-in has no file meta, so pynetdicom alone could never send it altered: it fails.

C-GET transfer syntaxes (PS3.4 C.4.3.1, PS3.7 D.3.3.4): the requestor proposes its
storage contexts, with the SCP role, when it opens the association, before the node
knows what it will ask for. pynetdicom would accept the first of the *acceptor's*
syntaxes the requestor lists (Explicit VR Little Endian), so a requestor preferring JPEG
Lossless (DCMTK ``getscu +xs``) could never get a JPEG-stored object: it is not
transcoded. :func:`prefer_requestor_syntaxes` therefore accepts, in such a context, the
first syntax *the requestor* lists among those the node stores objects in (every
storage syntax it accepts); each sub-operation then uses the context whose syntax is
the stored one (byte for byte), an uncompressed instance may go in another
uncompressed syntax, and any other instance fails and is listed as failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS as PYNETDICOM_STORE_STATUSES

from node.errors import OperationFailed
from node.pynetdicom_compat import divert_c_store
from node.scu.store import (
    NOT_NEGOTIATED,
    Outgoing,
    StoreReply,
    contexts_for,
    reply_category,
    send_instance,
)
from node.services.associations import AssociationInfo
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow

log = logging.getLogger("node.qr")


def prefer_requestor_syntaxes(event: Event) -> None:
    """EVT_REQUESTED handler: the requestor's order for contexts it proposes the SCP role in.

    Runs before pynetdicom negotiates (which walks the acceptor's syntaxes in order and
    takes the first the requestor lists): for each storage SOP class the requestor
    wants to be the Storage SCP of (a C-GET), our syntaxes are put in the order of its
    first context of that class; ours it does not list follow, unchanged. Only this
    association's copy of the supported contexts changes. Other contexts keep the
    node's own preference.
    """
    acceptor = event.assoc.acceptor
    request = event.assoc.requestor.primitive
    if request is None or not acceptor.writeable:
        return
    scp_wanted = {
        str(uid) for uid, item in event.assoc.requestor.role_selection.items() if item.scp_role
    }
    if not scp_wanted:
        return
    orders: dict[str, list[str]] = {}
    for proposed in request.presentation_context_definition_list or []:
        uid = str(proposed.abstract_syntax)
        if uid in scp_wanted and uid not in orders:
            orders[uid] = [str(ts) for ts in proposed.transfer_syntax]
    contexts = []
    for context in acceptor.supported_contexts:
        order = orders.get(str(context.abstract_syntax))
        if order is not None:
            ours = [str(ts) for ts in context.transfer_syntax]
            preferred = [ts for ts in dict.fromkeys(order) if ts in ours]
            context.transfer_syntax = [*preferred, *(ts for ts in ours if ts not in preferred)]
        contexts.append(context)
    acceptor.supported_contexts = contexts


class ArchivedInstance(Dataset):
    """One retrieve sub-operation as a handler yields it: the archived file to send."""

    def __init__(self, row: InstanceRow, path: Path) -> None:
        super().__init__()
        # The two attributes pynetdicom reads (Failed SOP Instance UID List); no file
        # meta on purpose: pynetdicom cannot encode this data set, only we send it.
        self.SOPClassUID = row.sop_class_uid
        self.SOPInstanceUID = row.sop_instance_uid
        self.row = row
        self.outgoing = Outgoing(
            path, row.sop_class_uid, row.sop_instance_uid, row.transfer_syntax_uid
        )


@dataclass
class Retrieval:
    """One C-MOVE or C-GET: its sub-operation results and their custody records."""

    archive: Archive
    via: str  # "C-MOVE" or "C-GET"
    requestor: AssociationInfo
    destination: str
    originator: tuple[str, int] | None = None  # Move Originator AE title and Message ID
    matched: int = 0
    completed: int = 0
    warning: int = 0
    failed: list[str] = field(default_factory=list)
    outcome: str = "served"
    _accepted: set[tuple[str, str]] | None = None

    def send(self, assoc: Association, item: ArchivedInstance) -> Dataset:
        """C-STORE ``item``'s file untouched; the peer's status for pynetdicom to count."""
        if self._accepted is None:
            # Only contexts where we may be the Storage SCU (role selection for C-GET).
            self._accepted = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts
                if cx.as_scu
            }
        try:
            status = send_instance(
                assoc, item.outgoing, accepted=self._accepted, originator=self.originator
            )
        except OperationFailed as exc:
            self._result(item.row, None, str(exc))
            raise
        if status == NOT_NEGOTIATED:
            reason = (
                f"{item.row.sop_instance_uid} not sent: {self.destination} accepted no "
                f"context for {item.row.sop_class_uid} in {item.row.transfer_syntax_uid}"
            )
            self._result(item.row, None, reason)
            raise OperationFailed(reason)  # pynetdicom counts it as a failed sub-operation
        self._result(item.row, status, None)
        reply = Dataset()
        reply.Status = counted_as(status)
        return reply

    def _result(self, row: InstanceRow, status: int | None, reason: str | None) -> None:
        # node.scu.store's classification; pynetdicom counts alike (counted_as).
        category = StoreReply.FAILURE if status is None else reply_category(status)
        if category is StoreReply.SUCCESS:
            self.completed += 1
        elif category is StoreReply.WARNING:
            self.warning += 1
        else:
            self.failed.append(row.sop_instance_uid)
            code = "none" if status is None else f"0x{status:04X}"
            log.warning(
                "%s sub-operation %s failed (%s): %s",
                self.via,
                row.sop_instance_uid,
                code,
                reason or "refused by the peer",
            )
            return
        self._record(
            AuditEvent.INSTANCE_SENT,
            study_uid=row.study_uid,
            sop_instance_uid=row.sop_instance_uid,
            via=self.via,
            destination_ae=self.destination,
            calling_ae=self.requestor.calling_ae,
            association_id=self.requestor.id,
            status=f"0x{status:04X}",
            sha256=row.sha256,
        )

    def finish(self, event_name: str) -> None:
        """Log and record the request once it is over (served, refused or cut short)."""
        log.info(
            "%s from %s to %s: %s, %d matched, %d completed, %d warning, %d failed",
            self.via,
            self.requestor.peer,
            self.destination or "?",
            self.outcome,
            self.matched,
            self.completed,
            self.warning,
            len(self.failed),
        )
        self._record(
            event_name,
            calling_ae=self.requestor.calling_ae,
            association_id=self.requestor.id,
            destination_ae=self.destination,
            outcome=self.outcome,
            matched=self.matched,
            completed=self.completed,
            warning=self.warning,
            failed=len(self.failed),
            failed_sop_instance_uids=self.failed,
        )

    def _record(self, event_name: str, **fields: Any) -> None:
        try:
            self.archive.record(event_name, **fields)
        except Exception:  # a sub-operation must not fail because the audit could not
            log.exception("cannot record %s for %s", event_name, self.via)


def send_archived(assoc: Association, retrieval: Retrieval) -> None:
    """Make ``assoc`` send :class:`ArchivedInstance` items with ``retrieval``.

    Other data sets go to pynetdicom's ``send_c_store`` unchanged.
    """

    def divert(dataset: Dataset) -> Dataset | None:
        if isinstance(dataset, ArchivedInstance):
            return retrieval.send(assoc, dataset)
        return None

    divert_c_store(assoc, divert)


# What pynetdicom's sub-operation counter (its Storage status table) reads as success,
# warning and failure: a status it would place elsewhere than node.scu.store does is
# handed to it as its category's first code, so the counts in the C-MOVE/C-GET
# responses are the ones logged and audited.
_PYNETDICOM_CATEGORIES = {
    StoreReply.SUCCESS: (STATUS_SUCCESS, 0x0000),
    StoreReply.WARNING: (STATUS_WARNING, 0xB000),
    StoreReply.FAILURE: (STATUS_FAILURE, 0xC000),
}


def counted_as(status: int) -> int:
    """``status``, or the code pynetdicom counts in the same category as we do."""
    category, code = _PYNETDICOM_CATEGORIES[reply_category(status)]
    if PYNETDICOM_STORE_STATUSES.get(status, (STATUS_FAILURE,))[0] == category:
        return status
    return code


def sub_association_contexts(items: list[ArchivedInstance]) -> list[PresentationContext]:
    """Contexts for the C-MOVE sub-association (node.scu.store.contexts_for).

    When the instances need more (SOP class, transfer syntax) pairs than one association
    can carry, the first pairs are proposed; the rest fail as not negotiated and are
    listed in the Failed SOP Instance UID List.
    """
    outgoing = [item.outgoing for item in items]
    pairs = list(dict.fromkeys((o.sop_class_uid, o.transfer_syntax_uid) for o in outgoing))
    while pairs:
        kept = set(pairs)
        try:
            return contexts_for(
                o for o in outgoing if (o.sop_class_uid, o.transfer_syntax_uid) in kept
            )
        except OperationFailed:
            pairs.pop()
    return []
