"""A fast reader of Explicit VR Little Endian data sets for MAC streams.

The general parser (:mod:`node.signatures.encoding`) builds a tree of every element. A
MAC (PS3.3 C.12.1.1.3.1.1; rules in :mod:`node.signatures.macstream`) needs much less:
the top-level elements, which of them are signable, and each one's piece of the stream.
This module walks the element headers of the stored bytes once (PS3.5 7.1.2, 7.5, A.4)
and produces exactly that, decoding no value. A leaf element stored as Explicit VR Little
Endian is already in the stream's encoding, so it is a byte range of the buffer: runs of
leaves, Pixel Data included, are hashed straight from the buffer without a copy. Only
sequences and encapsulated values are rewritten (no lengths, no item delimiters, one
sequence delimiter), recursively.

Whatever it does not handle exactly as the general parser does (implicit VR, deflate, an
undefined-length UN, a length overrunning its container, an unknown VR, any structural
error) raises :class:`NotFast`; callers then use the general parser, which gives the same
stream or the proper error. ``tests/unit/test_signatures_fastmac.py`` holds the two to
byte-identical streams on random data sets.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from struct import Struct, pack

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from node.signatures.digests import new_hash
from node.signatures.encoding import (
    KNOWN_VRS,
    LONG_VRS,
    PIXEL_DATA,
    UNDEFINED_LENGTH,
    EncodingError,
    file_meta,
)
from node.signatures.macstream import (
    DATA_SET_TRAILING_PADDING,
    LENGTH_TO_END,
    MAC_PARAMETERS_SEQUENCE,
    signable_tag,
)
from node.signatures.padding import STRING_VRS

DIGITAL_SIGNATURES_SEQUENCE = 0xFFFAFFFA
SLOW_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)

_HEADER = Struct("<HH2sH")  # group, element, VR, 2-byte length
_LONG_LENGTH = Struct("<L")
_TAG_LENGTH = Struct("<HHL")
_ITEM_TAG = pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_DELIMITER_TAG = pack("<HH", 0xFFFE, 0xE0DD)
# VR bytes -> (name, 4-byte length?)
_VRS = {vr.encode("ascii"): (vr, vr in LONG_VRS) for vr in KNOWN_VRS}
_PADDED_VRS = frozenset(STRING_VRS)
# Tags macstream.signable_tag refuses besides its group/element rules (checked inline).
_UNSIGNABLE_TAGS = frozenset({LENGTH_TO_END, MAC_PARAMETERS_SEQUENCE, DATA_SET_TRAILING_PADDING})

Piece = bytes | tuple[int, int]  # a literal, or a (start, end) range of the buffer


class NotFast(Exception):
    """The bytes need the general parser (which also reports any real error)."""


@dataclass(slots=True, eq=False)
class Composite:
    """A top-level sequence or encapsulated value: its rewritten stream and item count."""

    pieces: list[Piece] | None  # None when its tag is unsignable (never streamed)
    items: int = 0
    encapsulated: bool = False


@dataclass(slots=True, eq=False)
class Scanned:
    """The top-level elements of one data set, as parallel lists indexed alike.

    For element ``i``: ``tags[i]``, where it starts and its value starts, ``ends[i]``
    (where it ends: a leaf's stream is ``buffer[starts[i]:ends[i]]``), whether it is
    signable, and for a sequence or encapsulated value its :class:`Composite`.
    ``padded`` holds the indices whose string values have excess trailing padding
    (filled only when asked for).
    """

    buffer: bytes
    tags: list[int]
    starts: list[int]
    value_starts: list[int]
    ends: list[int]
    signable: list[bool]
    composite: dict[int, Composite]
    padded: set[int]
    transfer_syntax: str | None = None
    nested_mac_parameters: bool = False

    def index(self, tag: int) -> int | None:
        try:
            return self.tags.index(tag)  # a C-level scan of a few dozen ints
        except ValueError:
            return None

    def text(self, tag: int) -> str | None:
        """A leaf's value with its padding removed (as ``levels.text``), or None."""
        i = self.index(tag)
        if i is None or i in self.composite:
            return None
        value = self.buffer[self.value_starts[i] : self.ends[i]]
        return value.rstrip(b"\0 ").decode("latin-1").strip()

    def item_count(self, tag: int) -> int:
        i = self.index(tag)
        composite = self.composite.get(i) if i is not None else None
        return composite.items if composite is not None else 0

    def signable_indices(self) -> list[int]:
        return [i for i, ok in enumerate(self.signable) if ok]

    def signable_tags(self) -> list[int]:
        return [tag for tag, ok in zip(self.tags, self.signable, strict=True) if ok]

    def select(self, tags: Collection[int]) -> tuple[list[int], list[int], list[int]]:
        """Indices of listed elements (chosen), listed tags absent, listed but unsignable.

        Iterates the data set, not the list (PS3.3 C.12.1.1.3.1.1), like ``macstream.select``.
        """
        wanted = set(tags)
        chosen: list[int] = []
        unsignable: list[int] = []
        for i, tag in enumerate(self.tags):
            if tag not in wanted:
                continue
            if self.signable[i]:
                chosen.append(i)
            else:
                unsignable.append(tag)
        present = {self.tags[i] for i in chosen} | set(unsignable)
        return chosen, [t for t in tags if t not in present], unsignable

    def has_encapsulated(self) -> bool:
        return any(c.encapsulated for c in self.composite.values())

    def pieces(self, indices: Iterable[int]) -> Iterator[memoryview | bytes]:
        """The stream of the elements as buffer views and literals; touching leaves merge."""
        view = memoryview(self.buffer)
        starts, ends, composite = self.starts, self.ends, self.composite
        run_start = run_end = -1
        for i in indices:
            special = composite.get(i)
            if special is None:
                if starts[i] != run_end:
                    if run_end > run_start:
                        yield view[run_start:run_end]
                    run_start = starts[i]
                run_end = ends[i]
                continue
            if run_end > run_start:
                yield view[run_start:run_end]
            run_start = run_end = -1
            for piece in special.pieces or ():
                yield piece if isinstance(piece, bytes) else view[piece[0] : piece[1]]
        if run_end > run_start:
            yield view[run_start:run_end]

    def digest(self, algorithm: str, indices: Iterable[int]) -> bytes:
        """H(stream of the elements) with a MAC Algorithm term (PS3.15 C.1)."""
        hasher = new_hash(algorithm)
        update = hasher.update
        for piece in self.pieces(indices):
            update(piece)
        return bytes(hasher.digest())

    def stream(self, indices: Iterable[int]) -> bytes:
        return b"".join(self.pieces(indices))


def read_part10(path: Path, *, check_padding: bool = False) -> Scanned:
    """Read a Part 10 file in one read and scan its data set; NotFast if it cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = [os.read(fd, os.fstat(fd).st_size + 1)]  # the whole file at once
            while chunks[-1]:  # until end of file, whatever the size said
                chunks.append(os.read(fd, 1 << 20))
        finally:
            os.close(fd)
    except OSError as exc:
        raise NotFast(str(exc)) from exc
    data = chunks[0] if len(chunks) == 2 else b"".join(chunks)
    return scan_part10(data, check_padding=check_padding)


def scan_part10(data: bytes, *, check_padding: bool = False) -> Scanned:
    """Scan the data set of a Part 10 file's bytes (File Meta skipped, never signed)."""
    if data[128:132] != b"DICM":
        raise NotFast("no DICM prefix")
    try:
        syntax, start = file_meta(data, 132)
    except (EncodingError, ValueError, IndexError) as exc:
        raise NotFast(str(exc)) from exc
    if syntax in SLOW_SYNTAXES:
        raise NotFast(f"transfer syntax {syntax}")
    return scan(data, start, transfer_syntax=syntax, check_padding=check_padding)


def scan(
    buffer: bytes,
    start: int = 0,
    *,
    transfer_syntax: str | None = None,
    check_padding: bool = False,
) -> Scanned:
    """Scan an Explicit VR Little Endian data set stored in ``buffer[start:]``."""
    scanner = _Scanner(buffer, check_padding)
    scanned = Scanned(buffer, [], [], [], [], [], {}, set(), transfer_syntax)
    try:
        scanner.top_level(start, len(buffer), scanned)
    except (IndexError, ValueError) as exc:  # struct.error is a ValueError
        raise NotFast(str(exc)) from exc
    scanned.nested_mac_parameters = scanner.nested_mac_parameters
    return scanned


class _Scanner:
    """One pass over element headers; see the module docstring for what it refuses."""

    __slots__ = ("buf", "check_padding", "nested_mac_parameters", "padded")

    def __init__(self, buf: bytes, check_padding: bool) -> None:
        self.buf = buf
        self.check_padding = check_padding
        self.nested_mac_parameters = False
        self.padded = False

    def header(self, pos: int, limit: int) -> tuple[int, str, int, int]:
        """(tag, VR, length, value start) of the element at ``pos`` (PS3.5 7.1.2)."""
        if pos + 8 > limit:
            raise NotFast(f"truncated element at {pos}")
        group, number, vr_bytes, length = _HEADER.unpack_from(self.buf, pos)
        if group == 0xFFFE:
            raise NotFast(f"delimiter where an element was expected at {pos}")
        info = _VRS.get(vr_bytes)
        if info is None:
            raise NotFast(f"unknown VR at {pos + 4}")
        vr, long = info
        if not long:
            return (group << 16) | number, vr, length, pos + 8
        if pos + 12 > limit:
            raise NotFast(f"truncated element at {pos}")
        return (group << 16) | number, vr, _LONG_LENGTH.unpack_from(self.buf, pos + 8)[0], pos + 12

    def top_level(self, pos: int, limit: int, scanned: Scanned) -> None:  # noqa: PLR0912, PLR0915
        """Every top-level element into ``scanned``; leaves inline (the common case)."""
        buf = self.buf
        header = _HEADER.unpack_from
        long_length = _LONG_LENGTH.unpack_from
        vrs = _VRS
        tags, starts = scanned.tags, scanned.starts
        value_starts, ends, signable = scanned.value_starts, scanned.ends, scanned.signable
        check_padding = self.check_padding
        while pos < limit:
            if pos + 8 > limit:
                raise NotFast(f"truncated element at {pos}")
            group, number, vr_bytes, length = header(buf, pos)
            info = vrs.get(vr_bytes)
            if info is None or group == 0xFFFE:
                raise NotFast(f"no element header at {pos}")
            vr, long = info
            if long:
                if pos + 12 > limit:
                    raise NotFast(f"truncated element at {pos}")
                length = long_length(buf, pos + 8)[0]
                value_start = pos + 12
            else:
                value_start = pos + 8
            tag = (group << 16) | number
            ok = (
                group >= 0x0008
                and number != 0
                and group != 0xFFFA
                and tag not in _UNSIGNABLE_TAGS
                and vr != "UN"
            )
            index = len(tags)
            tags.append(tag)
            starts.append(pos)
            value_starts.append(value_start)
            if vr == "SQ" or (length == UNDEFINED_LENGTH and tag != PIXEL_DATA):
                if vr == "UN":
                    raise NotFast("undefined-length UN holds implicit VR items")
                self.padded = False
                pieces: list[Piece] | None = [_sequence_header(tag)] if ok else None
                pos, has_un, count = self.sequence(value_start, length, limit, pieces)
                scanned.composite[index] = Composite(pieces, count)
                ok = ok and not has_un
                if self.padded:
                    scanned.padded.add(index)
            elif length == UNDEFINED_LENGTH:
                name = "OB" if vr == "OW" else vr
                fragments, pos = self.fragments(value_start, limit)
                scanned.composite[index] = Composite(
                    _encapsulated(tag, name, fragments), encapsulated=True
                )
            else:
                pos = value_start + length
                if pos > limit:
                    raise NotFast(f"value of ({group:04X},{number:04X}) overruns")
                if check_padding and vr in _PADDED_VRS and _excess(buf, vr, value_start, pos):
                    scanned.padded.add(index)
            ends.append(pos)
            signable.append(ok)

    def sequence(
        self, pos: int, length: int, limit: int, pieces: list[Piece] | None
    ) -> tuple[int, bool, int]:
        """Items up to the end (defined length) or the delimiter: (end, holds UN, count)."""
        stop = None if length == UNDEFINED_LENGTH else pos + length
        if stop is not None:
            if stop > limit:
                raise NotFast("sequence overruns its container")
            limit = stop
        buf = self.buf
        has_un = False
        count = 0
        while stop is None or pos < stop:
            if pos + 8 > limit:
                raise NotFast("sequence without end")
            group, number, item_length = _TAG_LENGTH.unpack_from(buf, pos)
            if group == 0xFFFE and number == 0xE0DD and stop is None:
                pos += 8
                break
            if group != 0xFFFE or number != 0xE000:
                raise NotFast(f"expected an item at {pos}")
            if pieces is not None:
                pieces.append(_ITEM_TAG)
            if item_length == UNDEFINED_LENGTH:
                pos, item_un = self.item(pos + 8, None, limit, pieces)
            else:
                item_stop = pos + 8 + item_length
                if item_stop > limit:
                    raise NotFast("item overruns its sequence")
                _, item_un = self.item(pos + 8, item_stop, item_stop, pieces)
                pos = item_stop
            has_un = has_un or item_un
            count += 1
        if stop is not None and pos != stop:
            raise NotFast("items do not end with the sequence")
        if pieces is not None:
            pieces.append(_SEQUENCE_DELIMITER_TAG)
        return pos, has_un, count

    def item(  # noqa: PLR0912, PLR0915 - one loop per element, kept together for speed
        self, pos: int, stop: int | None, limit: int, pieces: list[Piece] | None
    ) -> tuple[int, bool]:
        """The elements of one item, signable ones appended to ``pieces``: (end, holds UN).

        ``stop`` is None for an undefined-length item, which ends after its Item
        Delimitation. Unsignable elements are left out of the stream silently; a UN at any
        depth makes every enclosing sequence unsignable (C.12.1.1.3.1.1).
        """
        buf = self.buf
        has_un = False
        run_start = run_end = -1
        while True:
            if stop is not None and pos >= stop:
                if pos != stop:
                    raise NotFast("elements do not end with the item")
                break
            if pos + 8 > limit:
                raise NotFast("item without end")
            if stop is None and buf[pos : pos + 4] == b"\xfe\xff\x0d\xe0":
                pos += 8
                break
            tag, vr, length, value_start = self.header(pos, limit)
            if vr == "SQ" or (length == UNDEFINED_LENGTH and tag != PIXEL_DATA):
                if vr == "UN":
                    raise NotFast("undefined-length UN holds implicit VR items")
                if tag == MAC_PARAMETERS_SEQUENCE:
                    self.nested_mac_parameters = True
                child = pieces if pieces is not None and signable_tag(tag) else None
                mark = 0
                if child is not None:
                    if run_end > run_start:
                        child.append((run_start, run_end))
                    run_start = run_end = -1
                    mark = len(child)
                    child.append(_sequence_header(tag))
                pos, child_un, _ = self.sequence(value_start, length, limit, child)
                if child_un:
                    has_un = True
                    if child is not None:
                        del child[mark:]
            elif length == UNDEFINED_LENGTH:
                name = "OB" if vr == "OW" else vr
                fragments, pos = self.fragments(value_start, limit)
                if name == "UN":
                    has_un = True
                elif pieces is not None and signable_tag(tag):
                    if run_end > run_start:
                        pieces.append((run_start, run_end))
                    run_start = run_end = -1
                    pieces.extend(_encapsulated(tag, name, fragments))
            else:
                value_end = value_start + length
                if value_end > limit:
                    raise NotFast(f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) overruns")
                if vr == "UN":
                    has_un = True
                elif pieces is not None and signable_tag(tag):
                    if pos != run_end:
                        if run_end > run_start:
                            pieces.append((run_start, run_end))
                        run_start = pos
                    run_end = value_end
                    if (
                        self.check_padding
                        and vr in _PADDED_VRS
                        and _excess(buf, vr, value_start, value_end)
                    ):
                        self.padded = True
                pos = value_end
        if pieces is not None and run_end > run_start:
            pieces.append((run_start, run_end))
        return pos, has_un

    def fragments(self, pos: int, limit: int) -> tuple[list[tuple[int, int]], int]:
        """PS3.5 A.4: items (offset table, then fragments) up to a Sequence Delimitation."""
        buf = self.buf
        out: list[tuple[int, int]] = []
        while True:
            if pos + 8 > limit:
                raise NotFast("encapsulated value without end")
            group, number, length = _TAG_LENGTH.unpack_from(buf, pos)
            if group == 0xFFFE and number == 0xE0DD:
                return out, pos + 8
            if group != 0xFFFE or number != 0xE000 or pos + 8 + length > limit:
                raise NotFast(f"bad encapsulated item at {pos}")
            out.append((pos + 8, pos + 8 + length))
            pos += 8 + length


def _sequence_header(tag: int) -> bytes:
    return pack("<HH4s", tag >> 16, tag & 0xFFFF, b"SQ\0\0")


def _encapsulated(tag: int, vr: str, fragments: list[tuple[int, int]]) -> list[Piece]:
    pieces: list[Piece] = [pack("<HH2s2x", tag >> 16, tag & 0xFFFF, vr.encode("ascii"))]
    for fragment in fragments:
        pieces.append(_ITEM_TAG)
        pieces.append(fragment)
    pieces.append(_SEQUENCE_DELIMITER_TAG)
    return pieces


def _excess(buf: bytes, vr: str, start: int, end: int) -> bool:
    """Whether a string value differs from ``padding.normal_form`` (odd or doubly padded)."""
    length = end - start
    if length % 2:
        return True
    pad = 0 if vr == "UI" else 0x20
    return length >= 2 and buf[end - 1] == pad and buf[end - 2] == pad
