"""Connections not yet associations: the half-open bound, the deadline and every refusal.

A connection is *half-open* from accept until its A-ASSOCIATE-RQ is complete (PS3.8
9.1.5, the ARTIM wait): buffered whole for the node's own acceptor, or decoded by
pynetdicom (its EVT_REQUESTED). Half-open connections are counted apart from
``node.max_associations``, with their own bound (:data:`HALF_OPEN_PER_ASSOCIATION` times
it), so peers that connect and stall cannot keep associations out; each must complete
its request within ``node.acse_timeout`` of being accepted, TLS handshake included, or
it is closed. Every refusal (half-open bound, deadline, malformed request, TLS) is one
log line and one ``association-rejected`` audit record.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType

from node.net import pdu
from node.net.acceptor import (
    RJ_REASON_LOCAL_LIMIT_EXCEEDED,
    RJ_SOURCE_PROVIDER_PRESENTATION,
    RJ_TRANSIENT,
)
from node.net.arrival import hard_shutdown
from node.services.custody import CustodyRecorder
from node.storage.audit import AuditEvent

log = logging.getLogger("node.association")

# Half-open connections allowed per association of ``node.max_associations``: room for
# every legitimate peer to connect while others stall, and a bound on threads and sockets.
HALF_OPEN_PER_ASSOCIATION = 4

_WAITING, _DONE = "waiting", "done"


@dataclass(eq=False)
class Pending:
    """One connection waiting for its A-ASSOCIATE-RQ."""

    sock: socket.socket
    address: str
    deadline: float
    tls: bool
    state: str = _WAITING
    # pynetdicom read a whole PDU on it (EVT_DATA_RECV): closing now is not a probe.
    pdu_seen: bool = False
    started: float = field(default_factory=time.monotonic)


class ConnectionGate:
    """Counts half-open connections and keeps their deadline.

    The connection's own thread keeps the deadline while it waits (socket time limits);
    one watchdog thread keeps it for connections handed to pynetdicom undecoded.
    """

    def __init__(self, custody: CustodyRecorder, acse_timeout: float, max_associations: int):
        self.custody = custody
        self.acse_timeout = acse_timeout
        self.limit = HALF_OPEN_PER_ASSOCIATION * max_associations
        self._lock = threading.Condition()
        self._waiting: set[Pending] = set()
        self._deadlines: list[tuple[float, int, Pending]] = []
        self._order = itertools.count()
        self._watchdog: threading.Thread | None = None
        self._closed = False
        # pynetdicom associations whose request has not been read yet.
        self._by_assoc: weakref.WeakKeyDictionary[Association, Pending] = (
            weakref.WeakKeyDictionary()
        )
        self._handing = threading.local()

    # ------------------------------------------------------------------ counting
    def open(self, sock: socket.socket, address: str, tls: bool) -> Pending | None:
        """Count a new connection; None (refused and closed) past the half-open bound."""
        pending = Pending(sock, address, time.monotonic() + self.acse_timeout, tls)
        with self._lock:
            full = self._closed or len(self._waiting) >= self.limit
            if not full:
                self._waiting.add(pending)
        if full:
            self._refuse_full(pending)
            return None
        return pending

    def count(self) -> int:
        with self._lock:
            return len(self._waiting)

    def complete(self, pending: Pending) -> bool:
        """The request is complete; False when the deadline came first (already refused)."""
        return self._finish(pending)

    def closed(self, pending: Pending, detail: str) -> None:
        """The peer went away before its request: a port probe, not a refusal."""
        if self._finish(pending):
            address = pending.address
            log.info("connection from %s closed before an A-ASSOCIATE-RQ: %s", address, detail)

    def refuse(self, pending: Pending, reason: str, message: str) -> None:
        """Refuse ``pending`` (once): one log line, one audit record; the caller closes."""
        if self._finish(pending):
            self._record(pending.address, reason, message)

    def _finish(self, pending: Pending) -> bool:
        with self._lock:
            if pending.state != _WAITING:
                return False
            pending.state = _DONE
            self._waiting.discard(pending)
            return True

    def _record(self, address: str, reason: str, message: str) -> None:
        self.custody.record(
            AuditEvent.ASSOCIATION_REJECTED, peer_address=address, reason=reason, message=message
        )
        log.warning("connection from %s refused (%s): %s", address, reason, message)

    def _refuse_full(self, pending: Pending) -> None:
        message = f"{self.limit} connections already waiting for their A-ASSOCIATE-RQ"
        self._record(pending.address, "half-open-limit", message)
        sock = pending.sock
        if not pending.tls:
            # Read what arrived so closing does not reset the connection under the answer.
            with contextlib.suppress(OSError):
                sock.recv(65536, socket.MSG_DONTWAIT)
            rj = pdu.encode_associate_rj(
                RJ_TRANSIENT, RJ_SOURCE_PROVIDER_PRESENTATION, RJ_REASON_LOCAL_LIMIT_EXCEEDED
            )
            with contextlib.suppress(OSError):
                sock.send(rj, socket.MSG_DONTWAIT)
        hard_shutdown(sock)
        sock.close()

    # ------------------------------------------------------------------ deadline
    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="ARTIM", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (
                    not self._deadlines or self._deadlines[0][0] > time.monotonic()
                ):
                    wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else None
                    self._lock.wait(wait)
                if self._closed:
                    return
                _, _, pending = heapq.heappop(self._deadlines)
            self._expire(pending)

    def _expire(self, pending: Pending) -> None:
        if pending.state != _WAITING:
            return
        self.refuse(
            pending, "acse-timeout", f"no complete A-ASSOCIATE-RQ within {self.acse_timeout:g}s"
        )
        # Wakes the thread reading it, ours or pynetdicom's; that thread closes the socket.
        hard_shutdown(pending.sock)

    def close_all(self) -> None:
        """The node is stopping: no new connection is counted, waiting ones are shut."""
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._lock.notify()
        for pending in waiting:
            if self._finish(pending):
                log.info("connection from %s closed: the node is stopping", pending.address)
            hard_shutdown(pending.sock)

    # ------------------------------------------------------------------ pynetdicom
    def hand_over(self, pending: Pending, sock: socket.socket) -> None:
        """The next association created on this thread reads ``pending``'s request.

        From here on the deadline is kept by the watchdog, which shuts ``sock`` if
        pynetdicom has not decoded the request by then (its own read would wait for
        ever). Before, the connection's thread keeps it with socket time limits.
        """
        pending.sock = sock
        self._handing.pending = pending
        with self._lock:
            heapq.heappush(self._deadlines, (pending.deadline, next(self._order), pending))
            self._start_watchdog()
            self._lock.notify()

    def handed(self) -> None:
        """The association (if any) for the handed-over connection has been created."""
        self._handing.pending = None

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]

    def _on_conn_open(self, event: Event) -> None:
        pending = getattr(self._handing, "pending", None)
        self._handing.pending = None
        if pending is not None and event.assoc.is_acceptor:
            with self._lock:
                self._by_assoc[event.assoc] = pending

    def _on_requested(self, event: Event) -> None:
        with self._lock:
            pending = self._by_assoc.pop(event.assoc, None)
        if pending is not None:
            # False when the deadline came first: the refusal is recorded and the socket
            # shut, so pynetdicom's answer cannot reach the peer.
            self.complete(pending)

    def _on_data(self, event: Event) -> None:
        with self._lock:
            pending = self._by_assoc.get(event.assoc)
        if pending is not None:
            pending.pdu_seen = True

    def _on_conn_close(self, event: Event) -> None:
        with self._lock:
            pending = self._by_assoc.pop(event.assoc, None)
        if pending is None:
            return
        if pending.pdu_seen:
            self.refuse(pending, "malformed-request", "first PDU is not a valid A-ASSOCIATE-RQ")
        else:
            self.closed(pending, "no whole PDU received")
