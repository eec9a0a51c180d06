"""The one door to pynetdicom's internals (pynetdicom 3.0).

Everything the node needs of pynetdicom that its public API (the AE, ``Association``'s
methods and documented attributes, the events) does not offer is here, one small named
function or class per touch, each saying what it relies on and why the public API does
not suffice. ``tests/unit/test_pynetdicom_compat.py`` holds a contract test per touch,
which fails when a pynetdicom release changes what it relies on; the dependency is pinned
to the minor version those tests cover. No other module of ``node/`` may touch a private
attribute of a pynetdicom object or import one of its internal modules (checked there
too).

The touches serve the acceptor (PS3.8 9.1: the association establishment and the upper
layer state machine, Table 9-10) and the retrieve sub-operations (PS3.4 C.4.2, C.4.3).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset
from pynetdicom import _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu_primitives import A_ASSOCIATE, P_DATA
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger("node.association")

__all__ = [
    "AcceptorCheck",
    "ConnectionServer",
    "Refusal",
    "StoreScreen",
    "UncheckedStore",
    "check_before_negotiation",
    "configure",
    "divert_c_store",
    "ever_connected",
    "on_kill",
    "screen_store_requests",
    "sends_chunked_datasets",
    "sent_abort",
    "serve_in_background",
    "survive_peer_errors",
    "transport_socket",
    "wake_acceptor",
]


# ---------------------------------------------------------------------- configuration
def configure(*, log_identifiers: bool, handler_level: Literal["none", "standard"]) -> None:
    """Set pynetdicom's process-wide options: identifier logging, default log handlers.

    Relies on the module ``pynetdicom._config`` (``LOG_REQUEST_IDENTIFIERS``,
    ``LOG_RESPONSE_IDENTIFIERS``, ``LOG_HANDLER_LEVEL``, ``STORE_SEND_CHUNKED_DATASET``):
    pynetdicom documents these options but offers no function to set them. An outbound
    C-STORE of a ``Path`` always sends the stored bytes from the file (chunked).
    """
    _config.LOG_REQUEST_IDENTIFIERS = log_identifiers
    _config.LOG_RESPONSE_IDENTIFIERS = log_identifiers
    _config.LOG_HANDLER_LEVEL = handler_level
    _config.STORE_SEND_CHUNKED_DATASET = True


def sends_chunked_datasets() -> bool:
    """True when ``Association.send_c_store(path)`` sends the file's bytes unchanged.

    Relies on ``pynetdicom._config.STORE_SEND_CHUNKED_DATASET`` (see :func:`configure`).
    """
    return bool(_config.STORE_SEND_CHUNKED_DATASET)


# ---------------------------------------------------------------------- the listening server
class ConnectionServer(ThreadedAssociationServer):
    """pynetdicom's threaded server that hands each accepted connection to
    :meth:`serve_connection` on the connection's own thread.

    Relies on ``ThreadedAssociationServer.process_request_thread(request,
    client_address)`` being what runs on each connection's thread (socketserver's
    ``ThreadingMixIn``) and creating the acceptor ``Association`` (through
    ``finish_request``); and on ``get_request()`` being where pynetdicom runs the TLS
    handshake. pynetdicom has no hook to look at a connection before it makes an
    association of it, nor to keep a silent TLS peer out of the accept loop.
    """

    # Connection threads must not keep a stopping process alive or pile up in a list;
    # Node.stop() waits for associations itself.
    daemon_threads = True
    block_on_close = False

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        # Accept only: pynetdicom's own get_request runs the TLS handshake here, in the
        # accept loop, where one silent peer stalls every other connection.
        assert self.socket is not None
        sock, address = self.socket.accept()
        return sock, address

    def process_request_thread(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: tuple[str, int] | str,
    ) -> None:
        assert isinstance(request, socket.socket) and isinstance(client_address, tuple)
        self.serve_connection(request, client_address)

    def serve_connection(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Serve one accepted connection (on its own thread); subclasses decide how."""
        self.to_pynetdicom(request, client_address)

    def to_pynetdicom(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Let pynetdicom make an acceptor association of ``request`` (this thread)."""
        super().process_request_thread(request, client_address)


def serve_in_background(ae: ApplicationEntity, server: ThreadedAssociationServer) -> None:
    """What ``ae.start_server(block=False)`` does, for a server of our own class.

    Relies on ``ApplicationEntity._servers``, the list ``AssociationServer.shutdown()``
    removes its server from (it fails if the server is not in it) and
    ``ae.shutdown()`` stops. ``start_server`` accepts no server class, and
    ``make_server`` does not add the server to that list.
    """
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    ae._servers.append(server)


# ---------------------------------------------------------------------- the acceptor's ACSE
# An A-ASSOCIATE-RJ's result, source and reason/diagnostic fields (PS3.8 9.3.4).
Refusal = tuple[int, int, int]
# Before negotiation: None to let pynetdicom negotiate, or the refusal to send.
AcceptorCheck = Callable[[Association, A_ASSOCIATE], Refusal | None]


class _CheckedACSE(ACSE):
    """pynetdicom's ACSE, with a check of the A-ASSOCIATE-RQ before its own negotiation."""

    def __init__(self, assoc: Association, check: AcceptorCheck) -> None:
        super().__init__(assoc)
        self._check = check

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        assert request is not None  # set by pynetdicom before negotiation starts
        refusal = self._check(self.assoc, request)
        if refusal is None:
            super()._negotiate_as_acceptor()
            return
        self.send_reject(*refusal)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


def check_before_negotiation(assoc: Association, check: AcceptorCheck) -> None:
    """Make the acceptor ``assoc`` run ``check`` on the A-ASSOCIATE-RQ before negotiating.

    Call from an EVT_CONN_OPEN handler. Relies on ``Association.acse`` being read when
    the request arrives, and on ``ACSE._negotiate_as_acceptor()`` being the step that
    answers it (after ``requestor.primitive`` is set, and EVT_REQUESTED triggered), the
    refusal then being ``ACSE.send_reject``, EVT_REJECTED and ``Association.kill()`` as
    pynetdicom does for its own checks. EVT_REQUESTED is a notification: its handlers
    cannot refuse, and pynetdicom's own checks (AE titles, its association count) are
    not the node's.
    """
    assoc.acse = _CheckedACSE(assoc, check)


def sent_abort(assoc: Association) -> bool:
    """True when this side sent the A-ABORT (a timeout, our stop, a guard), not the peer.

    Relies on ``Association._sent_abort``, set by ``Association.abort()`` before it
    triggers EVT_ABORTED. The EVT_ABORTED event itself does not say who aborted.
    """
    return bool(assoc._sent_abort)


# ---------------------------------------------------------------------- the transport
def transport_socket(assoc: Association) -> socket.socket | None:
    """The TCP (or TLS) socket under ``assoc``, None before it exists or once closed.

    Relies on ``assoc.dul.socket`` (an ``AssociationSocket``) and its ``socket``
    attribute: pynetdicom does not give handlers the socket (to set TCP_NODELAY).
    """
    wrapper = assoc.dul.socket
    return None if wrapper is None else wrapper.socket


def ever_connected(assoc: Association) -> bool:
    """True when ``assoc``'s socket is marked connected by pynetdicom.

    Relies on ``AssociationSocket._is_connected``: set True on connect (before
    EVT_CONN_OPEN) and False when the socket closes. pynetdicom reports a refused TCP
    connection and a peer that closed without answering alike, as an abort.
    """
    wrapper = assoc.dul.socket
    return wrapper is not None and bool(wrapper._is_connected)


def wake_acceptor(assoc: Association) -> None:
    """Wake an acceptor waiting for its A-ASSOCIATE-RQ: it takes None as its ACSE timeout.

    Relies on the acceptor's ``Association.run_reactor`` waiting on
    ``dul.to_user_queue`` (``DULServiceProvider.receive_pdu``) and on None there ending
    the wait like its ``acse_timeout`` does. pynetdicom waits out ``acse_timeout`` when the
    connection closed before a request could be decoded.
    """
    assoc.dul.to_user_queue.put(None)


def on_kill(assoc: Association, after: Callable[[], None]) -> None:
    """Call ``after`` each time ``assoc.kill()`` has run.

    Relies on ``Association.kill`` being looked up on the instance when pynetdicom ends
    the association (its reactor, the ACSE, the DUL's stop). pynetdicom triggers neither
    EVT_RELEASED nor EVT_ABORTED when its DUL thread stops on a malformed PDU or a peer
    that closed mid-exchange.
    """
    kill = assoc.kill

    def killed() -> None:
        kill()
        after()

    assoc.kill = killed  # type: ignore[method-assign]


# Events a local primitive on the DUL's to-provider queue stands for (PS3.8 Table 9-10):
# the primitive stays on that queue until the event's action takes it.
_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def _tolerant(do_action: Callable[[str], None], dul: DULServiceProvider) -> Callable[[str], None]:
    def step(event: str) -> None:
        try:
            do_action(event)
        except InvalidEventError:
            if event in _LOCAL_EVENTS:
                with contextlib.suppress(queue.Empty):
                    dul.to_provider_queue.get_nowait()
        except Exception:
            if dul.socket is not None:
                dul.socket.close()

    return step


def survive_peer_errors(assoc: Association) -> None:
    """A state machine step that cannot kill pynetdicom's DUL thread.

    Two failures did, each with a traceback, leaving the association registered and its
    thread waiting: an action that fails on peer bytes (an A-ABORT whose source is not
    0, 1 or 2 fails to become a primitive in AA-3), and a local primitive arriving too
    late (the acceptor answers an A-ASSOCIATE-RQ, Evt7/Evt8, after the DUL has already
    aborted on the peer's next, malformed PDU: Sta13 has no entry for it). pynetdicom has
    logged either in one line by then. A late local primitive is dropped (it would be
    offered again on every turn of the DUL loop otherwise): in Sta13 PS3.8 9.2 only
    waits for the transport to close. A failed action closes the transport, which the
    state machine answers as a connection lost (Evt17), ending the association.

    Relies on the DUL thread calling ``dul.state_machine.do_action(event)`` (looked up
    on the instance) for every event, on ``InvalidEventError`` for an event its state
    has no entry for, on a local primitive staying on ``dul.to_provider_queue`` until
    its action takes it, and on ``AssociationSocket.close()`` queueing Evt17.
    """
    machine = assoc.dul.state_machine
    machine.do_action = _tolerant(machine.do_action, assoc.dul)  # type: ignore[method-assign,assignment]


# ---------------------------------------------------------------------- DIMSE: C-STORE-RQ
@dataclass(frozen=True)
class UncheckedStore:
    """A complete C-STORE-RQ as it arrived, before pynetdicom converts it to a primitive.

    ``command_set`` is the raw command set (PS3.7 Annex E), its values not converted by
    pydicom; ``data_set`` the encoded data set, None when the command says there is none.
    """

    context_id: int
    abstract_syntax: str  # of the presentation context it came on
    transfer_syntax: str
    command_set: Dataset
    data_set: BytesIO | None


# The answer to send instead of handing the request to pynetdicom, or None to hand it on.
StoreScreen = Callable[[Association, UncheckedStore], C_STORE | None]


class _ScreeningDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, offering each complete C-STORE-RQ to a screen first."""

    def __init__(self, assoc: Association, screen: StoreScreen) -> None:
        super().__init__(assoc)
        self._screen = screen

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
        message = self.message
        try:
            complete = type(message).decode_msg(message, primitive, self.assoc)
            if not complete:
                return
            if self._answered(message):
                self.message = None
                return
            converted = message.message_to_primitive()
        except Exception as exc:  # peer bytes pynetdicom cannot decode: abort, one line
            log.warning(
                "A-ABORT to %s: invalid DIMSE message (%s: %s)",
                self.assoc.requestor.address,
                type(exc).__name__,
                exc,
            )
            self.message = None
            self.dul.event_queue.put("Evt19")  # AA-8: A-ABORT, as pynetdicom does
            return
        # Decoded and converted once: pynetdicom's own code takes it from here.
        message.decode_msg = lambda *_: True  # type: ignore[method-assign]
        message.message_to_primitive = lambda: converted  # type: ignore[method-assign]
        super().receive_primitive(primitive)

    def _answered(self, message: DIMSEMessage) -> bool:
        if not isinstance(message, C_STORE_RQ):
            return False
        context_id = message.context_id
        context = None if context_id is None else self.assoc._accepted_cx.get(context_id)
        if context_id is None or context is None:
            return False  # pynetdicom aborts a message on an unaccepted context
        request = UncheckedStore(
            context_id=context_id,
            abstract_syntax=str(context.abstract_syntax),
            transfer_syntax=str(context.transfer_syntax[0]),
            command_set=message.command_set,
            data_set=message.data_set,
        )
        response = self._screen(self.assoc, request)
        if response is None:
            return False
        self.send_msg(response, context_id)
        return True


def screen_store_requests(assoc: Association, screen: StoreScreen) -> None:
    """Offer every complete C-STORE-RQ on the acceptor ``assoc`` to ``screen`` first.

    ``screen`` answers a request pynetdicom must not see (it returns the C-STORE
    response to send) or hands it on (None). A message pynetdicom cannot convert at all
    is aborted with one log line (PS3.8 Table 9-10, AA-8), as pynetdicom would, without
    the traceback. Call from an EVT_CONN_OPEN handler.

    Relies on ``Association.dimse`` being read for every P-DATA, on
    ``DIMSEServiceProvider.receive_primitive(primitive)`` calling
    ``message.decode_msg(primitive, assoc)`` and then ``message.message_to_primitive()``
    on ``self.message`` (a ``DIMSEMessage`` that becomes a ``C_STORE_RQ`` once its
    command set is decoded), on ``Association._accepted_cx`` (context ID to accepted
    context), on ``dul.event_queue`` taking "Evt19" for a message it cannot convert,
    and on ``send_msg(primitive, context_id)``. pynetdicom converts the command set with
    pydicom before any handler runs, which validates (and warns about) exactly the
    values the node refuses, and it hands a C-STORE on any context to the Storage SCP.
    """
    assoc.dimse = _ScreeningDIMSE(assoc, screen)


# ---------------------------------------------------------------------- retrieve sub-operations
CStore = Callable[..., Dataset]
# Sends one sub-operation itself (the peer's status), or None to let pynetdicom send it.
Diversion = Callable[[Dataset], Dataset | None]


class _DivertedCStore:
    """``Association.send_c_store`` with a diversion in front."""

    def __init__(self, original: CStore, divert: Diversion) -> None:
        self.original = original
        self.divert = divert

    def __call__(
        self,
        dataset: str | Path | Dataset,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        if isinstance(dataset, Dataset):
            reply = self.divert(dataset)
            if reply is not None:
                return reply
        return self.original(dataset, msg_id, priority, originator_aet, originator_id)


def divert_c_store(assoc: Association, divert: Diversion) -> None:
    """Make the C-STORE sub-operations pynetdicom sends on ``assoc`` go to ``divert`` first.

    Installing again replaces the earlier diversion. Relies on pynetdicom's C-GET and
    C-MOVE service classes sending each data set a handler yields with
    ``assoc.send_c_store(dataset, msg_id, priority, originator_aet, originator_id)``,
    looked up on the instance: the handler protocol has no way to send a sub-operation
    itself, and pynetdicom would encode the data set anew.
    """
    current = assoc.send_c_store
    original = current.original if isinstance(current, _DivertedCStore) else current
    assoc.send_c_store = _DivertedCStore(original, divert)  # type: ignore[method-assign]
