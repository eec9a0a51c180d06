"""The MAC byte stream (PS3.3 C.12.1.1.3.1.1/.2), checked against hand-written bytes."""

from __future__ import annotations

from struct import pack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from node.signatures.encoding import EncodingError, encode_dataset, explicit_bytes, parse
from node.signatures.macstream import data_stream, select, signable_tags

ITEM = b"\xfe\xff\x00\xe0"
SEQ_END = b"\xfe\xff\xdd\xe0"


def short(group: int, element: int, vr: str, value: bytes) -> bytes:
    return pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def long(group: int, element: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return pack("<HH2s2xL", group, element, vr.encode(), size) + value


def implicit(group: int, element: int, value: bytes, length: int | None = None) -> bytes:
    return pack("<HHL", group, element, len(value) if length is None else length) + value


def item(content: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return ITEM + b"\xff\xff\xff\xff" + content + b"\xfe\xff\x0d\xe0\0\0\0\0"
    return ITEM + pack("<L", len(content)) + content


def all_stream(buffer: bytes, explicit: bool = True) -> bytes:
    encoded = parse(buffer, explicit=explicit)
    tags = signable_tags(encoded.elements)
    return data_stream(encoded, select(encoded.elements, tags).elements).to_bytes()


NAME = short(0x0010, 0x0010, "PN", b"Doe^John")
CODE_ITEM = (
    short(0x0008, 0x0100, "SH", b"113000")
    + short(0x0008, 0x0102, "SH", b"DCM ")
    + short(0x0008, 0x0104, "LO", b"Of Interest ")
)


def test_leaf_elements_keep_their_stored_padding_and_extra_spaces() -> None:
    # "AB  " has one space more than padding needs; pydicom would strip it on decode.
    data = short(0x0008, 0x0018, "UI", b"1.2.3\0") + short(0x0010, 0x0020, "LO", b"AB  ")
    stream = all_stream(data)
    assert stream == data
    assert stream.endswith(b"\x04\x00AB  ")


def test_sequence_rules_ignore_lengths_and_item_delimiters() -> None:
    defined = long(0x0040, 0xA043, "SQ", item(CODE_ITEM))
    undefined = long(
        0x0040,
        0xA043,
        "SQ",
        item(CODE_ITEM, undefined=True) + SEQ_END + b"\0" * 4,
        length=0xFFFFFFFF,
    )
    expected = b"\x40\x00\x43\xa0SQ\0\0" + ITEM + CODE_ITEM + SEQ_END
    assert all_stream(defined) == expected
    assert all_stream(undefined) == expected


def test_empty_sequence_is_tag_sq_and_delimiter() -> None:
    empty = long(0x0040, 0xA730, "SQ", b"")
    assert all_stream(empty) == b"\x40\x00\x30\xa7SQ\0\0" + SEQ_END  # brief 2.6


def test_encapsulated_pixel_data_items_without_lengths() -> None:
    fragments = ITEM + pack("<L", 0) + ITEM + pack("<L", 4) + b"\xff\xd8\xff\xd9"
    data = long(0x7FE0, 0x0010, "OB", fragments + SEQ_END + b"\0" * 4, length=0xFFFFFFFF)
    assert (
        all_stream(data) == b"\xe0\x7f\x10\x00OB\0\0" + ITEM + ITEM + b"\xff\xd8\xff\xd9" + SEQ_END
    )


def test_excluded_elements_are_left_out_at_every_depth() -> None:
    inner = (
        short(0x0008, 0x0000, "UL", pack("<L", 10))  # group length
        + short(0x0008, 0x0100, "SH", b"1 ")
        + long(0x4FFE, 0x0001, "SQ", b"")  # MAC Parameters Sequence
        + long(0xFFFA, 0xFFFA, "SQ", b"")  # Digital Signatures Sequence
    )
    data = (
        short(0x0008, 0x0001, "UL", pack("<L", 0))  # Length to End
        + short(0x0008, 0x0016, "UI", b"1.2\0")
        + long(0x0011, 0x1010, "UN", b"ab")  # UN
        + long(0x0040, 0xA730, "SQ", item(inner))
        + long(0x0040, 0xA731, "SQ", item(long(0x0009, 0x1001, "UN", b"xy")))  # holds UN
        + long(0xFFFC, 0xFFFC, "OB", b"\0\0")  # trailing padding
    )
    expected = (
        short(0x0008, 0x0016, "UI", b"1.2\0")
        + b"\x40\x00\x30\xa7SQ\0\0"
        + ITEM
        + short(0x0008, 0x0100, "SH", b"1 ")
        + SEQ_END
    )
    assert all_stream(data) == expected
    encoded = parse(data, explicit=True)
    assert signable_tags(encoded.elements) == [0x00080016, 0x0040A730]


def test_listed_but_unsignable_elements_are_reported() -> None:
    data = short(0x0008, 0x0016, "UI", b"1.2\0") + long(0x0011, 0x1010, "UN", b"ab")
    selection = select(parse(data, explicit=True).elements, [0x00080016, 0x00111010, 0x00100010])
    assert [e.tag for e in selection.elements] == [0x00080016]
    assert selection.unsignable == [0x00111010]
    assert selection.missing == [0x00100010]


def test_implicit_input_gets_dictionary_vrs() -> None:
    data = (
        implicit(0x0008, 0x0016, b"1.2\0")
        + implicit(0x0028, 0x0103, pack("<H", 1))
        + implicit(0x0028, 0x0106, pack("<h", -5))  # US or SS: SS by Pixel Representation
        + implicit(0x0040, 0xA730, item(implicit(0x0008, 0x0100, b"1 ")))
        + implicit(0x7FE0, 0x0010, b"\x01\x02")  # OB or OW: OW, as DCMTK reads it
    )
    expected = (
        short(0x0008, 0x0016, "UI", b"1.2\0")
        + short(0x0028, 0x0103, "US", pack("<H", 1))
        + short(0x0028, 0x0106, "SS", pack("<h", -5))
        + b"\x40\x00\x30\xa7SQ\0\0"
        + ITEM
        + short(0x0008, 0x0100, "SH", b"1 ")
        + SEQ_END
        + long(0x7FE0, 0x0010, "OW", b"\x01\x02")
    )
    assert all_stream(data, explicit=False) == expected
    # Converting to explicit keeps every value and gives the same stream.
    converted = explicit_bytes(parse(data, explicit=False))
    assert all_stream(converted) == expected


def test_truncated_input_is_an_encoding_error() -> None:
    with pytest.raises(EncodingError):
        parse(short(0x0010, 0x0010, "PN", b"Doe^John")[:-2], explicit=True)
    with pytest.raises(EncodingError):
        parse(b"\x10\x00\x10\x00ZZ\x02\x00ab", explicit=True)


texts = st.text(alphabet="ABCDEFGHIJ0123456789^ ", min_size=0, max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    name=texts,
    description=texts,
    meanings=st.lists(texts, min_size=0, max_size=4),
    undefined=st.booleans(),
)
def test_stream_is_the_same_for_implicit_explicit_and_any_lengths(
    name: str, description: str, meanings: list[str], undefined: bool
) -> None:
    ds = Dataset()
    ds.PatientName = name
    ds.StudyDescription = description
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    items = []
    for meaning in meanings:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = "1", meaning
        code.is_undefined_length_sequence_item = undefined
        items.append(code)
    ds.ConceptNameCodeSequence = Sequence(items)
    ds["ConceptNameCodeSequence"].is_undefined_length = undefined
    streams = set()
    for is_implicit in (True, False):
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, is_implicit
        write_dataset(fp, ds)
        streams.add(all_stream(fp.getvalue(), explicit=not is_implicit))
    assert len(streams) == 1
    (stream,) = streams
    assert stream == all_stream(encode_dataset(ds).buffer)
    assert stream.count(SEQ_END) == 1 and stream.count(ITEM) == len(meanings)
