"""Query/Retrieve SCP (PS3.4 Annex C) over the node's own archive: C-FIND, C-MOVE, C-GET.

The handlers follow pynetdicom 3's generator protocol and stay thin: check the peer's
role, read the identifier with :mod:`node.storage.query`, map domain errors to named
statuses. pynetdicom counts the sub-operations and builds every response: Pending, the
final one with the Completed/Failed/Warning counts and the Failed SOP Instance UID List,
Cancel.

Sub-operations (the archived files sent untouched, the C-GET transfer syntax choice)
are :mod:`node.services.sub_operations`.

pynetdicom's C-MOVE can answer only 0xA801 before the sub-association is open. A peer
without the ``retrieve`` role is therefore answered 0xA801 (it has no destination), and
an invalid identifier gets 0xA900 after the sub-association to a known destination.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.events import Event

from node.config import NodeConfig, Role
from node.config.destinations import move_destination
from node.errors import InvalidRequest, StorageError
from node.net.contexts import QR_FIND_SOP_CLASSES, QR_GET_SOP_CLASSES, QR_MOVE_SOP_CLASSES
from node.net.status import QueryRetrieveStatus, Service
from node.net.statusmap import status_dataset, status_for
from node.net.tls import client_context
from node.scu.associate import set_nodelay
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.contexts import verification_context
from node.services.sub_operations import (
    ArchivedInstance,
    Retrieval,
    send_archived,
    sub_association_contexts,
)
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


def _model(event: Event) -> InformationModel:
    return _MODELS[str(event.request.AffectedSOPClassUID)]


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
        contexts = sub_association_contexts(items) or [verification_context()]
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
