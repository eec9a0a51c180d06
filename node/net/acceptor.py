"""The storage fast path: one association acceptor for C-STORE and C-ECHO (PS3.8, PS3.7).

Why it exists: pynetdicom moves every PDU through two polling threads and builds a
pydicom data set for every command, which caps a Storage SCP below the rates of DCMTK
and Orthanc. This acceptor reads PDUs straight from the socket on the connection's own
thread and answers from there, so the only per-instance cost left is storing the object.

Scope, deliberately narrow: an association whose request only proposes storage SOP
classes and Verification, without role selection, extended negotiation or user
identity. Everything else (MPPS, Query/Retrieve, TLS) stays with pynetdicom; the
server decides before a byte is consumed (``node.services.server``).

The state machine is the acceptor half of PS3.8 9.2: A-ASSOCIATE-RQ answered with AC or
RJ, P-DATA both ways, A-RELEASE-RQ answered with RP, A-ABORT either way, and an A-ABORT
for any PDU out of place or malformed (PS3.8 Table 9-10, AA-1/AA-8).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from node.net import dimse, pdu
from node.net.link import Link, Message, PeerAborted, PeerClosed
from node.net.pdu import AcceptedContext, AssociateAccept, AssociateRequest, PduError

log = logging.getLogger("node.association")

# A-ASSOCIATE-RJ result / source / reason (PS3.8 9.3.4).
RJ_PERMANENT = 1
RJ_TRANSIENT = 2
RJ_SOURCE_USER = 1
RJ_SOURCE_PROVIDER_ACSE = 2
RJ_SOURCE_PROVIDER_PRESENTATION = 3
RJ_REASON_NO_REASON_GIVEN = 1
RJ_REASON_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
RJ_REASON_LOCAL_LIMIT_EXCEEDED = 2

# A request whose presentation context IDs repeat is not acceptable to the service
# provider (PS3.8 9.3.2.2: each proposed context has its own ID; AE-6 in Table 9-10
# answers an unacceptable A-ASSOCIATE-RQ with A-ASSOCIATE-RJ). Permanent: the same
# request will never be accepted. Both association paths send exactly this.
DUPLICATE_CONTEXT_REFUSAL = (RJ_PERMANENT, RJ_SOURCE_PROVIDER_ACSE, RJ_REASON_NO_REASON_GIVEN)

# How an association ended, in the one log line each gets (both paths say the same).
ABORTED_BY_NODE = "aborted by the node"
ABORTED_BY_PEER = "aborted by the peer"

# Echoed in a refused context's result when the proposed syntax cannot be (its value
# is not significant there, PS3.8 9.3.3.2): Implicit VR Little Endian, the default.
_DEFAULT_TRANSFER_SYNTAX = "1.2.840.10008.1.2"


@dataclass(frozen=True, slots=True)
class AcceptorSettings:
    ae_title: str
    max_pdu: int
    network_timeout: float | None
    implementation_class_uid: str
    implementation_version_name: str
    # Abstract syntax to the transfer syntaxes accepted for it, in our order of preference.
    contexts: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An A-ASSOCIATE-RJ to send (PS3.8 Table 9-21)."""

    result: int
    source: int
    reason: int


class AssociationHandlers(Protocol):
    """What the node does on one accepted association."""

    def store(
        self,
        context: AcceptedContext,
        abstract_syntax: str,
        command: dimse.Command,
        data: bytes | None,
    ) -> tuple[int, str | None]:
        """Store one instance; (status, error comment) for the C-STORE-RSP.

        ``data`` is None when the command announced no data set.
        """

    def replied(self) -> None:
        """The response to the last request has been sent: run what waited for it."""

    def ended(self, how: str, detail: str | None) -> None:
        """The association is over: ``how`` is "released", "aborted by the node" or
        "aborted by the peer"."""


class Admission(Protocol):
    def admit(self, request: AssociateRequest, address: str) -> Refusal | AssociationHandlers:
        """Accept (returning the association's handlers) or refuse an association."""


def duplicate_context_ids(ids: Iterable[int]) -> list[int]:
    """Presentation context IDs proposed more than once, in ascending order."""
    seen: set[int] = set()
    repeated: set[int] = set()
    for context_id in ids:
        (repeated if context_id in seen else seen).add(context_id)
    return sorted(repeated)


def _echoable(uid: str) -> bool:
    return bool(uid) and uid.isascii() and uid.isprintable()


def negotiate(request: AssociateRequest, settings: AcceptorSettings) -> list[AcceptedContext]:
    """One result per proposed context, the transfer syntax chosen in our order.

    Mirrors pynetdicom's acceptor (PS3.8 9.3.3.2): an unknown abstract syntax gets
    result 3, no common transfer syntax result 4; both echo the first proposed syntax,
    unless it is no ASCII text (a UID never is otherwise) and so cannot be sent back.
    """
    results: list[AcceptedContext] = []
    for cx in request.contexts:
        first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
        if not _echoable(first):
            first = _DEFAULT_TRANSFER_SYNTAX
        ours = settings.contexts.get(cx.abstract_syntax)
        if ours is None:
            results.append(AcceptedContext(cx.id, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED, first))
            continue
        chosen = next((ts for ts in ours if ts in cx.transfer_syntaxes), None)
        if chosen is None:
            results.append(
                AcceptedContext(cx.id, pdu.CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED, first)
            )
        else:
            results.append(AcceptedContext(cx.id, pdu.CONTEXT_ACCEPTED, chosen))
    return results


