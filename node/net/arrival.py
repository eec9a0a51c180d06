"""A transport connection before its association: TLS handshake and the A-ASSOCIATE-RQ wait.

PS3.8 9.1.5: an acceptor waits a bounded time (the ARTIM timer) for the A-ASSOCIATE-RQ
once the transport connection is open, and closes the connection when it expires. Here
that bound is a *deadline* for the whole request: the TLS handshake (PS3.15 B.9) and
every byte of the A-ASSOCIATE-RQ must arrive before it, so a peer sending one byte a
second cannot hold a connection open any longer than a silent one.

Both waits run on the connection's own thread, never in the accept loop. The request is
*peeked at* (MSG_PEEK): nothing is consumed, so whichever implementation serves the
association reads it exactly as it arrived.
"""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import ssl
import time
from dataclasses import dataclass

from node.net import pdu
from node.net.link import timeval
from node.net.pdu import AssociateRequest

# Largest A-ASSOCIATE-RQ peeked at whole (well inside a default socket receive buffer, so
# MSG_WAITALL cannot stall on a full buffer). A longer request (a great many contexts) is
# left to pynetdicom once this much of it has arrived; the deadline still bounds it.
PEEK_LIMIT = 32 * 1024
# Longer than any A-ASSOCIATE-RQ can sensibly be (128 contexts of 64-byte UIDs with many
# transfer syntaxes stay far below): refused as malformed before anyone buffers it.
REQUEST_LIMIT = 1 << 20

_TLS_HANDSHAKE_RECORD = 0x16  # TLS record content type "handshake" (RFC 8446 5.1)


class Outcome(enum.Enum):
    REQUEST = "request"  # the whole A-ASSOCIATE-RQ is buffered (decoded when possible)
    PARTLY = "partly"  # a long A-ASSOCIATE-RQ, PEEK_LIMIT bytes of it buffered
    CLOSED = "closed"  # the peer closed (or reset) before its request was complete
    TIMEOUT = "timeout"  # the deadline passed before the request was complete
    MALFORMED = "malformed"  # the first PDU is not an A-ASSOCIATE-RQ, or absurdly long


