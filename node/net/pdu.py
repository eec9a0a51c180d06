"""Upper Layer PDUs (PS3.8 9.3): the few the storage fast path needs, as bytes in and out.

Only encoding and decoding live here, no sockets and no state machine. Every decoder
raises :class:`PduError` on bytes that do not follow PS3.8, so the caller can answer
with an A-ABORT (PS3.8 9.3.8) instead of a traceback.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# PDU types (PS3.8 Table 9-11 and following).
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

# Variable item types (PS3.8 9.3.2.x, Annex D).
_APPLICATION_CONTEXT = 0x10
_PRESENTATION_CONTEXT_RQ = 0x20
_PRESENTATION_CONTEXT_AC = 0x21
_ABSTRACT_SYNTAX = 0x30
_TRANSFER_SYNTAX = 0x40
_USER_INFORMATION = 0x50
_MAXIMUM_LENGTH = 0x51
_IMPLEMENTATION_CLASS_UID = 0x52
_ASYNC_OPERATIONS_WINDOW = 0x53
_IMPLEMENTATION_VERSION_NAME = 0x55

# The DICOM application context name (PS3.7 Annex A.2.1).
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
PROTOCOL_VERSION = 0x0001
HEADER_LENGTH = 6

# Presentation context results (PS3.8 Table 9-18).
CONTEXT_ACCEPTED = 0
CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ABORT sources and reasons (PS3.8 Table 9-26).
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
ABORT_REASON_NOT_SPECIFIED = 0
ABORT_REASON_UNRECOGNIZED_PDU = 1
ABORT_REASON_UNEXPECTED_PDU = 2
ABORT_REASON_INVALID_PARAMETER_VALUE = 6

_HEADER = struct.Struct(">BxI")
_ITEM = struct.Struct(">BxH")
_PDV = struct.Struct(">IBB")


class PduError(ValueError):
    """Bytes that are not a valid PDU of the expected kind."""


@dataclass(frozen=True, slots=True)
class ProposedContext:
    """One presentation context of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """One presentation context result of an A-ASSOCIATE-AC (PS3.8 9.3.3.2)."""

    id: int
    result: int
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """What an A-ASSOCIATE-RQ carries that the fast path uses.

    ``other_user_items`` lists the user information sub-item types it does not handle
    (role selection, extended negotiation, user identity): an acceptor that sees any
    leaves the association to the full implementation.
    """

    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_length: int
    implementation_class_uid: str
    implementation_version_name: str
    other_user_items: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class AssociateAccept:
    """An A-ASSOCIATE-AC (PS3.8 9.3.3)."""

    called_ae: str
    calling_ae: str
    contexts: tuple[AcceptedContext, ...]
    max_length: int
    implementation_class_uid: str
    implementation_version_name: str


def header(pdu_type: int, length: int) -> bytes:
    return _HEADER.pack(pdu_type, length)


def parse_header(data: bytes | bytearray) -> tuple[int, int]:
    """(PDU type, length of what follows the 6-byte header)."""
    if len(data) < HEADER_LENGTH:
        raise PduError("truncated PDU header")
    pdu_type, length = _HEADER.unpack_from(data)
    return int(pdu_type), int(length)


def _text(raw: bytes) -> str:
    # UIDs and AE titles in the UL may carry a trailing NUL or space (PS3.8 Annex F).
    return raw.rstrip(b"\0 ").lstrip(b" ").decode("ascii", "replace")


def _items(body: bytes | memoryview, start: int, end: int) -> list[tuple[int, bytes]]:
    items: list[tuple[int, bytes]] = []
    offset = start
    while offset < end:
        if offset + 4 > end:
            raise PduError("truncated item header")
        item_type, length = _ITEM.unpack_from(body, offset)
        offset += 4
        if offset + length > end:
            raise PduError(f"item 0x{item_type:02X} runs past its PDU")
        items.append((item_type, bytes(body[offset : offset + length])))
        offset += length
    return items


