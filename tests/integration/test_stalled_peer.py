"""A peer that stalls in the middle of a PDU (or vanishes without a FIN) loses its
association after node.network_timeout, on both paths, and never keeps a stopping node
from ending."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.app import Node
from node.config import NodeConfig
from tests.integration.refusals import ended_lines, wait_until


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom-path"])
def test_a_peer_stalling_mid_pdu_is_dropped_and_the_node_stops(
    fast_path: bool, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    config = make_config(node={"fast_path": fast_path, "network_timeout": 1, "shutdown_grace": 2})
    node = start_node(config)
    ae = AE(ae_title="STALLER")
    ae.add_requested_context(Verification)
    with ended_lines() as ended:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
        assert assoc.is_established
        # A P-DATA-TF header announcing 1000 bytes, then 10 of them, then nothing.
        raw = assoc.dul.socket.socket
        raw.sendall(bytes([0x04, 0]) + (1000).to_bytes(4, "big") + b"\0" * 10)
        line = ended.next_line()
        assert "from STALLER@" in line and " aborted" in line, line
    wait_until(lambda: not node.ae.active_associations, "pynetdicom's association ended")
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < config.node.shutdown_grace + 5
    assoc.abort()
