"""The stored bytes of a data set, parsed into a light tree of byte ranges.

A MAC (PS3.3 C.12.1.1.3.1.1) must be computed from the values *as stored*, padding
included; a value decoded and re-encoded by a toolkit may differ (PS3.5 6.2 allows several
paddings and spellings of one value).
So every MAC in this package is computed from a tree of :class:`Element` objects that
only point into a byte buffer: leaf values are never decoded.

Input may be Explicit VR Little Endian (and the deflated and encapsulated syntaxes of
that family) or Implicit VR Little Endian. For implicit input the VR comes from the data
dictionary, as DCMTK does; the value bytes are the same in both encodings because both
are little endian (PS3.5 7.1.2/7.1.3). Big endian is retired and refused.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from struct import Struct, pack, unpack_from

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from node.errors import NodeError
from node.storage.vr import (
    ITEM,
    ITEM_DELIMITATION,
    KNOWN_VRS,
    LONG_VRS,
    PIXEL_DATA,
    SEQUENCE_DELIMITATION,
    UNDEFINED_LENGTH,
)

_VR_BY_BYTES = {vr.encode("ascii"): vr for vr in KNOWN_VRS}
_LONG_VR_BYTES = frozenset(vr.encode("ascii") for vr in LONG_VRS)
_META_HEADER = Struct("<HH2sH")
_UL = Struct("<L")

PIXEL_REPRESENTATION = 0x00280103

# Syntaxes that cannot carry a MAC (PS3.3 C.12.1.1.3.1.1 needs Explicit VR Little Endian
# or its family; DCMTK's profiles refuse these, PS3.15 C.1).
NON_MAC_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian})


class EncodingError(NodeError):
    """The bytes are not a data set this package can read exactly."""


@dataclass(slots=True, eq=False)
class Element:
    """One element as stored: where its tag starts and where its value lies.

    For a sequence ``items`` holds the parsed items; for an undefined-length encapsulated
    value ``fragments`` holds (start, end) of each item's bytes, offset table first.
    """

    tag: int
    vr: str
    start: int
    value_start: int
    value_end: int
    items: list[list[Element]] | None = None
    fragments: list[tuple[int, int]] | None = None
    undefined: bool = False


@dataclass(slots=True, eq=False)
class Encoded:
    """A data set's bytes and the tree parsed from them.

    ``explicit`` tells how leaf elements are stored; ``transfer_syntax`` is the syntax
    of the file it came from (None when it came from memory).
    """

    buffer: bytes
    explicit: bool
    elements: list[Element]
    transfer_syntax: str | None = None
    view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.view = memoryview(self.buffer)

    def value(self, element: Element) -> bytes:
        return self.buffer[element.value_start : element.value_end]


def parse(buffer: bytes, *, explicit: bool, transfer_syntax: str | None = None) -> Encoded:
    """Parse a whole data set (no File Meta) stored in ``buffer``."""
    parser = _Parser(buffer, explicit)
    elements, _ = parser.dataset(0, len(buffer), 0)
    return Encoded(buffer, explicit, elements, transfer_syntax)


def read_file(path: Path) -> Encoded:
    """Read a DICOM Part 10 file and parse its data set (File Meta excluded)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NodeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return parse_file_bytes(data)
    except EncodingError as exc:
        raise EncodingError(f"{path}: {exc}") from exc


