"""The node's listening server: each connection goes to the fast path or to pynetdicom.

The accept loop only accepts: everything that can wait on a peer runs on the
connection's own thread, within ``node.acse_timeout`` of the accept (PS3.8 9.1.5): the
TLS handshake (PS3.15 B.9) and the wait for the whole A-ASSOCIATE-RQ, which is *peeked
at* (nothing is consumed), so pynetdicom gets the connection exactly as it arrived when
the request proposes anything the fast path leaves to it. Half-open connections are
counted and refused by :class:`node.services.gate.ConnectionGate`. TLS connections
always go to pynetdicom: a TLS stream cannot be peeked at.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl

from pynetdicom.ae import ApplicationEntity
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from node.net import pdu
from node.net.arrival import Outcome, TlsKind, TlsRefused, await_request, tls_handshake
from node.pynetdicom_compat import ConnectionServer
from node.services.fastpath import FastStoragePath
from node.services.gate import ConnectionGate, Pending

log = logging.getLogger("node.association")


class NodeServer(ConnectionServer):
    """pynetdicom's threaded server with the gate and the storage fast path in front.

    Made by ``AE.make_server(..., server_class=NodeServer, gate=..., fast_path=...,
    tls=...)``, which passes its extra keywords on to this constructor. ``tls`` is the
    node's own: pynetdicom's ``ssl_context`` would run the handshake in the accept loop.
    """

    def __init__(
        self,
        ae: ApplicationEntity,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[PresentationContext],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[EventHandlerType] | None = None,
        *,
        gate: ConnectionGate,
        fast_path: FastStoragePath | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.gate = gate
        self.fast_path = fast_path
        self.tls = tls
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers)

    def serve_connection(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        address = str(client_address[0])
        pending = self.gate.open(request, address, self.tls is not None)
        if pending is None:
            return
        try:
            if self.tls is not None:
                self._serve_tls(request, client_address, pending)
            else:
                self._serve_plain(request, client_address, pending)
        except Exception:  # a bug must cost this connection only, never the node
            log.exception("connection from %s failed", address)
            self.gate.refuse(pending, "internal-error", "see the log")
            _close(request)

    def _serve_tls(
        self, raw: socket.socket, client_address: tuple[str, int], pending: Pending
    ) -> None:
        assert self.tls is not None
        try:
            request = tls_handshake(raw, self.tls, pending.deadline)
        except TlsRefused as exc:
            if exc.kind is TlsKind.CLOSED:
                self.gate.closed(pending, str(exc))
            else:
                self.gate.refuse(pending, exc.kind.value, str(exc))
            _close(raw)
            return
        self._to_pynetdicom(request, client_address, pending, complete=False)

    def _serve_plain(
        self, request: socket.socket, client_address: tuple[str, int], pending: Pending
    ) -> None:
        arrival = await_request(request, pending.deadline)
        gate = self.gate
        if arrival.outcome is Outcome.CLOSED:
            gate.closed(pending, arrival.detail)
            _close(request)
            return
        if arrival.outcome is Outcome.TIMEOUT:
            message = f"no complete A-ASSOCIATE-RQ within {gate.acse_timeout:g}s ({arrival.detail})"
            gate.refuse(pending, "acse-timeout", message)
            _close(request)  # ARTIM expired in Sta2: close the connection (PS3.8 AA-2)
            return
        if arrival.outcome is Outcome.MALFORMED:
            gate.refuse(pending, "malformed-request", arrival.detail)
            # An unrecognised or unexpected first PDU: A-ABORT (PS3.8 Table 9-10, AA-1).
            abort = pdu.encode_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_UNEXPECTED_PDU)
            with contextlib.suppress(OSError):
                request.sendall(abort)
            _close(request)
            return
        if arrival.outcome is Outcome.PARTLY:
            self._to_pynetdicom(request, client_address, pending, complete=False)
            return
        if not gate.complete(pending):
            _close(request)
            return
        fast = self.fast_path
        if fast is not None and arrival.request is not None and fast.takes(arrival.request):
            try:
                fast.serve(request, client_address, arrival.request)
            except Exception:  # a bug must cost this association only, never the node
                log.exception("fast-path association from %s failed", client_address)
            finally:
                request.close()
            return
        self._to_pynetdicom(request, client_address, pending, complete=True)

    def _to_pynetdicom(
        self,
        request: socket.socket,
        client_address: tuple[str, int],
        pending: Pending,
        complete: bool,
    ) -> None:
        if not complete:
            self.gate.hand_over(pending, request)
        # pynetdicom reads a PDU with blocking recv() calls: without a timeout, a peer
        # that stalls mid-PDU (or vanishes without a FIN) holds its reader thread, and an
        # association slot, for ever, and a stopping node cannot exit. A read that waits
        # network_timeout ends the association as a lost connection (pynetdicom Evt17).
        request.settimeout(self.ae.network_timeout)
        try:
            self.to_pynetdicom(request, client_address)
        finally:
            self.gate.handed()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