class StorageAcceptor:
    """Serves one association on the calling thread, from A-ASSOCIATE-RQ to its end."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        request: AssociateRequest,
        settings: AcceptorSettings,
    ) -> None:
        self.address = address
        self.request = request
        self.settings = settings
        self.link = Link(sock, settings.max_pdu)
        self._stopping = False

    def run(self, admission: Admission) -> None:
        sock = self.link.sock
        self.link.set_timeout(self.settings.network_timeout)
        try:
            self.link.read_pdu()  # the A-ASSOCIATE-RQ the server peeked at and decoded
            if self.request.application_context != pdu.APPLICATION_CONTEXT_NAME:
                reason = RJ_REASON_APPLICATION_CONTEXT_NOT_SUPPORTED
                self._refuse(Refusal(RJ_PERMANENT, RJ_SOURCE_USER, reason))
                return
            repeated = duplicate_context_ids(cx.id for cx in self.request.contexts)
            if repeated:
                log.warning(
                    "association from %s@%s rejected: presentation context ID %s proposed twice",
                    self.request.calling_ae,
                    self.address,
                    ", ".join(str(i) for i in repeated),
                )
                self._refuse(Refusal(*DUPLICATE_CONTEXT_REFUSAL))
                return
            decision = admission.admit(self.request, self.address)
            if isinstance(decision, Refusal):
                self._refuse(decision)
                return
        except (OSError, PduError) as exc:
            log.warning("association request from %s not completed: %s", self.address, exc)
            self.link.shutdown()
            return
        try:
            how, detail = self._serve(decision)
        except Exception:  # a bug costs this association only, and it still ends
            log.exception("fast-path association from %s failed", self.address)
            self.link.abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_NOT_SPECIFIED)
            how, detail = ABORTED_BY_NODE, "internal error"
        try:
            decision.ended(how, detail)
        finally:
            sock.close()

    def abort(self) -> None:
        """Abort from another thread (the node is stopping)."""
        self._stopping = True
        self.link.abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_REASON_NOT_SPECIFIED)

    def _refuse(self, refusal: Refusal) -> None:
        self.link.send([pdu.encode_associate_rj(refusal.result, refusal.source, refusal.reason)])
        self.link.shutdown()
        self.link.sock.close()

    def _serve(self, handlers: AssociationHandlers) -> tuple[str, str | None]:
        results = negotiate(self.request, self.settings)
        accepted = {cx.id: cx for cx in results if cx.result == pdu.CONTEXT_ACCEPTED}
        abstract = {cx.id: cx.abstract_syntax for cx in self.request.contexts}
        peer_max = self.request.max_length
        try:
            self.link.send(
                [
                    pdu.encode_associate_ac(
                        AssociateAccept(
                            called_ae=self.request.called_ae,
                            calling_ae=self.request.calling_ae,
                            contexts=tuple(results),
                            max_length=self.settings.max_pdu,
                            implementation_class_uid=self.settings.implementation_class_uid,
                            implementation_version_name=self.settings.implementation_version_name,
                        )
                    )
                ]
            )
            while True:
                message = self.link.read_message()
                if message == pdu.RELEASE_RQ:
                    self.link.send([pdu.encode_release_rp()])
                    self.link.shutdown()
                    return "released", None
                if not isinstance(message, Message):
                    raise PduError("A-RELEASE-RP without a release request")
                context = accepted.get(message.context_id)
                if context is None:
                    raise PduError(f"message on unaccepted context {message.context_id}")
                self._answer(handlers, context, abstract[context.id], message, peer_max)
        except PeerAborted as exc:
            self.link.shutdown()
            return ABORTED_BY_PEER, str(exc)
        except (PeerClosed, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            detail = "no PDU within the network timeout" if timed_out else str(exc)
            self.link.abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_NOT_SPECIFIED)
            return ABORTED_BY_NODE, detail
        except PduError as exc:
            log.warning("A-ABORT to %s: %s", self.address, exc)
            self.link.abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_UNEXPECTED_PDU)
            return ABORTED_BY_NODE, str(exc)
        except OSError as exc:
            self.link.shutdown()
            if self._stopping:
                return ABORTED_BY_NODE, "stopping"
            return "aborted", f"connection lost: {exc}"

    def _answer(
        self,
        handlers: AssociationHandlers,
        context: AcceptedContext,
        abstract_syntax: str,
        message: Message,
        peer_max: int,
    ) -> None:
        command = message.command
        field = dimse.us(command, dimse.COMMAND_FIELD)
        if field == dimse.C_CANCEL_RQ:
            return  # nothing to cancel: C-STORE and C-ECHO complete before the next PDU
        if field == dimse.C_ECHO_RQ:
            reply = dimse.response(dimse.C_ECHO_RSP, command, 0)
        elif field == dimse.C_STORE_RQ:
            # Every check of the request (its SOP class against the context's, its UIDs,
            # a missing data set) is the store handler's, shared with the pynetdicom path.
            status, comment = handlers.store(context, abstract_syntax, command, message.data)
            reply = dimse.response(dimse.C_STORE_RSP, command, status, comment)
        else:
            raise PduError(f"DIMSE command 0x{field or 0:04X} is not served on this association")
        self.link.send_message(context.id, reply, None, peer_max)
        handlers.replied()