@dataclass(frozen=True, slots=True)
class Arrival:
    outcome: Outcome
    received: int = 0  # bytes buffered when the wait ended
    request: AssociateRequest | None = None  # REQUEST only, when our decoder took it
    detail: str = ""


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _peer_closed(sock: socket.socket) -> bool:
    """True when the peer has shut down its side or the connection failed (no wait)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(
        ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0)
    )


def _peek(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    """Up to ``size`` bytes without consuming them, waiting until the deadline; None: none.

    A blocking socket with SO_RCVTIMEO: MSG_WAITALL then waits, in the kernel, until all
    ``size`` bytes are there, the peer closes, or the time is up (the kernel keeps one
    budget over every wait inside the call).
    """
    left = remaining(deadline)
    if left <= 0:
        return None
    sock.settimeout(None)
    # timeval(0) would mean "no limit": never pass less than a millisecond.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(max(left, 0.001)))
    try:
        return sock.recv(size, socket.MSG_PEEK | socket.MSG_WAITALL)
    except (BlockingIOError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(None))


def _short(sock: socket.socket, got: int, what: str) -> Arrival:
    if got and not _peer_closed(sock):
        return Arrival(Outcome.TIMEOUT, got, detail=f"{got} bytes of {what} before the deadline")
    if got:
        return Arrival(Outcome.CLOSED, got, detail=f"closed after {got} bytes of {what}")
    return Arrival(Outcome.CLOSED, 0, detail="closed before sending anything")


def await_request(sock: socket.socket, deadline: float) -> Arrival:
    """Wait until the whole A-ASSOCIATE-RQ is buffered on ``sock`` or ``deadline`` passes."""
    try:
        head = _peek(sock, pdu.HEADER_LENGTH, deadline)
        if head is None:
            return Arrival(Outcome.TIMEOUT, 0, detail="nothing received")
        if len(head) < pdu.HEADER_LENGTH:
            return _short(sock, len(head), "a PDU header")
        pdu_type, length = pdu.parse_header(head)
        if pdu_type != pdu.ASSOCIATE_RQ:
            return Arrival(Outcome.MALFORMED, len(head), detail=f"PDU type 0x{pdu_type:02X} first")
        if length > REQUEST_LIMIT:
            detail = f"A-ASSOCIATE-RQ of {length} bytes (limit {REQUEST_LIMIT})"
            return Arrival(Outcome.MALFORMED, len(head), detail=detail)
        want = min(pdu.HEADER_LENGTH + length, PEEK_LIMIT)
        whole = _peek(sock, want, deadline)
        got = len(whole) if whole is not None else len(head)
        if got < want:
            return _short(sock, got, f"a {pdu.HEADER_LENGTH + length}-byte A-ASSOCIATE-RQ")
        if want < pdu.HEADER_LENGTH + length:
            return Arrival(Outcome.PARTLY, got)
    except OSError as exc:
        return Arrival(Outcome.CLOSED, 0, detail=str(exc))
    assert whole is not None
    try:
        request = pdu.decode_associate_rq(whole[pdu.HEADER_LENGTH :])
    except Exception:  # ours is not the only decoder: pynetdicom answers what it makes of it
        request = None
    return Arrival(Outcome.REQUEST, got, request)


class TlsKind(enum.Enum):
    """Why a TLS handshake was refused; the value is the audit reason."""

    PLAIN_TCP = "tls-plain-tcp"
    NO_CERTIFICATE = "tls-no-client-certificate"
    UNKNOWN_CA = "tls-unknown-ca"
    EXPIRED = "tls-certificate-expired"
    NOT_YET_VALID = "tls-certificate-not-yet-valid"
    BAD_CERTIFICATE = "tls-certificate-rejected"
    PEER_REFUSED = "tls-peer-refused-our-certificate"
    TIMEOUT = "tls-handshake-timeout"
    FAILED = "tls-handshake-failed"
    CLOSED = "tls-closed"  # closed before sending anything: a port probe, not a refusal


class TlsRefused(ConnectionError):
    def __init__(self, kind: TlsKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) behind ssl.SSLCertVerificationError.verify_code.
_VERIFY_KINDS = {
    2: TlsKind.UNKNOWN_CA,  # unable to get issuer certificate
    9: TlsKind.NOT_YET_VALID,
    10: TlsKind.EXPIRED,
    18: TlsKind.UNKNOWN_CA,  # self-signed certificate
    19: TlsKind.UNKNOWN_CA,  # self-signed certificate in chain
    20: TlsKind.UNKNOWN_CA,  # unable to get local issuer certificate
    21: TlsKind.UNKNOWN_CA,  # unable to verify the first certificate
}


def _classify(exc: BaseException) -> TlsKind:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_KINDS.get(exc.verify_code, TlsKind.BAD_CERTIFICATE)
    reason = str(getattr(exc, "reason", "") or "").upper()
    if "DID_NOT_RETURN_A_CERTIFICATE" in reason or "NO_CERTIFICATE" in reason:
        return TlsKind.NO_CERTIFICATE
    if reason.startswith("SSLV3_ALERT") or reason.startswith("TLSV1_ALERT"):
        return TlsKind.PEER_REFUSED  # the peer's alert: it did not accept us
    if isinstance(exc, TimeoutError | socket.timeout):
        return TlsKind.TIMEOUT
    return TlsKind.FAILED


def tls_handshake(sock: socket.socket, context: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    """The server side of the TLS handshake on ``sock``, finished before ``deadline``.

    A first byte that cannot start a TLS record means plain TCP (a DICOM peer without
    TLS, most likely): refused as such without handing OpenSSL the bytes.
    """
    try:
        first = _peek(sock, 1, deadline)
    except OSError as exc:  # a reset before any byte (port scanners do this)
        raise TlsRefused(TlsKind.CLOSED, f"connection failed before a ClientHello: {exc}") from exc
    if first is None:
        raise TlsRefused(TlsKind.TIMEOUT, "no TLS ClientHello before the deadline")
    if not first:
        raise TlsRefused(TlsKind.CLOSED, "closed before a TLS ClientHello")
    if first[0] != _TLS_HANDSHAKE_RECORD:
        what = "an A-ASSOCIATE-RQ" if first[0] == pdu.ASSOCIATE_RQ else f"byte 0x{first[0]:02X}"
        raise TlsRefused(TlsKind.PLAIN_TCP, f"plain TCP on the TLS port ({what} first)")
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        left = remaining(deadline)
        if left <= 0:
            raise TimeoutError("deadline passed")
        tls.settimeout(left)
        tls.do_handshake()
        tls.settimeout(None)
    except TimeoutError as exc:
        tls.close()
        raise TlsRefused(TlsKind.TIMEOUT, "TLS handshake not finished before the deadline") from exc
    except (ssl.SSLError, OSError) as exc:
        tls.close()
        kind = _classify(exc)
        message = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        raise TlsRefused(kind, str(message)) from exc
    return tls


def hard_shutdown(sock: socket.socket) -> None:
    """Shut both directions at the socket level, from any thread.

    It wakes a thread blocked reading (pynetdicom's, or ours); on a TLS socket it goes
    past the SSL layer, which a concurrent reader still holds.
    """
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
