"""Query/Retrieve SCP (PS3.4 Annex C) over the node's own archive: C-FIND, C-MOVE, C-GET.

The handlers follow pynetdicom 3's generator protocol and stay thin: check the peer's
role, read the identifier with :mod:`node.storage.query`, map domain errors to named statuses.
pynetdicom counts the sub-operations and builds every response: Pending, the final one
with the Completed/Failed/Warning counts and the Failed SOP Instance UID List, Cancel.

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

pynetdicom's C-MOVE can answer only 0xA801 before the sub-association is open. A peer
without the ``retrieve`` role is therefore answered 0xA801 (it has no destination), and
an invalid identifier gets 0xA900 after the sub-association to a known destination.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS as PYNETDICOM_STORE_STATUSES

from node.config import NodeConfig, Role
from node.config.destinations import move_destination
from node.errors import InvalidRequest, OperationFailed, StorageError
from node.net.contexts import QR_FIND_SOP_CLASSES, QR_GET_SOP_CLASSES, QR_MOVE_SOP_CLASSES
from node.net.status import QueryRetrieveStatus, Service
from node.net.statusmap import status_dataset, status_for
from node.net.tls import client_context
from node.pynetdicom_compat import divert_c_store
from node.scu.associate import set_nodelay
from node.scu.store import (
    NOT_NEGOTIATED,
    Outgoing,
    StoreReply,
    contexts_for,
    reply_category,
    send_instance,
)
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.contexts import verification_context
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow
from node.storage.query.find import find
from node.storage.query.identifier import parse_find, parse_retrieve
from node.storage.query.model import InformationModel
from node.storage.query.retrieve import instances_to_retrieve

log = logging.getLogger("node.qr")

# Each tuple of Q/R SOP classes holds the Patient Root one, then the Study Root one.
_MODELS = {
    str(uid): model
    for group in (QR_FIND_SOP_CLASSES, QR_MOVE_SOP_CLASSES, QR_GET_SOP_CLASSES)
    for uid, model in zip(
        group, (InformationModel.PATIENT_ROOT, InformationModel.STUDY_ROOT), strict=True
    )
}

# What a handler yields after the sub-operation count: (status, identifier or stand-in).
Reply = tuple[int | Dataset, Dataset | None]


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


def _model(event: Event) -> InformationModel:
    return _MODELS[str(event.request.AffectedSOPClassUID)]


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
        reply.Status = _counted_as(status)
        return reply

    def _result(self, row: InstanceRow, status: int | None, reason: str | None) -> None:
        # node.scu.store's classification; pynetdicom counts alike (_counted_as).
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


@dataclass
class QueryRetrieveService:
    config: NodeConfig
    archive: Archive
    associations: AssociationRegistry

    def handle_find(self, event: Event) -> Iterator[Reply]:
        """EVT_C_FIND handler (PS3.4 C.4.1)."""
        info = self.associations.info(event.assoc)
        if Role.QUERY not in info.roles:
            log.warning("C-FIND refused: %s has no query role", info.peer)
            yield (
                status_dataset(
                    QueryRetrieveStatus.FAILURE_REFUSED_NOT_AUTHORIZED, "peer has no query role"
                ),
                None,
            )
            return
        try:
            query = parse_find(_model(event), event.identifier)
            matches = find(self.archive.engine, query, self.config.node.ae_title)
            pending = (
                QueryRetrieveStatus.PENDING_OPTIONAL_KEYS_NOT_SUPPORTED
                if query.unsupported
                else QueryRetrieveStatus.PENDING
            )
            count = 0
            for match in matches:
                if event.is_cancelled:
                    log.info("C-FIND from %s cancelled after %d matches", info.peer, count)
                    yield int(QueryRetrieveStatus.CANCEL), None
                    return
                count += 1
                yield int(pending), match
        except InvalidRequest as exc:  # IdentifierError: it does not fit the model
            log.warning("C-FIND from %s refused: %s", info.peer, exc)
            yield status_dataset(status_for(exc, Service.FIND), str(exc)), None
            return
        except Exception as exc:  # an undecodable identifier or an index failure
            log.exception("C-FIND from %s failed", info.peer)
            yield status_dataset(status_for(exc, Service.FIND), str(exc)), None
            return
        log.info("C-FIND %s from %s: %d matches", query.level, info.peer, count)

    def handle_move(self, event: Event) -> Iterator[Any]:
        """EVT_C_MOVE handler (PS3.4 C.4.2): sub-operations to a configured destination."""
        info = self.associations.info(event.assoc)
        request = event.request
        assert isinstance(request, C_MOVE)  # what pynetdicom hands an EVT_C_MOVE handler
        wanted = str(request.MoveDestination or "").strip()
        retrieval = Retrieval(
            self.archive,
            "C-MOVE",
            info,
            wanted,
            originator=(info.calling_ae, int(request.MessageID or 0)),
        )
        try:
            yield from self._move(event, info, retrieval)
        finally:
            retrieval.finish(AuditEvent.C_MOVE_SERVED)

    def _move(self, event: Event, info: AssociationInfo, retrieval: Retrieval) -> Iterator[Any]:
        if Role.RETRIEVE not in info.roles:
            retrieval.outcome = "refused: peer has no retrieve role"
            # No destination is known for this peer: FAILURE_MOVE_DESTINATION_UNKNOWN.
            yield None, None
            return
        destination = move_destination(self.config, retrieval.destination)
        if destination is None:
            retrieval.outcome = "refused: move destination unknown"
            yield None, None  # pynetdicom answers FAILURE_MOVE_DESTINATION_UNKNOWN
            return
        rows, failure = self._resolve(event, info, retrieval)
        items = [self._item(row) for row in rows]
        contexts = _contexts(items) or [verification_context()]
        tls_args = (client_context(destination.tls), destination.host) if destination.tls else None
        yield (
            destination.host,
            destination.port,
            {
                "ae_title": destination.ae_title,
                "contexts": contexts,
                "max_pdu": self.config.node.max_pdu,
                "tls_args": tls_args,
                "evt_handlers": [
                    (evt.EVT_CONN_OPEN, set_nodelay),
                    # Before pynetdicom sees the association established, so before any send.
                    (evt.EVT_ACCEPTED, lambda e: send_archived(e.assoc, retrieval)),
                ],
            },
        )
        yield from self._sub_operations(event, items, failure, retrieval)

    def handle_get(self, event: Event) -> Iterator[Any]:
        """EVT_C_GET handler (PS3.4 C.4.3): sub-operations on the requestor's association."""
        info = self.associations.info(event.assoc)
        retrieval = Retrieval(self.archive, "C-GET", info, info.calling_ae)
        try:
            yield from self._get(event, info, retrieval)
        finally:
            retrieval.finish(AuditEvent.C_GET_SERVED)

    def _get(self, event: Event, info: AssociationInfo, retrieval: Retrieval) -> Iterator[Any]:
        if Role.RETRIEVE not in info.roles:
            retrieval.outcome = "refused: peer has no retrieve role"
            refusal = (
                QueryRetrieveStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
                "peer has no retrieve role",
            )
            yield from self._sub_operations(event, [], refusal, retrieval)
            return
        rows, failure = self._resolve(event, info, retrieval)
        items = [self._item(row) for row in rows]
        send_archived(event.assoc, retrieval)
        yield from self._sub_operations(event, items, failure, retrieval)

    def _sub_operations(
        self,
        event: Event,
        items: list[ArchivedInstance],
        failure: tuple[QueryRetrieveStatus, str] | None,
        retrieval: Retrieval,
    ) -> Iterator[Any]:
        """The yields after the destination: the count, then one per sub-operation."""
        if failure is not None:
            # pynetdicom answers Success to a count of 0, so a refusal counts one.
            yield 1
            yield status_dataset(*failure), None
            return
        retrieval.matched = len(items)
        # pynetdicom resumes us after the count only once the C-MOVE destination took
        # the sub-association, and after each sub-operation; the outcome says how far.
        retrieval.outcome = "served" if not items else "destination not reached"
        yield len(items)
        retrieval.outcome = "interrupted"
        for done, item in enumerate(items):
            if event.is_cancelled:
                retrieval.outcome = f"cancelled after {done} sub-operations"
                yield int(QueryRetrieveStatus.CANCEL), None
                return
            yield int(QueryRetrieveStatus.PENDING), item
        retrieval.outcome = "served"

    def _resolve(
        self, event: Event, info: AssociationInfo, retrieval: Retrieval
    ) -> tuple[list[InstanceRow], tuple[QueryRetrieveStatus, str] | None]:
        """The instances the identifier names, or the failure status to answer."""
        service: Literal[Service.MOVE, Service.GET] = (
            Service.MOVE if retrieval.via == "C-MOVE" else Service.GET
        )
        try:
            query = parse_retrieve(_model(event), event.identifier)
        except InvalidRequest as exc:  # IdentifierError: it does not fit the model
            retrieval.outcome = f"refused: {exc}"
            log.warning("%s from %s refused: %s", retrieval.via, info.peer, exc)
            return [], (status_for(exc, service), str(exc))
        except Exception as exc:  # pydicom raises many kinds for a broken identifier
            retrieval.outcome = f"failed: identifier cannot be decoded: {exc}"
            return [], (status_for(exc, service), f"identifier cannot be decoded: {exc}")
        try:
            return instances_to_retrieve(self.archive.engine, query), None
        except Exception as exc:
            log.exception("%s from %s: index query failed", retrieval.via, info.peer)
            retrieval.outcome = f"failed: {exc}"
            # The archive cannot read its index: a StorageError, whatever the library raised.
            return [], (status_for(StorageError(str(exc)), service), str(exc))

    def _item(self, row: InstanceRow) -> ArchivedInstance:
        return ArchivedInstance(row, self.archive.files.path(row.path))


# What pynetdicom's sub-operation counter (its Storage status table) reads as success,
# warning and failure: a status it would place elsewhere than node.scu.store does is
# handed to it as its category's first code, so the counts in the C-MOVE/C-GET
# responses are the ones logged and audited.
_PYNETDICOM_CATEGORIES = {
    StoreReply.SUCCESS: (STATUS_SUCCESS, 0x0000),
    StoreReply.WARNING: (STATUS_WARNING, 0xB000),
    StoreReply.FAILURE: (STATUS_FAILURE, 0xC000),
}


def _counted_as(status: int) -> int:
    """``status``, or the code pynetdicom counts in the same category as we do."""
    category, code = _PYNETDICOM_CATEGORIES[reply_category(status)]
    if PYNETDICOM_STORE_STATUSES.get(status, (STATUS_FAILURE,))[0] == category:
        return status
    return code


def _contexts(items: list[ArchivedInstance]) -> list[PresentationContext]:
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