def parse_file_bytes(data: bytes) -> Encoded:
    """Parse the bytes of a Part 10 file: preamble, File Meta, then the data set."""
    if data[128:132] != b"DICM":
        raise EncodingError("not a DICOM file (no DICM prefix after the preamble)")
    syntax, start = file_meta(data, 132)
    if syntax == ExplicitVRBigEndian:
        raise EncodingError("Explicit VR Big Endian (retired) is not supported")
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompress(data[start:], -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise EncodingError(f"cannot inflate the deflated data set: {exc}") from exc
        start = 0
    elif start:
        data = data[start:]
    return parse(data, explicit=syntax != ImplicitVRLittleEndian, transfer_syntax=syntax)


def file_meta(data: bytes, pos: int) -> tuple[str, int]:
    """The Transfer Syntax UID and the offset of the data set (PS3.10 7.1)."""
    syntax = None
    size = len(data)
    while pos + 8 <= size:
        group, number, vr, length = _META_HEADER.unpack_from(data, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VR_BYTES:
            length, value_start = _UL.unpack_from(data, pos + 8)[0], pos + 12
        else:
            value_start = pos + 8
        if number == 0x0010:
            syntax = data[value_start : value_start + length].rstrip(b"\0 ").decode("ascii")
        pos = value_start + length
    if syntax is None:
        raise EncodingError("the File Meta Information has no Transfer Syntax UID")
    return syntax, pos


def encode_dataset(ds: Dataset) -> Encoded:
    """Serialise a pydicom data set the way pydicom will write it, and parse that.

    A data set read from a file is written in its original encoding, so raw elements are
    copied byte for byte (pydicom writes raw values unchanged when the encoding matches);
    a data set built in memory is written as Explicit VR Little Endian, which is how the
    caller must then save it.
    """
    implicit, little = ds.original_encoding
    explicit = not (implicit and little)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = not explicit
    write_dataset(fp, ds)
    return parse(fp.getvalue(), explicit=explicit)


class _Parser:
    """A recursive-descent reader of little-endian data sets (PS3.5 7.1, 7.5, A.4)."""

    def __init__(self, buffer: bytes, explicit: bool) -> None:
        self.buf = buffer
        self.explicit = explicit

    def dataset(self, pos: int, end: int | None, pixrep: int) -> tuple[list[Element], int]:
        """Elements from ``pos`` to ``end``, or to an Item Delimitation when end is None."""
        buf = self.buf
        limit = len(buf) if end is None else end
        out: list[Element] = []
        while pos < limit:
            if pos + 8 > limit:
                raise EncodingError(f"truncated element at offset {pos}")
            group, number = unpack_from("<HH", buf, pos)
            tag = (group << 16) | number
            if tag == ITEM_DELIMITATION:
                if end is not None:
                    raise EncodingError(f"unexpected Item Delimitation at offset {pos}")
                return out, pos + 8
            if group == 0xFFFE:
                raise EncodingError(f"unexpected ({group:04X},{number:04X}) at offset {pos}")
            element = self._element(tag, pos, pixrep)
            if tag == PIXEL_REPRESENTATION and element.value_end - element.value_start >= 2:
                pixrep = unpack_from("<H", buf, element.value_start)[0]
            out.append(element)
            pos = self._end_of(element)
        if end is None:
            raise EncodingError("item without Item Delimitation")
        return out, pos

    @staticmethod
    def _end_of(element: Element) -> int:
        # Undefined-length values end after a Sequence Delimitation item (8 bytes).
        return element.value_end + (8 if element.undefined else 0)

    def _element(self, tag: int, pos: int, pixrep: int) -> Element:
        buf = self.buf
        if self.explicit:
            vr = _VR_BY_BYTES.get(buf[pos + 4 : pos + 6])
            if vr is None:
                raise EncodingError(f"invalid VR at offset {pos + 4} (not explicit VR?)")
            if vr in LONG_VRS:
                length, value_start = unpack_from("<L", buf, pos + 8)[0], pos + 12
            else:
                length, value_start = unpack_from("<H", buf, pos + 6)[0], pos + 8
        else:
            vr = implicit_vr(tag, pixrep)
            length, value_start = unpack_from("<L", buf, pos + 4)[0], pos + 8
        if vr == "SQ" or (length == UNDEFINED_LENGTH and tag != PIXEL_DATA):
            # PS3.5 6.2.2: an undefined-length UN holds implicit-VR items.
            items_explicit = self.explicit and vr != "UN"
            return self._sequence(
                tag, vr if vr == "UN" else "SQ", pos, value_start, length, items_explicit, pixrep
            )
        if length == UNDEFINED_LENGTH:
            return self._encapsulated(tag, "OB" if vr == "OW" else vr, pos, value_start)
        value_end = value_start + length
        if value_end > len(buf):
            raise EncodingError(f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) is truncated")
        return Element(tag, vr, pos, value_start, value_end)

    def _sequence(
        self,
        tag: int,
        vr: str,
        pos: int,
        value_start: int,
        length: int,
        explicit: bool,
        pixrep: int,
    ) -> Element:
        saved, self.explicit = self.explicit, explicit
        try:
            items, content_end = self._items(value_start, length, pixrep)
        finally:
            self.explicit = saved
        undefined = length == UNDEFINED_LENGTH
        return Element(tag, vr, pos, value_start, content_end, items, undefined=undefined)

    def _items(self, pos: int, length: int, pixrep: int) -> tuple[list[list[Element]], int]:
        buf = self.buf
        limit = None if length == UNDEFINED_LENGTH else pos + length
        items: list[list[Element]] = []
        while limit is None or pos < limit:
            if pos + 8 > len(buf):
                raise EncodingError("sequence without Sequence Delimitation")
            group, number = unpack_from("<HH", buf, pos)
            tag = (group << 16) | number
            if tag == SEQUENCE_DELIMITATION and limit is None:
                return items, pos
            if tag != ITEM:
                raise EncodingError(f"expected an item at offset {pos}")
            item_length = unpack_from("<L", buf, pos + 4)[0]
            if item_length == UNDEFINED_LENGTH:
                elements, pos = self.dataset(pos + 8, None, pixrep)
            else:
                elements, _ = self.dataset(pos + 8, pos + 8 + item_length, pixrep)
                pos += 8 + item_length
            items.append(elements)
        return items, pos

    def _encapsulated(self, tag: int, vr: str, pos: int, value_start: int) -> Element:
        """PS3.5 A.4: items (offset table, then fragments) up to a Sequence Delimitation."""
        buf = self.buf
        fragments: list[tuple[int, int]] = []
        at = value_start
        while True:
            if at + 8 > len(buf):
                raise EncodingError("encapsulated value without Sequence Delimitation")
            group, number, length = unpack_from("<HHL", buf, at)
            if (group, number) == (0xFFFE, 0xE0DD):
                break
            if (group, number) != (0xFFFE, 0xE000) or at + 8 + length > len(buf):
                raise EncodingError(f"bad encapsulated item at offset {at}")
            fragments.append((at + 8, at + 8 + length))
            at += 8 + length
        return Element(tag, vr, pos, value_start, at, fragments=fragments, undefined=True)


def implicit_vr(tag: int, pixel_representation: int) -> str:
    """The VR DCMTK would give an implicit-VR element: the dictionary's (PS3.6).

    Ambiguous dictionary VRs are resolved like DCMTK and pydicom do for implicit input:
    OW where OW is possible (Pixel Data reads back as OW from Implicit VR, PS3.5 A.1 c) and US/SS by
    Pixel Representation. Unknown and private data elements are UN, except private
    creators (LO) and group lengths (UL).
    """
    vr = _dictionary_vr(tag)
    if vr is None:
        number = tag & 0xFFFF
        if number == 0:
            return "UL"
        if (tag >> 16) % 2 == 1 and 0x0010 <= number <= 0x00FF:
            return "LO"
        return "UN"
    if len(vr) == 2:
        return vr
    if "OW" in vr:
        return "OW"
    return "SS" if pixel_representation == 1 else "US"


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    if (tag >> 16) % 2 == 1:
        return None
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return None
    return None if vr == "NONE" else vr


def explicit_header(tag: int, vr: str, length: int) -> bytes:
    """The Explicit VR Little Endian header of an element (PS3.5 7.1.2)."""
    if vr in LONG_VRS:
        return pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    if length > 0xFFFF:
        raise EncodingError(
            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} is too long for Explicit VR"
        )
    return pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def explicit_bytes(encoded: Encoded) -> bytes:
    """Re-encode a parsed data set as Explicit VR Little Endian, values byte for byte.

    This is how an implicit-VR object is converted before signing, as ``dcmsign`` does:
    each VR is the one the MAC stream uses (:func:`implicit_vr`), so the stored object
    and its MAC agree. Sequences and items are written with undefined lengths, and group
    lengths are dropped because they no longer hold.
    """
    out = bytearray()
    for element in encoded.elements:
        _write_explicit(out, encoded, element)
    return bytes(out)


def _write_explicit(out: bytearray, encoded: Encoded, element: Element) -> None:
    tag, buf = element.tag, encoded.buffer
    if tag & 0xFFFF == 0:
        return
    delimiter = pack("<HHL", 0xFFFE, 0xE0DD, 0)
    if element.items is not None and element.vr == "UN":
        # Kept as stored: PS3.5 6.2.2 defines such a UN as implicit-VR items.
        out += explicit_header(tag, "UN", UNDEFINED_LENGTH)
        out += buf[element.value_start : element.value_end] + delimiter
    elif element.items is not None:
        out += explicit_header(tag, "SQ", UNDEFINED_LENGTH)
        for item in element.items:
            out += pack("<HHL", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
            for child in item:
                _write_explicit(out, encoded, child)
            out += pack("<HHL", 0xFFFE, 0xE00D, 0)
        out += delimiter
    elif element.fragments is not None:
        out += explicit_header(tag, element.vr, UNDEFINED_LENGTH)
        out += buf[element.value_start : element.value_end] + delimiter
    else:
        out += explicit_header(tag, element.vr, element.value_end - element.value_start)
        out += buf[element.value_start : element.value_end]
