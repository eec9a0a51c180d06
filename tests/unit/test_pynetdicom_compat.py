"""Contract tests for :mod:`node.pynetdicom_compat`, the one door to pynetdicom's internals.

One test (or a pair: the shape, then the behaviour on loopback with real pynetdicom
peers) per private touch, so that a pynetdicom release that renames, moves or changes
what the node relies on fails here, by name, instead of in a test of some feature. The
last tests check that no other module of ``node/`` touches pynetdicom's internals.
"""

from __future__ import annotations

import ast
import functools
import inspect
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError, StateMachine
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationServer, AssociationSocket, ThreadedAssociationServer

from node import pynetdicom_compat as compat
from tests.helpers import ct_dataset

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "node" / "pynetdicom_compat.py"
TIMEOUT = 30.0  # a bound on waits for events that must come; never the way to pass


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _source(function: Callable[..., Any]) -> str:
    return inspect.getsource(function)


# ---------------------------------------------------------------------- loopback peers
def _scp(**extra: Any) -> AE:
    ae = AE(ae_title="COMPAT_SCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    for name, value in extra.items():
        setattr(ae, name, value)
    return ae


@contextmanager
def _serving(
    handlers: list[Any], server_class: type[ThreadedAssociationServer] | None = None, **ae: Any
) -> Iterator[tuple[AE, ThreadedAssociationServer, int]]:
    scp = _scp(**ae)
    if server_class is None:
        server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    else:
        server = scp.make_server(("127.0.0.1", 0), evt_handlers=handlers, server_class=server_class)
        compat.serve_in_background(scp, server)
    assert server is not None
    try:
        yield scp, server, int(server.server_address[1])
    finally:
        server.shutdown()


def _requestor(port: int, handlers: list[Any] | None = None) -> Association:
    scu = AE(ae_title="COMPAT_SCU")
    scu.add_requested_context(Verification)
    scu.add_requested_context(CTImageStorage)
    return scu.associate("127.0.0.1", port, ae_title="COMPAT_SCP", evt_handlers=handlers or [])


def _wait(event: threading.Event, what: str) -> None:
    assert event.wait(TIMEOUT), f"{what} did not happen"


# ---------------------------------------------------------------------- configure
def test_config_options_exist_and_are_read_where_assumed() -> None:
    for name in (
        "LOG_REQUEST_IDENTIFIERS",
        "LOG_RESPONSE_IDENTIFIERS",
        "LOG_HANDLER_LEVEL",
        "STORE_SEND_CHUNKED_DATASET",
    ):
        assert hasattr(_config, name), name
    assert "_config.STORE_SEND_CHUNKED_DATASET" in inspect.getsource(Association)
    assert "_config.LOG_HANDLER_LEVEL" in inspect.getsource(AssociationServer)


def test_configure_sets_pynetdicom_options() -> None:
    saved = {
        name: getattr(_config, name)
        for name in (
            "LOG_REQUEST_IDENTIFIERS",
            "LOG_RESPONSE_IDENTIFIERS",
            "LOG_HANDLER_LEVEL",
            "STORE_SEND_CHUNKED_DATASET",
        )
    }
    try:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assert not compat.sends_chunked_datasets()
        compat.configure(log_identifiers=False, handler_level="none")
        assert _config.LOG_REQUEST_IDENTIFIERS is False
        assert _config.LOG_RESPONSE_IDENTIFIERS is False
        assert _config.LOG_HANDLER_LEVEL == "none"
        assert compat.sends_chunked_datasets()
    finally:
        for name, value in saved.items():
            setattr(_config, name, value)


# ---------------------------------------------------------------------- ConnectionServer
def test_server_hooks_have_the_assumed_shape() -> None:
    assert _parameters(ThreadedAssociationServer.process_request_thread) == [
        "self",
        "request",
        "client_address",
    ]
    assert "self.finish_request(request, client_address)" in _source(
        ThreadedAssociationServer.process_request_thread
    )
    # The TLS handshake pynetdicom runs in the accept loop, which ConnectionServer skips.
    assert "wrap_socket" in _source(AssociationServer.get_request)
    assert "kwargs" in _parameters(ApplicationEntity.make_server)  # NodeServer's keywords


def test_connection_server_hands_each_connection_over_on_its_own_thread() -> None:
    seen: list[tuple[socket.socket, tuple[str, int], str]] = []

    class Recording(compat.ConnectionServer):
        def serve_connection(self, request: socket.socket, client_address: Any) -> None:
            seen.append((request, client_address, threading.current_thread().name))
            self.to_pynetdicom(request, client_address)

    with _serving([], server_class=Recording) as (_, _server, port):
        assoc = _requestor(port)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    [(request, address, thread)] = seen
    assert isinstance(request, socket.socket) and not hasattr(request, "cipher")
    assert address[0] == "127.0.0.1"
    assert thread != threading.main_thread().name and not thread.startswith("AcceptorServer")


# ---------------------------------------------------------------------- serve_in_background
def test_servers_list_is_what_shutdown_removes_from() -> None:
    assert isinstance(AE()._servers, list)
    assert "self.ae._servers.remove(" in _source(AssociationServer.shutdown)


def test_serve_in_background_registers_the_server_with_its_ae() -> None:
    scp = _scp()
    server = scp.make_server(("127.0.0.1", 0), server_class=compat.ConnectionServer)
    compat.serve_in_background(scp, server)
    assert server in scp._servers
    assoc = _requestor(int(server.server_address[1]))
    assert assoc.is_established  # it serves
    assoc.release()
    server.shutdown()  # raises ValueError when the server is not in ae._servers
    assert server not in scp._servers


# ---------------------------------------------------------------------- the acceptor's ACSE
def test_acse_negotiation_has_the_assumed_shape() -> None:
    assert _parameters(ACSE._negotiate_as_acceptor) == ["self"]
    assert "self._negotiate_as_acceptor()" in _source(ACSE.negotiate_association)
    assert _parameters(ACSE.send_reject) == ["self", "result", "source", "diagnostic"]
    assert "self.acse: ACSE = ACSE(self)" in _source(Association.__init__)
    # The request is on requestor.primitive, and EVT_REQUESTED triggered, before it.
    reactor = _source(Association.run_reactor)
    assert reactor.index("self.requestor.primitive =") < reactor.index(
        "self.acse.negotiate_association()"
    )


def test_check_before_negotiation_refuses_or_lets_pynetdicom_negotiate() -> None:
    checked: list[tuple[str, str]] = []
    refuse = {"COMPAT_SCU"}

    def check(assoc: Association, request: A_ASSOCIATE) -> compat.Refusal | None:
        calling = str(request.calling_ae_title).strip()
        checked.append((calling, str(assoc.requestor.address)))
        return (1, 1, 3) if calling in refuse else None  # calling AE not recognized

    def opened(event: Any) -> None:
        compat.check_before_negotiation(event.assoc, check)

    rejected_events = threading.Event()
    handlers = [(evt.EVT_CONN_OPEN, opened), (evt.EVT_REJECTED, lambda _e: rejected_events.set())]
    with _serving(handlers) as (_, _server, port):
        pdus: list[Any] = []
        assoc = _requestor(port, [(evt.EVT_PDU_RECV, lambda e: pdus.append(e.pdu))])
        assert assoc.is_rejected
        [rj] = [pdu for pdu in pdus if isinstance(pdu, A_ASSOCIATE_RJ)]
        assert (rj.result, rj.source, rj.reason_diagnostic) == (1, 1, 3)
        _wait(rejected_events, "EVT_REJECTED on the acceptor")
        refuse.clear()
        assoc = _requestor(port)
        assert assoc.is_established  # pynetdicom's own negotiation ran
        assoc.release()
    assert checked == [("COMPAT_SCU", "127.0.0.1")] * 2


def test_sent_abort_is_set_by_abort_before_evt_aborted() -> None:
    assert "self._sent_abort = True" in _source(Association._abort_blocking)
    source = _source(Association._abort_blocking)
    assert source.index("self._sent_abort = True") < source.index("evt.EVT_ABORTED")
    peer_saw: list[bool] = []
    peer_aborted = threading.Event()

    def on_peer_abort(event: Any) -> None:
        peer_saw.append(compat.sent_abort(event.assoc))
        peer_aborted.set()

    with _serving([(evt.EVT_ABORTED, on_peer_abort)]) as (_, _server, port):
        ours: list[bool] = []
        assoc = _requestor(
            port, [(evt.EVT_ABORTED, lambda e: ours.append(compat.sent_abort(e.assoc)))]
        )
        assert assoc.is_established and not compat.sent_abort(assoc)
        assoc.abort()
        _wait(peer_aborted, "EVT_ABORTED on the acceptor")
    assert ours == [True]  # we sent it
    assert peer_saw == [False]  # the acceptor received it


# ---------------------------------------------------------------------- the transport
def test_dul_socket_has_the_assumed_shape() -> None:
    assert 'self.socket: "AssociationSocket | None" = None' in _source(DULServiceProvider.__init__)
    init = _source(AssociationSocket.__init__)
    assert "self._is_connected = False" in init and "self._is_connected = True" in init
    connect = _source(AssociationSocket.connect)
    assert connect.index("self._is_connected = True") < connect.index("evt.EVT_CONN_OPEN")
    assert "self._is_connected = False" in _source(AssociationSocket.close)


def test_transport_socket_and_ever_connected_on_a_live_and_a_refused_connection() -> None:
    sockets: list[socket.socket | None] = []
    connected: list[bool] = []

    def opened(event: Any) -> None:
        sockets.append(compat.transport_socket(event.assoc))
        connected.append(compat.ever_connected(event.assoc))

    with _serving([]) as (_, _server, port):
        assoc = _requestor(port, [(evt.EVT_CONN_OPEN, opened)])
        assert assoc.is_established
        [sock] = sockets
        assert isinstance(sock, socket.socket)
        assert sock.getpeername()[1] == port
        assert connected == [True]
        assoc.release()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = _requestor(closed_port)
    assert not refused.is_established
    assert not compat.ever_connected(refused)


def test_wake_acceptor_ends_the_wait_for_a_request() -> None:
    reactor = _source(Association.run_reactor)
    assert "self.dul.receive_pdu(wait=True, timeout=self.acse_timeout)" in reactor
    assert "if primitive is None:" in reactor
    assert "self.to_user_queue.get(" in _source(DULServiceProvider.receive_pdu)

    ended = threading.Event()
    woken: list[bool] = []
    still_waiting: list[bool] = []

    def joined(assoc: Association) -> None:
        assoc.join(TIMEOUT)
        still_waiting.append(assoc.is_alive())
        ended.set()

    def closed(event: Any) -> None:
        assoc = event.assoc
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            compat.wake_acceptor(assoc)
            woken.append(True)
            # The acceptor's thread ends now, not after its ACSE timeout of 600 s.
            threading.Thread(target=joined, args=(assoc,)).start()

    with _serving([(evt.EVT_CONN_CLOSE, closed)], acse_timeout=600) as (_, server, port):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"\x01\x00\x00\x00\x00\x10")  # the start of an A-ASSOCIATE-RQ
        _wait(ended, "the acceptor woken")
        assert woken == [True]
        assert still_waiting == [False]
        assert not server.active_associations


