"""The storage fast path (node.net): which associations it takes, and how it ends them.

Real peers where a tool can say it (DCMTK storescu and echoscu, a pynetdicom SCU), and a
raw socket speaking PDUs where the test needs a peer that misbehaves on purpose.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
)

from node.app import Node
from node.config import NodeConfig
from node.identity import IMPLEMENTATION_CLASS_UID
from node.net import dimse, pdu
from node.net.link import Link, PeerClosed
from node.net.status import StorageStatus
from tests.helpers import ct_dataset, dataset_bytes, run, tool, write_part10
from tests.integration.scu import store_status
from tests.integration.test_store_robustness import archive_files, instance_count, temp_files

CT = str(CTImageStorage)
EXPLICIT = str(ExplicitVRLittleEndian)


@contextmanager
def raw_association(port: int, max_length: int = 16384) -> Iterator[Link]:
    """A hand-driven requestor: A-ASSOCIATE-RQ sent and the AC read, nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    link = Link(sock, 0)
    try:
        link.send(
            [
                pdu.encode_associate_rq(
                    "DICOM_NODE",
                    "RAW_SCU",
                    [pdu.ProposedContext(1, CT, (EXPLICIT,))],
                    max_length,
                    "1.2.3.4",
                    "RAW",
                )
            ]
        )
        pdu_type, body = link.read_pdu()
        assert pdu_type == pdu.ASSOCIATE_AC, f"no A-ASSOCIATE-AC but PDU type {pdu_type}"
        accept = pdu.decode_associate_ac(bytes(body))
        assert accept.contexts[0].result == pdu.CONTEXT_ACCEPTED
        assert accept.implementation_class_uid == IMPLEMENTATION_CLASS_UID
        yield link
    finally:
        sock.close()


def expect_abort(link: Link) -> tuple[int, int]:
    """The (source, reason) of the A-ABORT the node sends next."""
    pdu_type, body = link.read_pdu()
    assert pdu_type == pdu.ABORT, f"expected A-ABORT, got PDU type {pdu_type}"
    return pdu.decode_abort(bytes(body))


def storescu(node: Node, source: Path, *options: str) -> None:
    run(
        tool("storescu"), "-aec", "DICOM_NODE", *options, "127.0.0.1", node.port, source, check=True
    )


def echo_works(node: Node) -> bool:
    return run(tool("echoscu"), "-aec", "DICOM_NODE", "127.0.0.1", node.port).returncode == 0


def test_storescu_with_small_pdus_is_stored_byte_identical(node: Node, tmp_path: Path) -> None:
    explicit = write_part10(ct_dataset(size=96, number=1), tmp_path / "e.dcm")
    implicit = write_part10(
        ct_dataset(size=96, number=2), tmp_path / "i.dcm", ImplicitVRLittleEndian
    )
    # 4 KiB PDUs both ways: every data set arrives in dozens of fragments.
    storescu(node, explicit, "--max-pdu", "4096", "--max-send-pdu", "4096")
    storescu(node, implicit, "-xi", "--max-send-pdu", "4096")
    assert node.fast_path is not None and node.fast_path.served == 2
    stored = {p.name: p for p in archive_files(node)}
    assert len(stored) == 2
    for source in (explicit, implicit):
        uid = ct_sop_uid(source)
        assert dataset_bytes(stored[f"{uid}.dcm"]) == dataset_bytes(source)


def ct_sop_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_request_with_mpps_goes_to_pynetdicom(node: Node) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        assert store_status(assoc, ct_dataset()) == StorageStatus.SUCCESS
    finally:
        assoc.release()
    assert node.fast_path is not None and node.fast_path.served == 0
    assert instance_count(node) == 1


