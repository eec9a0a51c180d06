"""DIMSE command sets (PS3.7 9.3, Annex E): group 0000, always Implicit VR Little Endian.

A command set is a handful of small elements, so it is decoded into a plain mapping of
element number to raw value and encoded from one; no pydicom data set is built on the
storage fast path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from node.net.pdu import PduError

# Command elements (PS3.7 Annex E), by element number within group 0000.
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x1031

# Command Field values (PS3.7 E.1).
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF

# Command Data Set Type: any other value means a data set follows (PS3.7 E.1).
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0000

# Error Comment is LO: at most 64 characters (PS3.5 Table 6.2-1).
_COMMENT_LIMIT = 64
_UID_LIMIT = 64
# AE values are padded with a space, not a NUL, and hold at most 16 characters.
_AE_ELEMENTS = frozenset({MOVE_DESTINATION, MOVE_ORIGINATOR_AE})
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")

Command = dict[int, bytes]


def decode_command(data: bytes | memoryview) -> Command:
    """Element number to raw value; raises PduError when it is not a group 0000 set."""
    view = memoryview(data)
    elements: Command = {}
    offset, end = 0, len(view)
    while offset < end:
        if offset + 8 > end:
            raise PduError("truncated command element")
        group, element, length = _ELEMENT.unpack_from(view, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise PduError("command set element outside group 0000 or past its end")
        elements[element] = bytes(view[offset : offset + length])
        offset += length
    return elements


def us(command: Command, element: int) -> int | None:
    """An US value, or None when absent or malformed."""
    raw = command.get(element)
    if raw is None or len(raw) != 2:
        return None
    return int(_US.unpack(raw)[0])


def text(command: Command, element: int) -> str:
    """A UI or AE value without its padding ('' when absent)."""
    return command.get(element, b"").rstrip(b"\0 ").decode("ascii", "replace")


def has_data_set(command: Command) -> bool:
    return us(command, COMMAND_DATA_SET_TYPE) != NO_DATA_SET


def _value(element: int, value: int | str) -> bytes:
    if isinstance(value, int):
        return _US.pack(value)
    raw = value.encode("ascii", "replace")
    if element == ERROR_COMMENT:
        raw = raw[:_COMMENT_LIMIT]
        return raw + b" " if len(raw) % 2 else raw
    if element in _AE_ELEMENTS:
        raw = raw[:16]
        return raw + b" " if len(raw) % 2 else raw  # AE padding (PS3.5 6.2)
    return raw + b"\0" if len(raw) % 2 else raw  # UI padding (PS3.5 9.1)


def encode_command(elements: Iterable[tuple[int, int | str]]) -> bytes:
    """A command set with its group length, elements in ascending order (PS3.5 7.1)."""
    body = b"".join(
        _ELEMENT.pack(0, element, len(raw)) + raw
        for element, raw in sorted((e, _value(e, v)) for e, v in elements)
    )
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + body


def response(
    command_field: int,
    request: Command,
    status: int,
    comment: str | None = None,
) -> bytes:
    """The response to ``request``: same SOP class and instance, no data set (PS3.7 9.3)."""
    elements: list[tuple[int, int | str]] = [
        (COMMAND_FIELD, command_field),
        (MESSAGE_ID_BEING_RESPONDED_TO, us(request, MESSAGE_ID) or 0),
        (COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        (STATUS, status),
    ]
    # Both UIDs are optional in a response (PS3.7 Table 9.3-2): one that is not a UI
    # value (digits and dots, at most 64 characters, PS3.5 9.1) is left out rather than sent back.
    for element in (AFFECTED_SOP_CLASS_UID, AFFECTED_SOP_INSTANCE_UID):
        uid = text(request, element)
        if 0 < len(uid) <= _UID_LIMIT and all(c in "0123456789." for c in uid):
            elements.append((element, uid))
    if comment:
        elements.append((ERROR_COMMENT, comment))
    return encode_command(elements)


def store_request(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    priority: int = 0,
    *,
    originator: tuple[str, int] | None = None,
) -> bytes:
    """A C-STORE-RQ command set announcing a data set (PS3.7 9.3.1.1).

    ``originator``: Move Originator AE Title and Message ID, when the C-STORE is a
    sub-operation of a C-MOVE (PS3.7 Table 9.3-1).
    """
    elements: list[tuple[int, int | str]] = [
        (AFFECTED_SOP_CLASS_UID, sop_class),
        (COMMAND_FIELD, C_STORE_RQ),
        (MESSAGE_ID, message_id),
        (PRIORITY, priority),
        (COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
        (AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ]
    if originator is not None:
        elements.append((MOVE_ORIGINATOR_AE, originator[0]))
        elements.append((MOVE_ORIGINATOR_MESSAGE_ID, originator[1]))
    return encode_command(elements)
