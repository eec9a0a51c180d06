"""TLS handshakes run per connection within node.acse_timeout; every refusal is audited."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.app import Node
from node.config import NodeConfig
from tests.integration.refusals import closed_by_node, refusal_lines, rejected
from tests.pki import Issued, issue, make_ca

# The first bytes of a TLS ClientHello record: content type, version, length, then the
# handshake type; the rest never comes.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Issued]:
    ca, ca_key, ca_cert = make_ca(tmp_path / "pki")
    _other, other_key, other_cert = make_ca(tmp_path / "other", "Other CA")
    return {
        "ca": ca,
        "server": issue(tmp_path / "pki", "server", ca_key, ca_cert),
        "client": issue(tmp_path / "pki", "client", ca_key, ca_cert),
        "foreign": issue(tmp_path / "other", "foreign", other_key, other_cert),
        "expired": issue(
            tmp_path / "pki",
            "expired",
            ca_key,
            ca_cert,
            valid_from=-dt.timedelta(days=2),
            valid_for=dt.timedelta(days=1),
        ),
        "future": issue(
            tmp_path / "pki", "future", ca_key, ca_cert, valid_from=dt.timedelta(days=1)
        ),
    }


def tls_section(pki: dict[str, Issued]) -> dict[str, object]:
    return {
        "certificate": str(pki["server"].cert),
        "key": str(pki["server"].key),
        "ca": str(pki["ca"].cert),
        "require_client_certificate": True,
    }


def client_context(pki: dict[str, Issued], leaf: str | None = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki["ca"].cert)
    context.check_hostname = False
    if leaf:
        context.load_cert_chain(pki[leaf].cert, pki[leaf].key)
    return context


def tls_echo(port: int, context: ssl.SSLContext | None, aet: str = "TLS_SCU") -> bool:
    """A pynetdicom C-ECHO over TLS with bounded waits; True when it got Success."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.network_timeout = 10
    tls_args = (context, "localhost") if context else None
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE", tls_args=tls_args)
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


@pytest.fixture
def stalled(pki: dict[str, Issued]) -> Iterator[Callable[[int], list[socket.socket]]]:
    opened: list[socket.socket] = []

    def open_stalled(port: int) -> list[socket.socket]:
        idle = socket.create_connection(("127.0.0.1", port))
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(PARTIAL_CLIENT_HELLO)
        opened.extend([idle, partial])
        return [idle, partial]

    yield open_stalled
    for sock in opened:
        sock.close()


def test_stalled_connections_do_not_delay_a_tls_association(
    pki: dict[str, Issued],
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    stalled: Callable[[int], list[socket.socket]],
) -> None:
    node = start_node(make_config(tls=tls_section(pki)))  # acse_timeout: the default 30s
    stalled(node.port)
    # Within the client's 10 s limits, far below the node's 30 s handshake limit.
    assert tls_echo(node.port, client_context(pki))
    assert tls_echo(node.port, client_context(pki))


def test_every_tls_refusal_is_logged_and_audited(
    pki: dict[str, Issued], make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    node = start_node(make_config(tls=tls_section(pki)))
    attempts = [
        ("tls-no-client-certificate", client_context(pki, None)),
        ("tls-unknown-ca", client_context(pki, "foreign")),
        ("tls-certificate-expired", client_context(pki, "expired")),
        ("tls-certificate-not-yet-valid", client_context(pki, "future")),
        ("tls-plain-tcp", None),
    ]
    with refusal_lines() as lines:
        for reason, context in attempts:
            assert not tls_echo(node.port, context), reason
            lines.wait_for(reason)
        assert tls_echo(node.port, client_context(pki))  # and the node still serves
    reasons = [r["reason"] for r in rejected(node.archive.engine)]
    assert reasons == [reason for reason, _ in attempts]
    assert all(r["peer_address"] == "127.0.0.1" for r in rejected(node.archive.engine))


def test_handshake_not_finished_within_acse_timeout_is_closed_and_audited(
    pki: dict[str, Issued],
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    stalled: Callable[[int], list[socket.socket]],
) -> None:
    node = start_node(make_config(tls=tls_section(pki), node={"acse_timeout": "1s"}))
    with refusal_lines() as lines:
        idle, partial = stalled(node.port)
        assert closed_by_node(idle)
        assert closed_by_node(partial)
        lines.wait_for("tls-handshake-timeout", 2)
    reasons = [r["reason"] for r in rejected(node.archive.engine)]
    assert reasons == ["tls-handshake-timeout", "tls-handshake-timeout"]


def test_a_reset_before_the_client_hello_is_a_closed_connection(
    pki: dict[str, Issued],
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = start_node(make_config(tls=tls_section(pki)))
    with refusal_lines():
        for _ in range(3):  # what a port scanner does: connect, then RST
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert tls_echo(node.port, client_context(pki))  # served after the resets
    assert [r for r in caplog.records if r.exc_info] == []
    assert "internal-error" not in [d.get("reason") for d in rejected(node.archive.engine)]
