"""Explicit VR Little Endian encoding of in-memory data sets, byte-identical to pydicom.

pydicom's writer is general and slow: encoding a 1000-reference KOS takes a fifth of a
second, which is more than the MAC of its thousand referenced images. This encoder writes
the same bytes (PS3.5 7.1.2, 7.5: defined-length sequences and items unless pydicom would
write them undefined) for the values the node builds documents from: text, numbers, tags,
bytes, sequences, and elements already encoded (:func:`encoded_element`). For any other
value it calls pydicom's own element writer, and a data set it cannot encode exactly as
pydicom (read from a file, ambiguous VRs) is written by pydicom entirely.
``tests/unit/test_signatures_fastmac.py`` holds it to pydicom's bytes on random data sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct, pack

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from node.signatures.encoding import LONG_VRS

_SHORT = Struct("<HH2sH")
_LONG = Struct("<HH2s2xL")
_ITEM_UNDEFINED = pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_DELIMITATION = pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_DELIMITATION = pack("<HHL", 0xFFFE, 0xE0DD, 0)
_IN_MEMORY = (None, None)
_SPECIFIC_CHARACTER_SET = 0x00080005

# Text VRs pydicom encodes with the Specific Character Set (write_text), and the Python
# codecs (pydicom names) under which ASCII text encodes to the same ASCII bytes.
_CHARSET_TEXT = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_PLAIN_TEXT = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_ASCII_CODECS = frozenset(
    {"iso8859", "latin_1", "utf_8"} | {f"iso8859_{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 15)}
)
_NUMBERS = {"US": "<H", "UL": "<L", "SS": "<h", "SL": "<l", "SV": "<q", "UV": "<Q",
            "FL": "<f", "FD": "<d"}  # fmt: skip
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_MULTI = (MultiValue, list, tuple)
_SIZED = (str, bytes, bytearray, *_MULTI)


_Encodings = str | list[str]


class _PydicomOnly(Exception):
    """The data set must be written by pydicom as a whole."""


class EncodedElement(RawDataElement):
    """An element whose value bytes are already what pydicom would write for it.

    pydicom treats it as any raw element (it decodes it when the value is read); this
    encoder copies its bytes. Make them with :func:`encoded_element` only.
    """

    __slots__ = ()


def encoded_element(tag: int, vr: str, value: bytes) -> EncodedElement:
    """An Explicit VR Little Endian element from its value bytes (even length, padded).

    The value must be the canonical encoding (the one pydicom writes after decoding it):
    text padded once to even length, UI with NUL; callers build it that way.
    """
    if len(value) % 2:
        raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) value must have even length")
    return EncodedElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def encode_explicit_le(ds: Dataset) -> bytes:
    """``ds`` as pydicom's ``write_dataset`` writes it in Explicit VR Little Endian."""
    out = bytearray()
    try:
        _dataset(out, ds, _Charset(default_encoding, _converted(default_encoding), True))
    except _PydicomOnly:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_dataset(fp, ds)
        return bytes(fp.getvalue())
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _Charset:
    """The character set of a data set: as given to pydicom's element writer (``raw``), as
    it passes it on to sequence items (``converted``), and whether ASCII text is encoded
    as itself under it."""

    raw: _Encodings
    converted: _Encodings
    ascii_safe: bool


def _dataset(out: bytearray, ds: Dataset, parent: _Charset) -> None:
    """One data set in tag order, group lengths left out (pydicom ``write_dataset``).

    Items inherit the character set of their parent unless they have their own.
    """
    if ds.original_encoding != _IN_MEMORY:
        raise _PydicomOnly  # raw values read from a file follow other rules
    elements = ds._dict  # iterating the mapping directly is what makes this fast
    charset = parent
    if _SPECIFIC_CHARACTER_SET in elements:
        raw = ds.get("SpecificCharacterSet", parent.converted)
        converted = _converted(raw)
        charset = _Charset(raw, converted, _ascii_safe(converted))
    for tag in sorted(elements, key=int):  # ints compare faster than BaseTags
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue
        element = elements[tag]
        if type(element) is EncodedElement:
            _header(out, tag, element.VR or "", element.length)
            out += element.value or b""
            continue
        if isinstance(element, RawDataElement):
            element = ds[tag]  # decoded, as pydicom does before re-encoding it
        _element(out, element, charset)


