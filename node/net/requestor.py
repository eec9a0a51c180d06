"""The storage fast path, requestor side: an association that sends C-STORE requests.

Why it exists: pynetdicom's DUL thread moves one P-DATA PDU per iteration of a polling
loop, so a 0.5 MB instance in 16 KiB PDUs costs milliseconds before the peer even sees
it. Here the calling thread writes the whole message (every PDU header and fragment, as
views into the stored bytes) with ``sendmsg`` and reads the response itself.

Scope, deliberately narrow: storage contexts proposed without role selection, extended
negotiation or user identity, one operation outstanding at a time (PS3.7 D.3.3.3), plain
TCP. TLS associations stay with pynetdicom (``node.scu.associate``): ``sendmsg`` is not
available on an ``ssl.SSLSocket``.

The state machine is the requestor half of PS3.8 9.2: transport connect and
A-ASSOCIATE-RQ (Sta4, Sta5) within the ACSE timeout, answered by AC or RJ; P-DATA both
ways (Sta6); A-RELEASE-RQ answered by RP within the ACSE timeout (Sta7, with the release
collision of Sta9/Sta11); an A-ABORT for any PDU out of place (PS3.8 Table 9-10, AA-8)
and on a DIMSE timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from node.net import dimse, pdu
from node.net.link import Link, Message, PeerAborted
from node.net.pdu import AssociateAccept, PduError, ProposedContext

# C-STORE priorities (PS3.7 9.1.1.1.3).
PRIORITY_MEDIUM = 0x0000

# A-ASSOCIATE-RJ fields in words (PS3.8 Table 9-21).
_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_SOURCES = {
    1: "service-user",
    2: "service-provider (ACSE)",
    3: "service-provider (presentation)",
}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


class ConnectFailed(ConnectionError):
    """No transport connection to the peer (PS3.8 9.2, AE-1): refused, unreachable, timed out."""


class AssociationRejected(ConnectionError):
    """The peer answered the A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ (PS3.8 9.3.4)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        self.result = result
        self.source = source
        self.reason = reason
        super().__init__(
            f"{_RESULTS.get(result, f'result {result}')}, "
            f"{_SOURCES.get(source, f'source {source}')}: "
            f"{_REASONS.get((source, reason), f'reason {reason}')}"
        )


@dataclass(frozen=True, slots=True)
class RequestorSettings:
    """Who we are, whom we call, and how long we wait (None: no limit)."""

    calling_ae: str
    called_ae: str
    host: str
    port: int
    max_pdu: int  # our Maximum Length Received (PS3.8 D.1); 0 means unlimited
    acse_timeout: float | None  # TCP connect, A-ASSOCIATE-AC/RJ, A-RELEASE-RP
    network_timeout: float | None  # writing a message
    dimse_timeout: float | None  # waiting for a response
    implementation_class_uid: str
    implementation_version_name: str


@dataclass(frozen=True, slots=True)
class StoreResponse:
    """The C-STORE-RSP fields the sender acts on (PS3.7 9.3.1.2)."""

    status: int
    error_comment: str | None


def request_association(
    settings: RequestorSettings, contexts: Sequence[ProposedContext]
) -> Association:
    """Connect and negotiate; an established association, or an exception.

    Raises :class:`ConnectFailed`, :class:`AssociationRejected`,
    :class:`~node.net.link.PeerAborted`, :class:`~node.net.link.PeerClosed`,
    :class:`~node.net.pdu.PduError` (an answer that is not a valid A-ASSOCIATE-AC/RJ) or
    another :class:`OSError` (a timeout waiting for the answer).
    """
    address = (settings.host, settings.port)
    try:
        # The socket keeps the ACSE timeout for the answer (the ARTIM timer of Sta5).
        sock = socket.create_connection(address, settings.acse_timeout)
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ConnectFailed(f"no connection to {settings.host}:{settings.port}: {why}") from exc
    link = Link(sock, settings.max_pdu)
    try:
        link.set_timeout(settings.acse_timeout)
        # Without it the last segment of each message waits for the peer's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = pdu.encode_associate_rq(
            settings.called_ae,
            settings.calling_ae,
            list(contexts),
            settings.max_pdu,
            settings.implementation_class_uid,
            settings.implementation_version_name,
        )
        link.send([request])
        accept = _answer(link)
    except PduError:
        link.abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_UNEXPECTED_PDU)
        sock.close()
        raise
    except BaseException:
        sock.close()
        raise
    return Association(link, settings, accept, contexts)


def _answer(link: Link) -> AssociateAccept:
    """The A-ASSOCIATE-AC, or the rejection or abort that came instead (Sta5)."""
    pdu_type, body = link.read_pdu()
    if pdu_type == pdu.ASSOCIATE_AC:
        return pdu.decode_associate_ac(bytes(body))
    if pdu_type == pdu.ASSOCIATE_RJ:
        link.shutdown()
        raise AssociationRejected(*pdu.decode_associate_rj(bytes(body)))
    if pdu_type == pdu.ABORT:
        link.shutdown()
        raise PeerAborted(*pdu.decode_abort(bytes(body)))
    raise PduError(f"PDU type 0x{pdu_type:02X} in answer to an A-ASSOCIATE-RQ")


