"""The storage fast path wired to the node: access control, custody and the C-STORE handler.

``node.net.acceptor`` speaks the protocol; this module answers its questions with the
same policy, registry and :class:`StoreService` the pynetdicom path uses, so an instance
gets the same checks, custody record and status whichever path carried it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from node.access import AccessPolicy
from node.config import NodeConfig
from node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.net import dimse
from node.net.acceptor import (
    RJ_PERMANENT,
    RJ_REASON_LOCAL_LIMIT_EXCEEDED,
    RJ_SOURCE_PROVIDER_PRESENTATION,
    RJ_SOURCE_USER,
    RJ_TRANSIENT,
    AcceptorSettings,
    AssociationHandlers,
    Refusal,
    StorageAcceptor,
)
from node.net.contexts import (
    QR_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION_TRANSFER_SYNTAXES,
    storage_sop_classes,
)
from node.net.pdu import AcceptedContext, AssociateRequest
from node.services.associations import AssociationInfo, AssociationRegistry
from node.services.contexts import mpps_context, verification_context
from node.services.inflight import InFlight
from node.services.store import StoreService

log = logging.getLogger("node.association")


class _Association:
    """One fast-path association's handlers: the registry key for its custody info."""

    def __init__(self, path: FastStoragePath) -> None:
        self._path = path
        self.info: AssociationInfo | None = None
        self._followups: list[Callable[[], None]] = []

    def store(
        self,
        context: AcceptedContext,
        abstract_syntax: str,
        command: dimse.Command,
        data: bytes | None,
    ) -> tuple[int, str | None]:
        assert self.info is not None  # set by admit() before the AC goes out
        status, comment = self._path.store.receive(
            self.info,
            sop_class_uid=dimse.text(command, dimse.AFFECTED_SOP_CLASS_UID),
            sop_instance_uid=dimse.text(command, dimse.AFFECTED_SOP_INSTANCE_UID),
            context_sop_class_uid=abstract_syntax,
            transfer_syntax_uid=context.transfer_syntax,
            dataset=data,
            followups=self._followups,
        )
        return int(status), comment

    def replied(self) -> None:
        followups, self._followups = self._followups, []
        for followup in followups:
            followup()

    def ended(self, how: str, detail: str | None) -> None:
        self._path.registry.ended(self, how, detail)


class FastStoragePath:
    """Decides which associations the fast path takes, and serves them."""

    def __init__(self, config: NodeConfig, registry: AssociationRegistry, store: StoreService):
        cfg = config.node
        self.registry = registry
        self.store = store
        self.policy: AccessPolicy = registry.policy
        self.acse_timeout = cfg.acse_timeout
        storage = tuple(str(ts) for ts in STORAGE_TRANSFER_SYNTAXES)
        contexts = {str(uid): storage for uid in storage_sop_classes()}
        contexts[str(verification_context().abstract_syntax)] = tuple(
            str(ts) for ts in VERIFICATION_TRANSFER_SYNTAXES
        )
        self.settings = AcceptorSettings(
            ae_title=cfg.ae_title,
            max_pdu=cfg.max_pdu,
            network_timeout=cfg.network_timeout,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            contexts=contexts,
        )
        # Services only pynetdicom serves: a request proposing any goes there whole.
        self._elsewhere = {str(mpps_context().abstract_syntax), *(str(u) for u in QR_SOP_CLASSES)}
        self._acceptors: set[StorageAcceptor] = set()
        self._lock = threading.Lock()
        self._running = InFlight()
        self.served = 0  # connections taken by the fast path (for status and tests)

    def takes(self, request: AssociateRequest) -> bool:
        """True for a storage/verification-only request with no negotiation we leave out."""
        if request.other_user_items:
            return False
        if not (request.calling_ae.isascii() and request.called_ae.isascii()):
            # An AE title outside ISO 646 (PS3.8 9.3.2): pynetdicom's decoder refuses the
            # whole request, so this one gets the same answer as with the fast path off.
            return False
        return not any(cx.abstract_syntax in self._elsewhere for cx in request.contexts)

    def serve(self, sock: socket.socket, address: Any, request: AssociateRequest) -> None:
        """Serve one association to its end, on the calling (connection) thread."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        acceptor = StorageAcceptor(sock, str(address[0]), request, self.settings)
        with self._lock:
            self._acceptors.add(acceptor)
            self.served += 1
        try:
            with self._running.track():
                acceptor.run(self)
        finally:
            with self._lock:
                self._acceptors.discard(acceptor)

    def admit(self, request: AssociateRequest, address: str) -> Refusal | AssociationHandlers:
        rejection = self.policy.check(request.calling_ae, request.called_ae, address)
        if rejection is not None:
            self.registry.rejected(request.calling_ae, request.called_ae, address, rejection)
            return Refusal(RJ_PERMANENT, RJ_SOURCE_USER, int(rejection.reason))
        if self.registry.full():
            self.registry.log_full(request.calling_ae, address)
            return Refusal(
                RJ_TRANSIENT, RJ_SOURCE_PROVIDER_PRESENTATION, RJ_REASON_LOCAL_LIMIT_EXCEEDED
            )
        association = _Association(self)
        association.info = self.registry.accepted(association, request.calling_ae, address)
        return association

    def active(self) -> int:
        return self._running.count

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no fast-path association is left, or the monotonic ``deadline``."""
        return self._running.wait_idle(max(0.0, deadline - time.monotonic()))

    def abort_all(self) -> None:
        with self._lock:
            acceptors = list(self._acceptors)
        for acceptor in acceptors:
            acceptor.abort()