def _element(  # noqa: PLR0912 - one dispatch on the VR, kept flat for speed
    out: bytearray, element: DataElement, charset: _Charset
) -> None:
    """One element under the character set of its data set."""
    vr = element.VR
    if len(vr) != 2:
        raise _PydicomOnly  # ambiguous VR: pydicom corrects it from the data set
    value = element.value
    tag = element.tag
    data: bytes | None = None
    if element.is_undefined_length:
        pass  # delimited, even when empty: pydicom's writer below
    elif vr == "SQ":
        if not value:
            _header(out, tag, vr, 0)
            return
        if isinstance(value, Sequence):
            _sequence(out, tag, value, charset)
            return
    elif value is None or (isinstance(value, _SIZED) and not value):
        _header(out, tag, vr, 0)
        return
    elif vr in _PLAIN_TEXT:
        data = _text(value, "\0" if vr == "UI" else " ", "latin-1")
    elif vr in _CHARSET_TEXT:
        data = _text(value, " ", "ascii") if charset.ascii_safe else None
    elif vr in _NUMBERS:
        if type(value) is int or (type(value) is float and vr in ("FL", "FD")):
            data = pack(_NUMBERS[vr], value)
    elif vr == "AT":
        data = _tags(value)
    elif (vr in _BYTES or vr == "UN") and isinstance(value, bytes | bytearray):
        data = bytes(value) + b"\0" if len(value) % 2 and vr != "UN" else bytes(value)
    if data is None or (vr not in LONG_VRS and len(data) > 0xFFFF):  # pydicom: UN + warning
        out += _pydicom_element(element, charset.raw)
        return
    _header(out, tag, vr, len(data))
    out += data


def _sequence(out: bytearray, tag: int, items: Sequence, charset: _Charset) -> None:
    """A defined-length sequence; items defined-length unless marked undefined (PS3.5 7.5)."""
    _header(out, tag, "SQ", 0)
    length_at = len(out) - 4
    inherited = _Charset(charset.converted, charset.converted, charset.ascii_safe)
    for item in items:
        if item.is_undefined_length_sequence_item:
            out += _ITEM_UNDEFINED
            _dataset(out, item, inherited)
            out += _ITEM_DELIMITATION
        else:
            out += _ITEM_UNDEFINED
            item_at = len(out) - 4
            _dataset(out, item, inherited)
            out[item_at : item_at + 4] = (len(out) - item_at - 4).to_bytes(4, "little")
    out[length_at : length_at + 4] = (len(out) - length_at - 4).to_bytes(4, "little")


def _header(out: bytearray, tag: int, vr: str, length: int) -> None:
    if vr in LONG_VRS:
        out += _LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    else:
        out += _SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _text(value: object, pad: str, codec: str) -> bytes | None:
    """pydicom ``write_string``/``write_text`` for str values; None for anything else."""
    if isinstance(value, _MULTI):
        if not all(isinstance(v, str) for v in value):
            return None
        value = "\\".join(value)
    if not isinstance(value, str):
        return None
    if len(value) % 2:
        value += pad
    try:
        return value.encode(codec)
    except UnicodeEncodeError:
        return None


def _tags(value: object) -> bytes | None:
    """An AT value: (group, element) uint16 pairs (PS3.5 6.2, Table 6.2-1 "AT")."""
    values = list(value) if isinstance(value, _MULTI) else [value]
    tags: list[int] = []
    for v in values:
        if not (type(v) in (int, BaseTag) and isinstance(v, int) and 0 <= v <= 0xFFFFFFFF):
            return None
        tags.append(v)
    return b"".join(pack("<HH", v >> 16, v & 0xFFFF) for v in tags)


def _converted(encodings: _Encodings) -> _Encodings:
    """The Python codec names pydicom's element writer passes on to sequence items."""
    try:
        return list(convert_encodings(encodings or [default_encoding]))
    except (LookupError, ValueError):
        return encodings


def _ascii_safe(converted: _Encodings) -> bool:
    return isinstance(converted, list) and bool(converted) and converted[0] in _ASCII_CODECS


def _pydicom_element(element: DataElement, encodings: _Encodings) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, element, encodings)
    return bytes(fp.getvalue())
