"""Two association paths, one behaviour: requests pynetdicom and the fast path once
answered differently, sent by a raw requestor to a node on each path.

The raw requestor (a socket speaking PDUs) is needed because a well-behaved SCU never
sends these requests; with ``node.fast_path: false`` the same bytes reach pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from node.app import Node
from node.net import dimse, pdu
from node.net.link import Link, Message, PeerClosed
from node.net.status import StorageStatus, VerificationStatus
from node.storage import audit
from tests.helpers import ct_dataset, dataset_bytes, write_part10
from tests.integration.test_store_robustness import archive_files, instance_count, temp_files

CT = str(CTImageStorage)
MR = str(MRImageStorage)
VERIFICATION = str(Verification)
EXPLICIT = str(ExplicitVRLittleEndian)
# Context 1: Verification, context 3: CT Image Storage.
CONTEXTS = [
    pdu.ProposedContext(1, VERIFICATION, (EXPLICIT,)),
    pdu.ProposedContext(3, CT, (EXPLICIT,)),
]


Accept = pdu.AssociateAccept


def request_bytes(contexts: list[pdu.ProposedContext]) -> bytes:
    return pdu.encode_associate_rq("DICOM_NODE", "RAW_SCU", contexts, 16384, "1.2.3.4", "RAW")


@contextmanager
def connected(port: int) -> Iterator[Link]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        yield Link(sock, 0)
    finally:
        sock.close()


@contextmanager
def raw_association(port: int, request: bytes | None = None) -> Iterator[tuple[Link, Accept]]:
    """An association from ``request`` (default: CONTEXTS), with its A-ASSOCIATE-AC."""
    with connected(port) as link:
        link.send([request or request_bytes(CONTEXTS)])
        pdu_type, body = link.read_pdu()
        assert pdu_type == pdu.ASSOCIATE_AC, f"no A-ASSOCIATE-AC but PDU type {pdu_type}"
        yield link, pdu.decode_associate_ac(bytes(body))


def reply(link: Link) -> dimse.Command:
    message = link.read_message()
    assert isinstance(message, Message), f"no DIMSE reply but PDU {message}"
    return message.command


def store(link: Link, context_id: int, command: bytes, data: bytes | None) -> dimse.Command:
    link.send_message(context_id, command, data, 0)
    answer = reply(link)
    assert dimse.us(answer, dimse.COMMAND_FIELD) == dimse.C_STORE_RSP
    assert dimse.us(answer, dimse.MESSAGE_ID_BEING_RESPONDED_TO) == 7
    return answer


def echo(link: Link) -> int | None:
    command = dimse.encode_command(
        [
            (dimse.AFFECTED_SOP_CLASS_UID, VERIFICATION),
            (dimse.COMMAND_FIELD, dimse.C_ECHO_RQ),
            (dimse.MESSAGE_ID, 9),
            (dimse.COMMAND_DATA_SET_TYPE, dimse.NO_DATA_SET),
        ]
    )
    link.send_message(1, command, None, 0)
    return dimse.us(reply(link), dimse.STATUS)


def release(link: Link) -> None:
    link.send([pdu.encode_release_rq()])
    pdu_type, _ = link.read_pdu()
    assert pdu_type == pdu.RELEASE_RP


def failures(node: Node) -> list[str | None]:
    """The statuses of the store-failed audit records, in order."""
    return [
        r.details.get("status")
        for r in audit.records(node.archive.engine)
        if r.event == "store-failed"
    ]


def served_by(node: Node, fast_path: bool) -> None:
    """The associations of the test went to the path the test is for."""
    if fast_path:
        assert node.fast_path is not None and node.fast_path.served > 0
    else:
        assert node.fast_path is None


def test_store_of_another_sop_class_than_the_context_is_refused(
    node_any_path: Node, fast_path: bool
) -> None:
    mr = ct_dataset(SOPClassUID=MRImageStorage)  # an MR instance, announced as MR
    data = dataset_bytes(write_part10(mr, node_any_path.archive.files.root.parent / "mr.dcm"))
    with raw_association(node_any_path.port) as (link, _):
        answer = store(link, 3, dimse.store_request(7, MR, mr.SOPInstanceUID), data)
        assert dimse.us(answer, dimse.STATUS) == StorageStatus.FAILURE_SOP_CLASS_NOT_SUPPORTED
        assert dimse.text(answer, dimse.AFFECTED_SOP_INSTANCE_UID) == mr.SOPInstanceUID
        assert echo(link) == VerificationStatus.SUCCESS  # the association goes on
        release(link)
    assert instance_count(node_any_path) == 0 and archive_files(node_any_path) == []
    assert failures(node_any_path) == ["FAILURE_SOP_CLASS_NOT_SUPPORTED"]
    served_by(node_any_path, fast_path)


def test_store_on_the_verification_context_is_refused(node_any_path: Node, fast_path: bool) -> None:
    ds = ct_dataset()
    data = dataset_bytes(write_part10(ds, node_any_path.archive.files.root.parent / "ct.dcm"))
    with raw_association(node_any_path.port) as (link, _):
        answer = store(link, 1, dimse.store_request(7, CT, ds.SOPInstanceUID), data)
        assert dimse.us(answer, dimse.STATUS) == StorageStatus.FAILURE_SOP_CLASS_NOT_SUPPORTED
        # The same instance on its own context is stored: nothing was held against it.
        answer = store(link, 3, dimse.store_request(7, CT, ds.SOPInstanceUID), data)
        assert dimse.us(answer, dimse.STATUS) == StorageStatus.SUCCESS
        release(link)
    assert instance_count(node_any_path) == 1
    assert failures(node_any_path) == ["FAILURE_SOP_CLASS_NOT_SUPPORTED"]
    served_by(node_any_path, fast_path)


@pytest.mark.parametrize(
    "uid", ["", "1." + "2" * 68], ids=["empty-instance-uid", "70-character-instance-uid"]
)
def test_store_without_a_valid_instance_uid_gets_a_failure_status(
    node_any_path: Node, fast_path: bool, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = dataset_bytes(write_part10(ct_dataset(), node_any_path.archive.files.root.parent / "a"))
    with raw_association(node_any_path.port) as (link, _):
        answer = store(link, 3, dimse.store_request(7, CT, uid), data)
        assert dimse.us(answer, dimse.STATUS) == StorageStatus.FAILURE_CANNOT_UNDERSTAND
        assert dimse.AFFECTED_SOP_INSTANCE_UID not in answer  # not a UID: not sent back
        assert echo(link) == VerificationStatus.SUCCESS
        release(link)
    assert instance_count(node_any_path) == 0 and temp_files(node_any_path) == []
    assert failures(node_any_path) == ["FAILURE_CANNOT_UNDERSTAND"]
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    served_by(node_any_path, fast_path)


def test_duplicate_presentation_context_ids_reject_the_association(
    node_any_path: Node, fast_path: bool
) -> None:
    # The same ID for CT and MR: which class a message on context 1 is for is ambiguous.
    contexts = [pdu.ProposedContext(1, CT, (EXPLICIT,)), pdu.ProposedContext(1, MR, (EXPLICIT,))]
    with connected(node_any_path.port) as link:
        link.send([request_bytes(contexts)])
        pdu_type, body = link.read_pdu()
        assert pdu_type == pdu.ASSOCIATE_RJ, f"no A-ASSOCIATE-RJ but PDU type {pdu_type}"
        # Rejected permanently by the service provider (ACSE), no reason given (PS3.8 9.3.4).
        assert pdu.decode_associate_rj(bytes(body)) == (1, 2, 1)
        with pytest.raises(PeerClosed):
            link.read_pdu()
    assert node_any_path.registry.count() == 0
    events = [r.event for r in audit.records(node_any_path.archive.engine)]
    assert "association-accepted" not in events
    if fast_path:
        assert node_any_path.fast_path is not None and node_any_path.fast_path.served == 1


def test_non_ascii_transfer_syntax_is_answered_and_the_node_serves_on(
    node_any_path: Node, fast_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A transfer syntax with a byte outside ISO 646 (PS3.8 Annex F): "1.2.\xe9".
    proposed = [*CONTEXTS, pdu.ProposedContext(5, CT, ("1.2.\x01",))]
    request = request_bytes(proposed).replace(b"1.2.\x01", b"1.2.\xe9")
    ds = ct_dataset()
    data = dataset_bytes(write_part10(ds, node_any_path.archive.files.root.parent / "a.dcm"))
    if fast_path:
        # The fast path refuses that one context and serves the others.
        with raw_association(node_any_path.port, request) as (link, accept):
            results = {cx.id: cx.result for cx in accept.contexts}
            assert results == {1: 0, 3: 0, 5: pdu.CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED}
            answer = store(link, 3, dimse.store_request(7, CT, ds.SOPInstanceUID), data)
            assert dimse.us(answer, dimse.STATUS) == StorageStatus.SUCCESS
            release(link)
        assert node_any_path.fast_path is not None
        assert node_any_path.fast_path.served == 1
        assert node_any_path.fast_path.wait_idle(deadline=time.monotonic() + 30)
        assert node_any_path.registry.count() == 0
        assert "released after" in caplog.text  # the association's end is recorded
    else:
        # pynetdicom's PDU decoder refuses the whole request: an A-ABORT, in one line.
        with connected(node_any_path.port) as link:
            link.send([request])
            pdu_type, _ = link.read_pdu()
            assert pdu_type == pdu.ABORT
        assert "Unable to decode" in caplog.text
    assert "Traceback" not in caplog.text
    assert all("\n" not in r.getMessage() and not r.exc_info for r in caplog.records)
    with raw_association(node_any_path.port) as (link, _):
        assert echo(link) == VerificationStatus.SUCCESS
        release(link)


def test_malformed_requests_do_not_lock_peers_out(node_any_path: Node) -> None:
    # More undecodable requests (on the pynetdicom path: its PDU decoder gives up) than
    # node.max_associations (10); each connection closes at once.
    request = request_bytes([pdu.ProposedContext(1, CT, ("1.2.\x01",))])
    for _ in range(12):
        with connected(node_any_path.port) as link:
            link.send([request.replace(b"1.2.\x01", b"1.2.\xe9")])
            link.sock.shutdown(socket.SHUT_WR)
            while link.sock.recv(4096):
                pass
    # An association right after is accepted, not refused for 30 s (node.acse_timeout).
    with raw_association(node_any_path.port) as (link, _):
        assert echo(link) == VerificationStatus.SUCCESS
        release(link)


def test_non_ascii_calling_ae_title_gets_one_answer(
    node_any_path: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # An AE title outside ISO 646 (PS3.8 9.3.2). The fast path once accepted it and then
    # failed every C-STORE on it with a traceback (the Source AE Title of the file meta).
    request = request_bytes(CONTEXTS).replace(
        b"RAW_SCU  ", "RAW_\u00e9\u00e9".encode("latin-1") + b"   ", 1
    )
    with connected(node_any_path.port) as link:
        link.send([request])
        pdu_type, _ = link.read_pdu()
        assert pdu_type == pdu.ABORT  # pynetdicom's decoder refuses the request
    assert "Traceback" not in caplog.text
    assert node_any_path.fast_path is None or node_any_path.fast_path.served == 0
    with raw_association(node_any_path.port) as (link, _):
        assert echo(link) == VerificationStatus.SUCCESS
        release(link)
