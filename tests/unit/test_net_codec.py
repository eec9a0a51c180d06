"""node.net's PDU and DIMSE codecs, checked against pynetdicom's and pydicom's own."""

from __future__ import annotations

from io import BytesIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.filereader import read_dataset
from pynetdicom import dimse_messages
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from node.net import dimse, pdu
from node.net.acceptor import AcceptorSettings, duplicate_context_ids, negotiate
from node.net.link import _Assembly
from node.net.pdu import AcceptedContext, AssociateAccept, PduError, ProposedContext

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"


def pynetdicom_request() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = pdu.APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = "MODALITY"
    primitive.called_ae_title = "DICOM_NODE"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    contexts = [build_context(CT, [JPEG, EXPLICIT]), build_context("1.2.3.4", [EXPLICIT])]
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 32768
    primitive.user_information = [length]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    return bytes(request.encode())


def test_request_from_pynetdicom_is_decoded() -> None:
    raw = pynetdicom_request()
    pdu_type, length = pdu.parse_header(raw)
    assert (pdu_type, length) == (pdu.ASSOCIATE_RQ, len(raw) - pdu.HEADER_LENGTH)
    request = pdu.decode_associate_rq(raw[pdu.HEADER_LENGTH :])
    assert (request.calling_ae, request.called_ae) == ("MODALITY", "DICOM_NODE")
    assert request.application_context == pdu.APPLICATION_CONTEXT_NAME
    assert request.max_length == 32768
    assert request.contexts == (
        ProposedContext(1, CT, (JPEG, EXPLICIT)),
        ProposedContext(3, "1.2.3.4", (EXPLICIT,)),
    )
    assert request.other_user_items == frozenset()


def test_negotiation_prefers_our_order_and_names_rejections() -> None:
    request = pdu.decode_associate_rq(pynetdicom_request()[pdu.HEADER_LENGTH :])
    settings = AcceptorSettings("DICOM_NODE", 65536, 5.0, "1.2.3", "X", {CT: (EXPLICIT, JPEG)})
    assert negotiate(request, settings) == [
        AcceptedContext(1, pdu.CONTEXT_ACCEPTED, EXPLICIT),
        AcceptedContext(3, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED, EXPLICIT),
    ]
    only_implicit = AcceptorSettings("DICOM_NODE", 65536, 5.0, "1.2.3", "X", {CT: (IMPLICIT,)})
    assert negotiate(request, only_implicit)[0] == AcceptedContext(
        1, pdu.CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED, JPEG
    )


def test_accept_is_read_back_by_pynetdicom() -> None:
    raw = pdu.encode_associate_ac(
        AssociateAccept(
            called_ae="DICOM_NODE",
            calling_ae="MODALITY",
            contexts=(
                AcceptedContext(1, pdu.CONTEXT_ACCEPTED, EXPLICIT),
                AcceptedContext(3, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED, EXPLICIT),
            ),
            max_length=65536,
            implementation_class_uid="1.2.3.4.5",
            implementation_version_name="NODE_1",
        )
    )
    theirs = A_ASSOCIATE_AC()
    theirs.decode(raw)
    primitive = theirs.to_primitive()
    results = {
        cx.context_id: cx.result for cx in primitive.presentation_context_definition_results_list
    }
    assert results == {1: 0, 3: 3}
    assert primitive.maximum_length_received == 65536
    assert primitive.implementation_class_uid == "1.2.3.4.5"
    ours = pdu.decode_associate_ac(raw[pdu.HEADER_LENGTH :])
    assert ours.contexts[0] == AcceptedContext(1, 0, EXPLICIT)
    assert ours.max_length == 65536


def test_reject_and_abort_layouts() -> None:
    assert pdu.encode_associate_rj(1, 1, 7) == b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07"
    assert pdu.decode_associate_rj(b"\x00\x01\x01\x07") == (1, 1, 7)
    assert pdu.encode_abort(2, 6) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
    assert pdu.decode_abort(b"\x00\x00\x02\x06") == (2, 6)
    assert pdu.encode_release_rp() == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@given(size=st.integers(0, 5000), max_length=st.sampled_from([0, 7, 100, 4096]))
def test_fragments_fit_the_peer_maximum_and_reassemble(size: int, max_length: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    parts = pdu.fragments(5, False, data, max_length)
    pdvs = []
    for head, chunk in parts:
        body = head[pdu.HEADER_LENGTH :] + bytes(chunk)
        assert pdu.parse_header(head)[1] == len(body)
        if max_length:
            assert len(body) <= max_length
        pdvs += pdu.decode_p_data(body)
    assert [p.is_last for p in pdvs] == [False] * (len(pdvs) - 1) + [True]
    assert b"".join(bytes(p.data) for p in pdvs) == data
    assert all(p.context_id == 5 and not p.is_command for p in pdvs)


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x09\x01\x03abc", b"\x00\x00\x00\x01\x01\x03"],
)
def test_malformed_p_data_is_a_pdu_error(body: bytes) -> None:
    with pytest.raises(PduError):
        pdu.decode_p_data(body)


