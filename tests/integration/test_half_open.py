"""Connections that stall before their A-ASSOCIATE-RQ cannot keep associations out.

Half-open connections are counted apart from node.max_associations, closed at
node.acse_timeout, and every refusal is one log line and one audit record; on both
association paths (a C-ECHO-only association goes to the fast path when it is on; MPPS
always to pynetdicom).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    Verification,
)

from node.app import Node
from node.config import NodeConfig
from tests.integration.mpps_scu import create_attributes
from tests.integration.refusals import WAIT, closed_by_node, refusal_lines, rejected

# An A-ASSOCIATE-RQ header announcing 200 bytes that never come (PS3.8 9.3.2).
PARTIAL_REQUEST = b"\x01\x00\x00\x00\x00\xc8"
RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
# A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local limit exceeded.
REJECT_LIMIT = b"\x03\x00\x00\x00\x00\x04\x00\x02\x03\x02"

PATHS = pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom"])


@pytest.fixture
def sockets() -> Iterator[Callable[[int, bytes], socket.socket]]:
    opened: list[socket.socket] = []

    def connect(port: int, first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(first)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def bounded_ae(aet: str) -> AE:
    ae = AE(ae_title=aet)
    ae.connection_timeout = ae.acse_timeout = ae.network_timeout = 10
    return ae


def mpps_create(port: int) -> int:
    ae = bounded_ae("CT_1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established, "MPPS association refused"
    try:
        status, _ = assoc.send_n_create(create_attributes(), ModalityPerformedProcedureStep)
        return int(status.Status)
    finally:
        assoc.release()


def echo(port: int) -> int:
    ae = bounded_ae("ECHO_SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established, "C-ECHO association refused"
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def counted(node: Node, count: int) -> None:
    """Wait until the node counts ``count`` half-open connections (readiness, bounded)."""
    gate = node.gate
    assert gate is not None
    done = threading.Event()
    for _ in range(int(WAIT * 100)):
        if gate.count() == count:
            return
        done.wait(0.01)
    raise AssertionError(f"{gate.count()} half-open connections counted, not {count}")


@PATHS
def test_stalled_requests_do_not_lock_out_and_are_closed_at_acse_timeout(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    sockets: Callable[[int, bytes], socket.socket],
) -> None:
    config = make_config(node={"fast_path": fast_path, "acse_timeout": "2s"})
    node = start_node(config)  # max_associations: the default 10
    with refusal_lines() as lines:
        stalled = [sockets(node.port, PARTIAL_REQUEST) for _ in range(12)]
        counted(node, 12)
        assert mpps_create(node.port) == 0
        assert echo(node.port) == 0
        assert all(closed_by_node(sock) for sock in stalled)
        lines.wait_for("acse-timeout", 12)
        assert mpps_create(node.port) == 0
    records = rejected(node.archive.engine)
    assert [r["reason"] for r in records] == ["acse-timeout"] * 12
    assert all("6 bytes" in r["message"] for r in records)


@PATHS
def test_half_open_connections_have_their_own_bound(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    sockets: Callable[[int, bytes], socket.socket],
) -> None:
    node = start_node(make_config(node={"fast_path": fast_path, "max_associations": 1}))
    assert node.gate is not None
    limit = node.gate.limit
    with refusal_lines() as lines:
        for n in range(limit):
            sockets(node.port, PARTIAL_REQUEST)
            counted(node, n + 1)
        extra = sockets(node.port, PARTIAL_REQUEST)
        extra.settimeout(WAIT)
        assert extra.recv(64) == REJECT_LIMIT
        lines.wait_for("half-open-limit")
    assert [r["reason"] for r in rejected(node.archive.engine)] == ["half-open-limit"]


@PATHS
def test_first_pdu_not_an_associate_request_is_aborted_and_audited(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    sockets: Callable[[int, bytes], socket.socket],
) -> None:
    node = start_node(make_config(node={"fast_path": fast_path}))
    with refusal_lines() as lines:
        sock = sockets(node.port, RELEASE_RQ)
        sock.settimeout(WAIT)
        assert sock.recv(64)[:1] == b"\x07"  # A-ABORT
        lines.wait_for("malformed-request")
    assert [r["reason"] for r in rejected(node.archive.engine)] == ["malformed-request"]
    assert echo(node.port) == 0