def test_on_kill_runs_after_every_kill() -> None:
    assert _parameters(Association.kill) == ["self"]
    assert "self.kill()" in _source(Association._abort_blocking)
    with _serving([]) as (_, _server, port):
        assoc = _requestor(port)
        assert assoc.is_established
        killed: list[bool] = []
        compat.on_kill(assoc, lambda: killed.append(assoc.is_released))
        assoc.release()
        assoc.join(TIMEOUT)
    assert killed and killed[-1] is True


# ---------------------------------------------------------------------- the state machine
def test_state_machine_has_the_assumed_shape() -> None:
    assert _parameters(StateMachine.do_action) == ["self", "event"]
    assert "self.state_machine.do_action(event)" in inspect.getsource(DULServiceProvider)
    machine = Association(AE(), "requestor").dul.state_machine
    assert machine.current_state == "Sta1"
    with pytest.raises(InvalidEventError):
        machine.do_action("Evt7")  # an A-ASSOCIATE response primitive in Sta1


def test_survive_peer_errors_drops_a_late_primitive_and_closes_on_a_failed_action() -> None:
    assoc = Association(AE(), "requestor")
    compat.survive_peer_errors(assoc)
    late = A_ASSOCIATE()
    assoc.dul.to_provider_queue.put(late)
    assoc.dul.state_machine.do_action("Evt7")  # no InvalidEventError
    with pytest.raises(queue.Empty):
        assoc.dul.to_provider_queue.get_nowait()  # the late primitive was dropped

    class Failing:
        closed = False

        def close(self) -> None:
            self.closed = True

    failing = Failing()
    assoc.dul.socket = failing  # type: ignore[assignment]
    machine = assoc.dul.state_machine
    machine.current_state = "Sta6"
    assoc.dul.to_provider_queue.put("not a primitive")  # type: ignore[arg-type]
    machine.do_action("Evt9")  # P-DATA request: the action fails on what it finds
    assert failing.closed