def test_command_sets_agree_with_pynetdicom_and_pydicom() -> None:
    ours = dimse.store_request(7, CT, "1.2.3.4.5", priority=2)
    decoded = read_dataset(BytesIO(ours), is_implicit_VR=True, is_little_endian=True)
    assert decoded.CommandGroupLength == len(ours) - 12
    assert decoded.CommandField == dimse.C_STORE_RQ
    assert decoded.MessageID == 7
    assert decoded.AffectedSOPClassUID == CT
    assert decoded.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert decoded.CommandDataSetType == dimse.DATA_SET_PRESENT

    primitive = C_STORE()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4.55"
    primitive.Priority = 0
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00UI\x00\x00")
    theirs = dimse_messages.C_STORE_RQ()
    theirs.primitive_to_message(primitive)
    pdata = next(theirs.encode_msg(1, 0))
    command = dimse.decode_command(pdata.presentation_data_value_list[0][1][1:])
    assert dimse.us(command, dimse.COMMAND_FIELD) == dimse.C_STORE_RQ
    assert dimse.us(command, dimse.MESSAGE_ID) == 9
    assert dimse.text(command, dimse.AFFECTED_SOP_INSTANCE_UID) == "1.2.3.4.55"
    assert dimse.has_data_set(command)


def test_response_echoes_the_request_and_cuts_the_comment() -> None:
    request = dimse.decode_command(dimse.store_request(3, CT, "1.2.3"))
    reply = dimse.response(dimse.C_STORE_RSP, request, 0xA700, "x" * 100)
    decoded = read_dataset(BytesIO(reply), is_implicit_VR=True, is_little_endian=True)
    assert decoded.MessageIDBeingRespondedTo == 3
    assert decoded.Status == 0xA700
    assert decoded.ErrorComment == "x" * 64
    assert decoded.AffectedSOPInstanceUID == "1.2.3"
    assert decoded.CommandDataSetType == dimse.NO_DATA_SET


def test_message_assembly_rules() -> None:
    command = dimse.store_request(1, CT, "1.2.3")
    assembly = _Assembly()
    first = pdu.decode_p_data(pdu.p_data_header(1, True, False, 4)[6:] + command[:4])
    rest = pdu.decode_p_data(pdu.p_data_header(1, True, True, len(command) - 4)[6:] + command[4:])
    assert assembly.add(first) is None
    assert assembly.add(rest) is None  # a data set is announced
    data = pdu.decode_p_data(pdu.p_data_header(1, False, True, 3)[6:] + b"abc")
    message = assembly.add(data)
    assert message is not None and message.data == b"abc" and message.context_id == 1
    other_context = pdu.decode_p_data(pdu.p_data_header(3, False, True, 3)[6:] + b"abc")
    fresh = _Assembly()
    fresh.add(pdu.decode_p_data(pdu.p_data_header(1, True, True, len(command))[6:] + command))
    with pytest.raises(PduError, match="two presentation contexts"):
        fresh.add(other_context)
    with pytest.raises(PduError, match="before its command"):
        _Assembly().add(data)


def test_repeated_context_ids_are_found() -> None:
    assert duplicate_context_ids([1, 3, 5]) == []
    assert duplicate_context_ids([1, 3, 1, 5, 3, 1]) == [1, 3]


def test_an_unsendable_transfer_syntax_is_refused_and_never_echoed() -> None:
    request = pdu.decode_associate_rq(
        pdu.encode_associate_rq(
            "DICOM_NODE",
            "MODALITY",
            [ProposedContext(1, CT, (EXPLICIT,)), ProposedContext(3, CT, ("1.2.\x01",))],
            0,
            "1.2.3",
            "",
        ).replace(b"1.2.\x01", b"1.2.\xe9")[pdu.HEADER_LENGTH :]
    )
    settings = AcceptorSettings("DICOM_NODE", 0, None, "1.2.3", "X", {CT: (EXPLICIT,)})
    results = negotiate(request, settings)
    assert results[1] == AcceptedContext(3, pdu.CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED, IMPLICIT)
    accept = AssociateAccept("DICOM_NODE", "MODAL\ufffdTY", tuple(results), 0, "1.2.3", "X")
    decoded = pdu.decode_associate_ac(pdu.encode_associate_ac(accept)[pdu.HEADER_LENGTH :])
    assert decoded.calling_ae == "MODAL?TY"  # a replacement character goes back as "?"


def test_response_leaves_out_what_is_no_uid() -> None:
    request = dimse.store_request(1, CT, "1." + "2" * 68)
    answer = dimse.decode_command(
        dimse.response(dimse.C_STORE_RSP, dimse.decode_command(request), 0xC000)
    )
    assert dimse.text(answer, dimse.AFFECTED_SOP_CLASS_UID) == CT
    assert dimse.AFFECTED_SOP_INSTANCE_UID not in answer