class Association:
    """An established association on which we are the Storage SCU."""

    def __init__(
        self,
        link: Link,
        settings: RequestorSettings,
        accept: AssociateAccept,
        proposed: Sequence[ProposedContext],
    ) -> None:
        self.link = link
        self.settings = settings
        # The peer's Maximum Length Received: our P-DATA PDUs must fit it (0: no limit).
        self.peer_max = accept.max_length
        offered = {cx.id: cx for cx in proposed}
        self.accepted: dict[tuple[str, str], int] = {}
        for result in accept.contexts:
            cx = offered.get(result.id)
            # A syntax we did not propose cannot be used, whatever the peer says.
            if (
                cx is not None
                and result.result == pdu.CONTEXT_ACCEPTED
                and result.transfer_syntax in cx.transfer_syntaxes
            ):
                self.accepted.setdefault((cx.abstract_syntax, result.transfer_syntax), cx.id)
        self.is_open = True
        self._message_id = 0

    def store(
        self,
        context_id: int,
        sop_class: str,
        sop_instance: str,
        data: bytes | memoryview,
        *,
        originator: tuple[str, int] | None = None,
        priority: int = PRIORITY_MEDIUM,
    ) -> StoreResponse:
        """C-STORE ``data`` (a data set encoded in the context's syntax); the response.

        Any failure leaves the association aborted and closed, and is raised:
        :class:`~node.net.link.PeerAborted`, :class:`~node.net.link.PeerClosed`,
        :class:`~node.net.pdu.PduError` (an invalid response) or :class:`OSError`
        (including a network or DIMSE timeout).
        """
        if not self.is_open:
            raise ConnectionError("the association is no longer open")
        self._message_id = self._message_id % 0xFFFF + 1  # Message ID is US, never 0
        command = dimse.store_request(
            self._message_id, sop_class, sop_instance, priority, originator=originator
        )
        try:
            self._set_timeout(self.settings.network_timeout)
            self.link.send_message(context_id, command, data, self.peer_max)
            self._set_timeout(self.settings.dimse_timeout)
            message = self.link.read_message()
            return self._response(message, context_id)
        except PeerAborted:
            self._close()
            raise
        except PduError:
            self.abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_UNEXPECTED_PDU)
            raise
        except OSError:
            # The DIMSE timeout or a lost connection: the service user gives up (PS3.7 9.1.1.2).
            self.abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_REASON_NOT_SPECIFIED)
            raise

    def _response(self, message: Message | int, context_id: int) -> StoreResponse:
        if not isinstance(message, Message):
            raise PduError(f"PDU type 0x{message:02X} instead of a C-STORE-RSP")
        command = message.command
        if dimse.us(command, dimse.COMMAND_FIELD) != dimse.C_STORE_RSP:
            raise PduError("the answer to a C-STORE-RQ is not a C-STORE-RSP")
        if dimse.us(command, dimse.MESSAGE_ID_BEING_RESPONDED_TO) != self._message_id:
            raise PduError("the C-STORE-RSP answers another message")
        if message.context_id != context_id:
            raise PduError("the C-STORE-RSP came on another presentation context")
        status = dimse.us(command, dimse.STATUS)
        if status is None:
            raise PduError("the C-STORE-RSP has no Status")
        comment = dimse.text(command, dimse.ERROR_COMMENT) or None
        return StoreResponse(status, comment)

    def release(self) -> None:
        """A-RELEASE-RQ, then wait for the A-RELEASE-RP and close (PS3.8 7.2).

        A release that does not complete ends in an A-ABORT, and is raised.
        """
        if not self.is_open:
            return
        try:
            self._set_timeout(self.settings.acse_timeout)
            self.link.send([pdu.encode_release_rq()])
            while True:
                pdu_type, body = self.link.read_pdu()
                if pdu_type == pdu.RELEASE_RP:
                    break
                if pdu_type == pdu.RELEASE_RQ:
                    # Release collision: the requestor answers first, then awaits the
                    # acceptor's RP (PS3.8 9.2.2, Sta9 then Sta11).
                    self.link.send([pdu.encode_release_rp()])
                elif pdu_type == pdu.ABORT:
                    raise PeerAborted(*pdu.decode_abort(bytes(body)))
                elif pdu_type != pdu.P_DATA_TF:  # P-DATA may still arrive in Sta7
                    raise PduError(f"PDU type 0x{pdu_type:02X} while releasing")
        except PeerAborted:
            self._close()
            raise
        except (OSError, PduError):
            self.abort()
            raise
        self._close()

    def abort(
        self, source: int = pdu.ABORT_SOURCE_USER, reason: int = pdu.ABORT_REASON_NOT_SPECIFIED
    ) -> None:
        """A-ABORT the association and close the connection (PS3.8 7.3)."""
        if self.is_open:
            self.link.abort(source, reason)
        self._close()

    def _close(self) -> None:
        self.is_open = False
        self.link.shutdown()
        self.link.sock.close()

    def _set_timeout(self, timeout: float | None) -> None:
        self.link.set_timeout(timeout)
