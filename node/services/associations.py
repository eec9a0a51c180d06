"""Association bookkeeping: access control at A-ASSOCIATE, custody records, one log line.

The access decision itself is domain code (:mod:`node.access`); this module only plugs it
into pynetdicom's acceptor negotiation and records the outcome.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import A_ASSOCIATE

from node.access import AccessPolicy, Rejection
from node.config import Role
from node.net.acceptor import (  # A-ASSOCIATE-RJ fields, PS3.8 9.3.4
    ABORTED_BY_NODE,
    ABORTED_BY_PEER,
    DUPLICATE_CONTEXT_REFUSAL,
    RJ_PERMANENT,
    RJ_REASON_LOCAL_LIMIT_EXCEEDED,
    RJ_SOURCE_PROVIDER_PRESENTATION,
    RJ_SOURCE_USER,
    RJ_TRANSIENT,
    duplicate_context_ids,
)
from node.pynetdicom_compat import Refusal, check_before_negotiation, sent_abort
from node.services.custody import CustodyRecorder
from node.storage.archive import Archive
from node.storage.audit import AuditEvent

log = logging.getLogger("node.association")


@dataclass
class AssociationInfo:
    """What we know of one accepted association."""

    id: str
    calling_ae: str
    address: str
    roles: frozenset[Role]
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    failures: int = 0

    @property
    def peer(self) -> str:
        return f"{self.calling_ae}@{self.address}"


class AssociationRegistry:
    """Tracks accepted associations and records their custody events."""

    def __init__(
        self,
        policy: AccessPolicy,
        archive: Archive,
        max_associations: int | None = None,
        custody: CustodyRecorder | None = None,
    ) -> None:
        self.policy = policy
        self.archive = archive
        # Association records must not refuse or end an association when the database
        # cannot be written: they wait in memory (node.services.custody).
        self.custody = custody or CustodyRecorder(archive)
        self.max_associations = max_associations
        # Keyed by the pynetdicom Association, or by the fast path's own association.
        self._infos: weakref.WeakKeyDictionary[object, AssociationInfo] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
        ]

    def info(self, assoc: Association) -> AssociationInfo:
        with self._lock:
            found = self._infos.get(assoc)
        if found is None:  # accepted before our handler ran: should not happen
            found = self._register(assoc)
        return found

    def count(self) -> int:
        """Associations in progress, on either path."""
        with self._lock:
            return len(self._infos)

    def full(self) -> bool:
        """True when another association would exceed ``node.max_associations``."""
        return self.max_associations is not None and self.count() >= self.max_associations

    def log_full(self, calling_ae: str, address: str) -> None:
        """Log and record an association refused at ``node.max_associations``."""
        message = f"{self.max_associations} associations in progress"
        log.warning("association from %s@%s refused: %s", calling_ae, address, message)
        self.custody.record(
            AuditEvent.ASSOCIATION_REJECTED,
            calling_ae=calling_ae,
            peer_address=address,
            reason="association-limit",
            message=message,
        )

    def active(self) -> list[AssociationInfo]:
        with self._lock:
            return list(self._infos.values())

    def rejected(self, calling: str, called: str, address: str, rejection: Rejection) -> None:
        log.warning("association rejected from %s@%s: %s", calling, address, rejection.message)
        self.custody.record(
            AuditEvent.ASSOCIATION_REJECTED,
            calling_ae=calling,
            called_ae=called,
            peer_address=address,
            reason=rejection.reason.name.lower().replace("_", "-"),
            message=rejection.message,
        )

    def _on_conn_open(self, event: Event) -> None:
        if event.assoc.is_acceptor:
            check_before_negotiation(event.assoc, self._check)

    def _check(self, assoc: Association, request: A_ASSOCIATE) -> Refusal | None:
        """Our access decision on an A-ASSOCIATE-RQ, before pynetdicom's negotiation."""
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        address = str(assoc.requestor.address)
        repeated = duplicate_context_ids(
            cx.context_id or 0 for cx in request.presentation_context_definition_list
        )
        if repeated:  # the fast path's answer too (node.net.acceptor)
            log.warning(
                "association from %s@%s rejected: presentation context ID %s proposed twice",
                calling,
                address,
                ", ".join(str(i) for i in repeated),
            )
            return DUPLICATE_CONTEXT_REFUSAL
        rejection = self.policy.check(calling, called, address)
        if rejection is None and self.full():
            # pynetdicom counts only its own associations; ours include the fast path's.
            self.log_full(calling, address)
            return (RJ_TRANSIENT, RJ_SOURCE_PROVIDER_PRESENTATION, RJ_REASON_LOCAL_LIMIT_EXCEEDED)
        if rejection is None:
            return None
        assoc.requestor.ae_title = calling
        self.rejected(calling, called, address, rejection)
        return (RJ_PERMANENT, RJ_SOURCE_USER, int(rejection.reason))

    def accepted(self, key: object, calling_ae: str, address: str) -> AssociationInfo:
        """Register an accepted association under ``key`` and record its custody event."""
        info = AssociationInfo(
            id=uuid.uuid4().hex,
            calling_ae=calling_ae,
            address=address,
            roles=self.policy.roles(calling_ae),
        )
        with self._lock:
            self._infos[key] = info
        self.custody.record(
            AuditEvent.ASSOCIATION_ACCEPTED,
            association_id=info.id,
            calling_ae=info.calling_ae,
            peer_address=info.address,
        )
        return info

    def ended(self, key: object, how: str, detail: str | None = None) -> None:
        """Forget the association under ``key``; one log line with what it did."""
        with self._lock:
            info = self._infos.pop(key, None)
        if info is None:
            return
        log.info(
            "association %s from %s %s after %.1fs: %d stored, %d duplicates, %d failed%s",
            info.id[:8],
            info.peer,
            how,
            time.monotonic() - info.started,
            info.stored,
            info.duplicates,
            info.failures,
            f" ({detail})" if detail else "",
        )

    def _register(self, assoc: Association) -> AssociationInfo:
        calling = str(assoc.requestor.ae_title).strip()
        return self.accepted(assoc, calling, str(assoc.requestor.address))

    def _on_accepted(self, event: Event) -> None:
        if event.assoc.is_acceptor:
            self._register(event.assoc)

    def _on_ended(self, event: Event) -> None:
        if event.event is evt.EVT_RELEASED:
            how = "released"
        elif sent_abort(event.assoc):
            # pynetdicom marks the A-ABORT it sent itself (a timeout, our stop, a guard).
            how = ABORTED_BY_NODE
        else:
            how = ABORTED_BY_PEER
        self.ended(event.assoc, how)