# ---------------------------------------------------------------------- DIMSE screen
def test_dimse_receive_has_the_assumed_shape() -> None:
    assert _parameters(DIMSEServiceProvider.receive_primitive) == ["self", "primitive"]
    receive = _source(DIMSEServiceProvider.receive_primitive)
    assert "self.message.decode_msg(primitive, self.assoc)" in receive
    assert receive.index("decode_msg") < receive.index("self.message.message_to_primitive()")
    assert 'self.dul.event_queue.put("Evt19")' in receive
    assert _parameters(DIMSEMessage.decode_msg) == ["self", "primitive", "assoc"]
    assert _parameters(DIMSEMessage.message_to_primitive) == ["self"]
    assert _parameters(DIMSEServiceProvider.send_msg) == ["self", "primitive", "context_id"]
    assert "self.dimse: DIMSEServiceProvider = DIMSEServiceProvider(self)" in _source(
        Association.__init__
    )
    assert "self._accepted_cx: dict[int, PresentationContext] = {}" in _source(Association.__init__)
    assert issubclass(C_STORE_RQ, DIMSEMessage)


def test_screen_store_requests_answers_or_hands_on() -> None:
    screened: list[compat.UncheckedStore] = []
    answer = {"status": 0xA700}
    handled: list[str] = []

    def screen(assoc: Association, request: compat.UncheckedStore) -> C_STORE | None:
        screened.append(request)
        if answer["status"] is None:
            return None
        response = C_STORE()
        response.MessageIDBeingRespondedTo = 1
        response.Status = answer["status"]
        return response

    def opened(event: Any) -> None:
        if event.assoc.is_acceptor:
            compat.screen_store_requests(event.assoc, screen)

    def stored(event: Any) -> int:
        handled.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    handlers = [(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, stored)]
    with _serving(handlers) as (_, _server, port):
        assoc = _requestor(port)
        ds = ct_dataset()
        assert assoc.send_c_store(ds).Status == 0xA700
        answer["status"] = None
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
    first = screened[0]
    assert first.abstract_syntax == CTImageStorage
    assert first.transfer_syntax == str(assoc.accepted_contexts[1].transfer_syntax[0])
    raw = first.command_set.get_item(0x00001000)  # Affected SOP Instance UID, unconverted
    assert raw is not None and raw.value.rstrip(b"\0 ").decode() == ds.SOPInstanceUID
    assert first.data_set is not None and first.data_set.getvalue()
    assert handled == [ds.SOPInstanceUID]  # only the request handed on reached pynetdicom