def test_fast_path_can_be_switched_off(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    node = start_node(make_config(node={"fast_path": False}))
    storescu(node, write_part10(ct_dataset(), tmp_path / "a.dcm"))
    assert node.fast_path is None
    assert instance_count(node) == 1


def test_release_is_answered(node: Node) -> None:
    with raw_association(node.port) as link:
        link.send([pdu.encode_release_rq()])
        pdu_type, _ = link.read_pdu()
        assert pdu_type == pdu.RELEASE_RP
        with pytest.raises(PeerClosed):
            link.read_pdu()


@pytest.mark.parametrize(
    "violation",
    [
        pdu.encode_release_rp(),  # a release reply nobody asked for
        pdu.p_data_header(99, True, True, 4) + b"\0\0\0\0",  # a context never proposed
        pdu.header(0x09, 2) + b"\0\0",  # no such PDU type
        pdu.header(pdu.P_DATA_TF, 1 << 24),  # beyond our maximum length
    ],
    ids=["unexpected-release-rp", "unknown-context", "unknown-pdu", "oversized"],
)
def test_protocol_violation_is_aborted_and_node_serves_on(node: Node, violation: bytes) -> None:
    with raw_association(node.port) as link:
        link.send([violation])
        source, _reason = expect_abort(link)
        assert source == pdu.ABORT_SOURCE_PROVIDER
    assert echo_works(node)


def test_abort_inside_a_data_set_leaves_nothing(node: Node, tmp_path: Path) -> None:
    source = write_part10(ct_dataset(size=128), tmp_path / "a.dcm")
    data = dataset_bytes(source)
    command = dimse.store_request(1, CT, ct_sop_uid(source))
    with raw_association(node.port) as link:
        link.send_message(1, command, None, 0)
        head = pdu.p_data_header(1, False, False, 1000)
        link.send([head, data[:1000], pdu.encode_abort(pdu.ABORT_SOURCE_USER, 0)])
        with pytest.raises(PeerClosed):
            link.read_pdu()
    assert node.fast_path is not None
    node.fast_path.wait_idle(deadline=time.monotonic() + 30)
    assert instance_count(node) == 0
    assert archive_files(node) == [] and temp_files(node) == []
    assert node.registry.count() == 0


def test_one_store_then_malformed_command(node: Node, tmp_path: Path) -> None:
    source = write_part10(ct_dataset(), tmp_path / "a.dcm")
    data = dataset_bytes(source)
    with raw_association(node.port) as link:
        link.send_message(1, dimse.store_request(5, CT, ct_sop_uid(source)), data, 0)
        reply = link.read_message()
        assert not isinstance(reply, int)
        assert dimse.us(reply.command, dimse.COMMAND_FIELD) == dimse.C_STORE_RSP
        assert dimse.us(reply.command, dimse.MESSAGE_ID_BEING_RESPONDED_TO) == 5
        assert dimse.us(reply.command, dimse.STATUS) == StorageStatus.SUCCESS
        link.send_message(1, b"\x08\x00\x00\x00\x04\x00\x00\x00", None, 0)  # not group 0000
        expect_abort(link)
    assert instance_count(node) == 1


def test_association_limit_counts_fast_path_associations(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    node = start_node(make_config(node={"max_associations": 1}))
    source = write_part10(ct_dataset(), tmp_path / "a.dcm")
    with raw_association(node.port):
        refused = run(tool("storescu"), "-aec", "DICOM_NODE", "127.0.0.1", node.port, source)
        assert refused.returncode != 0
        assert "Local Limit Exceeded" in refused.stderr
    assert node.fast_path is not None
    node.fast_path.wait_idle(deadline=time.monotonic() + 30)
    storescu(node, source)
    assert instance_count(node) == 1


def test_association_limit_counts_both_paths(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    node = start_node(make_config(node={"max_associations": 1}))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)  # a pynetdicom-path request
    with raw_association(node.port):
        refused = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
        assert refused.is_rejected
        assert refused.acceptor.primitive.result_source == 3  # service provider (presentation)
        assert refused.acceptor.primitive.diagnostic == 2  # local limit exceeded
    assert node.fast_path is not None
    node.fast_path.wait_idle(deadline=time.monotonic() + 30)
    accepted = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
    assert accepted.is_established
    accepted.release()


def test_idle_association_is_aborted_after_the_network_timeout(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    node = start_node(make_config(node={"network_timeout": 1}))
    with raw_association(node.port) as link:
        source, _reason = expect_abort(link)  # blocks until the node gives up on us
        assert source == pdu.ABORT_SOURCE_PROVIDER
    assert echo_works(node)


def test_silent_connection_is_closed_after_the_acse_timeout(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    node = start_node(make_config(node={"acse_timeout": 1}))
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as silent:
        assert silent.recv(1) == b""  # closed by the node, not by our timeout
    with socket.create_connection(("127.0.0.1", node.port)):
        pass  # a port probe that closes at once
    assert echo_works(node)
