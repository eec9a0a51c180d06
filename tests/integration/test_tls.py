"""TLS for incoming associations, with client certificates required against a CA."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from node.app import Node
from node.config import NodeConfig
from tests.helpers import run, tool
from tests.pki import issue, make_ca


@pytest.fixture
def tls_node(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node
) -> tuple[Node, dict]:
    ca, ca_key, ca_cert = make_ca(tmp_path / "pki")
    server = issue(tmp_path / "pki", "server", ca_key, ca_cert)
    client = issue(tmp_path / "pki", "client", ca_key, ca_cert)
    tls = {
        "certificate": str(server.cert),
        "key": str(server.key),
        "ca": str(ca.cert),
        "require_client_certificate": True,
    }
    node = start_node(make_config(tls=tls))
    return node, {"ca": ca, "client": client}


@pytest.mark.dcmtk
def test_dcmtk_echoscu_over_tls_with_client_certificate(tls_node) -> None:
    node, pki = tls_node
    result = run(
        tool("echoscu"),
        "--enable-tls", pki["client"].key, pki["client"].cert,
        "--add-cert-file", pki["ca"].cert,
        "-aec", "DICOM_NODE", "127.0.0.1", node.port,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_client_without_certificate_is_refused(tls_node) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    node, pki = tls_node
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki["ca"].cert)
    context.check_hostname = False
    ae = AE(ae_title="NOCERT")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", node.port, ae_title="DICOM_NODE", tls_args=(context, "localhost")
    )
    assert not assoc.is_established
    # The same client with its certificate gets through.
    context.load_cert_chain(pki["client"].cert, pki["client"].key)
    assoc = ae.associate(
        "127.0.0.1", node.port, ae_title="DICOM_NODE", tls_args=(context, "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


@pytest.mark.dcmtk
def test_plain_tcp_client_is_not_served(tls_node) -> None:
    node, _ = tls_node
    result = run(tool("echoscu"), "-to", "5", "-aec", "DICOM_NODE", "127.0.0.1", node.port)
    assert result.returncode != 0