# ---------------------------------------------------------------------- send_c_store
def test_send_c_store_has_the_assumed_shape() -> None:
    assert _parameters(Association.send_c_store) == [
        "self",
        "dataset",
        "msg_id",
        "priority",
        "originator_aet",
        "originator_id",
    ]
    assert "self.assoc.send_c_store(" in _source(QueryRetrieveServiceClass._get_scp)
    assert "store_assoc.send_c_store(" in _source(QueryRetrieveServiceClass._move_scp)


def test_divert_c_store_sends_diverted_items_itself_and_others_through_pynetdicom() -> None:
    arrived: list[str] = []

    def stored(event: Any) -> int:
        arrived.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    with _serving([(evt.EVT_C_STORE, stored)]) as (_, _server, port):
        assoc = _requestor(port)
        mine, other = ct_dataset(number=1, seed=1), ct_dataset(number=2, seed=2)
        diverted: list[str] = []

        def divert(dataset: Dataset) -> Dataset | None:
            if dataset.SOPInstanceUID != mine.SOPInstanceUID:
                return None
            diverted.append(dataset.SOPInstanceUID)
            reply = Dataset()
            reply.Status = 0xB000
            return reply

        compat.divert_c_store(assoc, lambda _ds: None)
        compat.divert_c_store(assoc, divert)  # replaces the first diversion
        assert assoc.send_c_store(mine).Status == 0xB000
        assert assoc.send_c_store(other).Status == 0
        assoc.release()
    assert diverted == [mine.SOPInstanceUID]
    assert arrived == [other.SOPInstanceUID]


# ---------------------------------------------------------------------- nobody else
# pynetdicom's modules that are its machinery, not its API: only the compat module may
# import them (or any module whose name starts with an underscore).
INTERNAL_MODULES = frozenset(
    {"acse", "dimse", "dimse_messages", "dul", "fsm", "pdu_items", "timer", "transport"}
)
# Attributes that lead into an association's internals (ACSE, DIMSE, DUL providers).
INTERNAL_ATTRIBUTES = frozenset({"acse", "dimse", "dul"})