def _ae(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


def decode_associate(body: bytes) -> tuple[str, str, list[tuple[int, bytes]]]:
    """Called AE, calling AE and variable items of an A-ASSOCIATE-RQ or -AC body."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE PDU shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body)
    if not version & PROTOCOL_VERSION:
        raise PduError(f"protocol version 0x{version:04X} not supported")
    return _ae(body[4:20]), _ae(body[20:36]), _items(body, 68, len(body))


def decode_associate_rq(body: bytes) -> AssociateRequest:
    """Decode the body (after the 6-byte header) of an A-ASSOCIATE-RQ (PS3.8 9.3.2)."""
    called, calling, items = decode_associate(body)
    context_name = ""
    contexts: list[ProposedContext] = []
    user: list[tuple[int, bytes]] = []
    for item_type, value in items:
        if item_type == _APPLICATION_CONTEXT:
            context_name = _text(value)
        elif item_type == _PRESENTATION_CONTEXT_RQ:
            contexts.append(_proposed_context(value))
        elif item_type == _USER_INFORMATION:
            user = _items(value, 0, len(value))
    max_length, impl_uid, impl_version, others = 0, "", "", set()
    for sub_type, value in user:
        if sub_type == _MAXIMUM_LENGTH:
            if len(value) != 4:
                raise PduError("maximum length sub-item is not 4 bytes")
            (max_length,) = struct.unpack(">I", value)
        elif sub_type == _IMPLEMENTATION_CLASS_UID:
            impl_uid = _text(value)
        elif sub_type == _IMPLEMENTATION_VERSION_NAME:
            impl_version = _text(value)
        elif sub_type != _ASYNC_OPERATIONS_WINDOW:
            # Async window omitted from the answer means "1 outstanding" (PS3.7 D.3.3.3).
            others.add(sub_type)
    return AssociateRequest(
        called_ae=called,
        calling_ae=calling,
        application_context=context_name,
        contexts=tuple(contexts),
        max_length=max_length,
        implementation_class_uid=impl_uid,
        implementation_version_name=impl_version,
        other_user_items=frozenset(others),
    )


def _proposed_context(value: bytes) -> ProposedContext:
    if len(value) < 4:
        raise PduError("presentation context item too short")
    abstract = ""
    syntaxes: list[str] = []
    for sub_type, sub in _items(value, 4, len(value)):
        if sub_type == _ABSTRACT_SYNTAX:
            abstract = _text(sub)
        elif sub_type == _TRANSFER_SYNTAX:
            syntaxes.append(_text(sub))
    return ProposedContext(value[0], abstract, tuple(syntaxes))


def decode_associate_ac(body: bytes) -> AssociateAccept:
    """Decode the body of an A-ASSOCIATE-AC (PS3.8 9.3.3)."""
    called, calling, items = decode_associate(body)
    contexts: list[AcceptedContext] = []
    max_length, impl_uid, impl_version = 0, "", ""
    for item_type, value in items:
        if item_type == _PRESENTATION_CONTEXT_AC:
            if len(value) < 4:
                raise PduError("presentation context result item too short")
            syntax = ""
            for sub_type, sub in _items(value, 4, len(value)):
                if sub_type == _TRANSFER_SYNTAX:
                    syntax = _text(sub)
            contexts.append(AcceptedContext(value[0], value[2], syntax))
        elif item_type == _USER_INFORMATION:
            for sub_type, sub in _items(value, 0, len(value)):
                if sub_type == _MAXIMUM_LENGTH and len(sub) == 4:
                    (max_length,) = struct.unpack(">I", sub)
                elif sub_type == _IMPLEMENTATION_CLASS_UID:
                    impl_uid = _text(sub)
                elif sub_type == _IMPLEMENTATION_VERSION_NAME:
                    impl_version = _text(sub)
    return AssociateAccept(called, calling, tuple(contexts), max_length, impl_uid, impl_version)


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


def _ae_field(ae: str) -> bytes:
    # A peer's AE title is echoed in the A-ASSOCIATE-AC; one that was not ISO 646 text
    # (PS3.8 9.3.2) was decoded with replacement characters, sent back as "?".
    return ae.encode("ascii", "replace")[:16].ljust(16, b" ")


def _user_information(max_length: int, impl_uid: str, impl_version: str) -> bytes:
    sub = _item(_MAXIMUM_LENGTH, struct.pack(">I", max_length))
    sub += _item(_IMPLEMENTATION_CLASS_UID, impl_uid.encode("ascii"))
    if impl_version:
        sub += _item(_IMPLEMENTATION_VERSION_NAME, impl_version.encode("ascii")[:16])
    return _item(_USER_INFORMATION, sub)


def _associate(
    pdu_type: int, called: str, calling: str, context_items: bytes, user: bytes
) -> bytes:
    body = (
        struct.pack(">HH", PROTOCOL_VERSION, 0)
        + _ae_field(called)
        + _ae_field(calling)
        + bytes(32)
        + _item(_APPLICATION_CONTEXT, APPLICATION_CONTEXT_NAME.encode("ascii"))
        + context_items
        + user
    )
    return header(pdu_type, len(body)) + body


def encode_associate_ac(accept: AssociateAccept) -> bytes:
    """An A-ASSOCIATE-AC: one result item per proposed context (PS3.8 9.3.3.2)."""
    items = b"".join(
        _item(
            _PRESENTATION_CONTEXT_AC,
            bytes((cx.id, 0, cx.result, 0))
            + _item(_TRANSFER_SYNTAX, cx.transfer_syntax.encode("ascii")),
        )
        for cx in accept.contexts
    )
    user = _user_information(
        accept.max_length, accept.implementation_class_uid, accept.implementation_version_name
    )
    return _associate(ASSOCIATE_AC, accept.called_ae, accept.calling_ae, items, user)


def encode_associate_rq(
    called: str,
    calling: str,
    contexts: list[ProposedContext],
    max_length: int,
    impl_uid: str,
    impl_version: str,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing ``contexts`` (PS3.8 9.3.2)."""
    items = b"".join(
        _item(
            _PRESENTATION_CONTEXT_RQ,
            bytes((cx.id, 0, 0, 0))
            + _item(_ABSTRACT_SYNTAX, cx.abstract_syntax.encode("ascii"))
            + b"".join(_item(_TRANSFER_SYNTAX, ts.encode("ascii")) for ts in cx.transfer_syntaxes),
        )
        for cx in contexts
    )
    user = _user_information(max_length, impl_uid, impl_version)
    return _associate(ASSOCIATE_RQ, called, calling, items, user)


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return header(ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def decode_associate_rj(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    if len(body) != 4:
        raise PduError("A-ASSOCIATE-RJ is not 4 bytes long")
    return body[1], body[2], body[3]


def encode_release_rq() -> bytes:
    return header(RELEASE_RQ, 4) + bytes(4)


def encode_release_rp() -> bytes:
    return header(RELEASE_RP, 4) + bytes(4)


def encode_abort(source: int, reason: int) -> bytes:
    """An A-ABORT (PS3.8 9.3.8); the reason is only significant from the provider."""
    return header(ABORT, 4) + bytes((0, 0, source, reason))


def decode_abort(body: bytes) -> tuple[int, int]:
    """(source, reason) of an A-ABORT body."""
    if len(body) != 4:
        raise PduError("A-ABORT is not 4 bytes long")
    return body[2], body[3]


@dataclass(frozen=True, slots=True)
class Pdv:
    """One presentation data value item of a P-DATA-TF (PS3.8 9.3.5.1, Annex E.2)."""

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview


def decode_p_data(body: bytes | bytearray | memoryview) -> list[Pdv]:
    """The PDV items of a P-DATA-TF body, as views into ``body`` (no copies)."""
    view = memoryview(body)
    pdvs: list[Pdv] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 6 > end:
            raise PduError("truncated PDV item header")
        length, context_id, control = _PDV.unpack_from(view, offset)
        if length < 2 or offset + 4 + length > end:
            raise PduError("PDV item length does not fit its PDU")
        data = view[offset + 6 : offset + 4 + length]
        pdvs.append(Pdv(context_id, bool(control & 0x01), bool(control & 0x02), data))
        offset += 4 + length
    if not pdvs:
        raise PduError("P-DATA-TF without a PDV item")
    return pdvs


def p_data_header(context_id: int, is_command: bool, is_last: bool, length: int) -> bytes:
    """PDU header plus PDV header for one fragment of ``length`` bytes (PS3.8 Annex E)."""
    control = (0x01 if is_command else 0) | (0x02 if is_last else 0)
    return header(P_DATA_TF, length + 6) + _PDV.pack(length + 2, context_id, control)


def fragments(
    context_id: int, is_command: bool, data: bytes | memoryview, max_length: int
) -> list[tuple[bytes, memoryview]]:
    """Split a command or data set into (header, fragment) pairs that fit ``max_length``.

    ``max_length`` is the peer's maximum PDU length (0: unlimited, PS3.8 D.1); each PDU
    carries one PDV, whose item header takes 6 of those bytes.
    """
    view = memoryview(data)
    size = max(len(view), 1) if max_length == 0 else max(max_length - 6, 1)
    parts: list[tuple[bytes, memoryview]] = []
    offset = 0
    while True:
        chunk = view[offset : offset + size]
        offset += len(chunk)
        last = offset >= len(view)
        parts.append((p_data_header(context_id, is_command, last, len(chunk)), chunk))
        if last:
            return parts