@functools.cache
def _pynetdicom_private_names() -> frozenset[str]:
    """Every single-underscore name pynetdicom's own code defines or uses."""
    names: set[str] = set()
    for path in Path(pynetdicom.__file__).parent.rglob("*.py"):
        if "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Name):
                name = node.id
            if name and name.startswith("_") and not name.startswith("__"):
                names.add(name)
    return frozenset(names)


def _association_methods() -> frozenset[str]:
    return frozenset(name for name, value in vars(Association).items() if inspect.isfunction(value))


def _internal_import(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "pynetdicom":
        return False
    return any(part.startswith("_") or part in INTERNAL_MODULES for part in parts[1:])


def _touch(node: ast.AST, private: frozenset[str], methods: frozenset[str]) -> str | None:
    """What ``node`` touches of pynetdicom's internals, or None."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if _internal_import(a.name)]
        return f"import {', '.join(names)}" if names else None
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        internal = any(_internal_import(module) for module in modules)
        return f"from {node.module} import ..." if internal else None
    if isinstance(node, ast.Attribute):
        owner = node.value
        on_self = isinstance(owner, ast.Name) and owner.id in {"self", "cls"}
        touched = (node.attr in private and not on_self) or node.attr in INTERNAL_ATTRIBUTES
        return ast.unparse(node) if touched else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        reflective = node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
        name = node.args[1] if reflective and len(node.args) > 1 else None
        touched = isinstance(name, ast.Constant) and name.value in private | INTERNAL_ATTRIBUTES
        return ast.unparse(node) if touched else None
    if isinstance(node, ast.Assign):
        for target in node.targets:
            on_self = isinstance(target, ast.Attribute) and (
                isinstance(target.value, ast.Name) and target.value.id == "self"
            )
            if isinstance(target, ast.Attribute) and target.attr in methods and not on_self:
                return f"{ast.unparse(target)} = ... (a method replaced)"
    return None


def pynetdicom_internals(source: str) -> list[str]:
    """Where ``source`` touches pynetdicom's internals: one ``line: what`` each."""
    private = _pynetdicom_private_names()
    methods = _association_methods()
    found = []
    for node in ast.walk(ast.parse(source)):
        touch = _touch(node, private, methods)
        if touch is not None:
            found.append(f"{getattr(node, 'lineno', 0)}: {touch}")
    return found


def _node_modules() -> Iterator[Path]:
    for path in sorted((ROOT / "node").rglob("*.py")):
        if path != COMPAT:
            yield path


def test_no_other_module_touches_pynetdicom_internals() -> None:
    touches = {
        str(path.relative_to(ROOT)): found
        for path in _node_modules()
        if (found := pynetdicom_internals(path.read_text(encoding="utf-8")))
    }
    assert touches == {}, "go through node.pynetdicom_compat instead"


@pytest.mark.parametrize(
    "snippet",
    [
        'connected = getattr(assoc.dul.socket, "_is_connected", False)',
        "connected = assoc.dul.socket._is_connected",
        "server.ae._servers.append(server)",
        'aborted = getattr(event.assoc, "_sent_abort", False)',
        "context = self.assoc._accepted_cx.get(1)",
        "event.assoc.acse = PolicyACSE(event.assoc)",
        "assoc.dimse = GuardedDIMSE(assoc)",
        "assoc.send_c_store = sender",
        "assoc.kill = killed",
        "from pynetdicom.acse import ACSE",
        "from pynetdicom.transport import ThreadedAssociationServer",
        "from pynetdicom import _config",
        "import pynetdicom.dul",
        "class X(ACSE):\n    def f(self):\n        super()._negotiate_as_acceptor()",
    ],
)
def test_the_check_finds_each_kind_of_touch(snippet: str) -> None:
    assert pynetdicom_internals(snippet)


def test_the_check_leaves_public_api_and_node_privates_alone() -> None:
    public = (
        "from pynetdicom import AE, evt, build_role\n"
        "from pynetdicom.association import Association\n"
        "from pynetdicom.pdu import A_ASSOCIATE_RJ\n"
        "from pynetdicom.dimse_primitives import C_STORE\n"
        "assoc.send_c_store(ds)\n"
        "self._lock = lock\n"
        "handler._dicom_node = True\n"
        "row._mapping\n"
        "assoc.requestor.ae_title = calling\n"
    )
    assert pynetdicom_internals(public) == []


def test_the_compat_module_is_where_the_touches_are() -> None:
    # The check sees them there: it would see them anywhere else.
    assert len(pynetdicom_internals(COMPAT.read_text(encoding="utf-8"))) >= 10
