"""Check the structure of a received data set by walking every element header.

A C-STORE is answered Success only when its data set is well formed (PS3.5 7.1 data
elements, 7.5 nesting of sequences and items, A.4 encapsulated pixel data, A.5 deflate):
every element header is read, every value is skipped by its length without decoding it,
and the walk descends into sequences, items and encapsulated fragments. What does not
hold (a value running past its container, bytes after the last element, an unknown VR
such as Implicit VR bytes on an Explicit VR context, an undefined length on a VR that
cannot have one, tags out of ascending order, a delimiter where none belongs) raises
:class:`MalformedDataSet` naming the byte offset, which the service layer answers with
0xC000 and that offset in the Error Comment.

The same walk collects the top-level values the index needs (:mod:`node.storage.header`),
so the structure check and the header read are one pass.

A deflated data set (PS3.5 A.5) is inflated as a stream through a bounded window: values
are skipped by inflating and discarding, so memory stays within a few window sizes
whatever the inflated size, and inflating stops at ``max_inflated`` bytes (a "deflate
bomb" of 1.5 MB that inflates to gigabytes is refused, never held in memory).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from typing import Any

from pydicom.datadict import DicomDictionary

from node.errors import InvalidRequest
from node.storage.vr import KNOWN_VRS, LONG_VRS, PIXEL_DATA, UNDEFINED_LENGTH

ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
MAX_DEPTH = 64  # sequences nest a handful of levels in practice; bound the recursion
MAX_COLLECTED_VALUE = 1 << 16  # identifying attributes are short strings

_LONG = frozenset(vr.encode("ascii") for vr in LONG_VRS)
_SHORT = frozenset(vr.encode("ascii") for vr in KNOWN_VRS - LONG_VRS)
_ENCAPSULATABLE = frozenset({b"OB", b"OW"})
# Implicit VR: a defined-length element is a sequence when the dictionary says SQ.
_IMPLICIT_SEQUENCES = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
# Per byte order: (group, element, VR, 16-bit length), (group, element, 32-bit length),
# a 32-bit length alone.
_LAYOUTS = {
    little: tuple(struct.Struct(("<" if little else ">") + f) for f in ("HH2sH", "HHL", "L"))
    for little in (True, False)
}
_WINDOW = 1 << 20  # inflated bytes kept at a time (plus at most one collected value)
_INPUT_CHUNK = 1 << 16


class MalformedDataSet(InvalidRequest):
    """The data set's element structure does not hold at ``offset``."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        # Error Comment is LO (64 characters): the offset first, then the reason.
        super().__init__(f"malformed at byte {offset}: {reason}")


class TooLarge(InvalidRequest):
    """A deflated data set inflates beyond the configured ceiling."""


class _Source:
    """The data set bytes, addressed by absolute offset: all in memory."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data: Any = data
        self.base = 0  # absolute offset of data[0]
        self.size: int | None = len(data)  # None while a stream's end is unknown

    def ensure(self, pos: int, n: int) -> int:
        """Make bytes [pos, pos + n) addressable; return the index of ``pos`` in data."""
        if self.size is not None and pos + n > self.size:
            raise MalformedDataSet(pos, "truncated element")
        return pos - self.base

    def skip(self, pos: int, n: int, element: int) -> None:
        """Bytes [pos, pos + n) must exist (the value of the element at ``element``);
        they are not looked at."""
        if self.size is not None and pos + n > self.size:
            raise MalformedDataSet(element, f"value of {n} bytes overruns the data set")

    def at_end(self, pos: int) -> bool:
        assert self.size is not None
        return pos >= self.size

    def finish(self) -> None:
        """Called after the last element: a stream checks its trailer here."""


class _InflatingSource(_Source):
    """A Deflated Explicit VR Little Endian data set, inflated through a bounded window."""

    def __init__(self, raw: bytes | memoryview, max_inflated: int) -> None:
        super().__init__(b"")
        self.data: Any = bytearray()  # the window: inflated bytes from ``base`` on
        self.size = None
        self._raw = memoryview(raw)
        self._fed = 0
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._max = max_inflated
        self._produced = 0  # absolute offset just past the last inflated byte

    def _inflate(self, want: int) -> bytes:
        """Up to ``want`` more inflated bytes; b"" only at the end of the stream."""
        while True:
            chunk: bytes | memoryview
            if self._inflater.eof:  # what follows the stream may sit in unconsumed_tail
                return b""
            if self._inflater.unconsumed_tail:
                chunk = self._inflater.unconsumed_tail
            elif self._fed < len(self._raw):
                chunk = self._raw[self._fed : self._fed + _INPUT_CHUNK]
                self._fed += len(chunk)
            else:
                chunk = b""  # all input taken: zlib may still hold output an earlier limit kept
            try:
                out = self._inflater.decompress(chunk, want)
            except zlib.error as exc:
                raise MalformedDataSet(self._produced, f"deflate: {exc}") from exc
            if not out and not chunk:
                return b""
            if out:
                self._produced += len(out)
                if self._produced > self._max:
                    raise TooLarge(f"inflates beyond storage.max_inflated_size ({self._max})")
                return out

    def _end_reached(self) -> None:
        self.size = self._produced
        if not self._inflater.eof:
            raise MalformedDataSet(self._produced, "deflated stream is truncated")

    def ensure(self, pos: int, n: int) -> int:
        if pos < self.base:  # never happens: the walk only moves forward
            raise AssertionError("inflated window moved backwards")
        if pos > self._produced:
            self.skip(self._produced, pos - self._produced, pos)
        if pos - self.base > _WINDOW:  # drop what the walk has passed
            del self.data[: pos - self.base]
            self.base = pos
        while self._produced < pos + n:
            out = self._inflate(max(_INPUT_CHUNK, pos + n - self._produced))
            if not out:
                self._end_reached()
                raise MalformedDataSet(pos, "truncated element")
            self.data += out
        return pos - self.base

    def skip(self, pos: int, n: int, element: int) -> None:
        target = pos + n
        if target <= self._produced:
            return
        # Discard the window and inflate past the value without keeping it.
        self.data = bytearray()
        self.base = self._produced
        # max_length stops each inflate at the target: the window restarts empty there.
        while self._produced < target:
            if not self._inflate(min(_WINDOW, target - self._produced)):
                self._end_reached()
                raise MalformedDataSet(element, f"value of {n} bytes overruns the data set")
        self.base = target

    def at_end(self, pos: int) -> bool:
        if pos < self._produced:
            return False
        self.ensure(pos, 0)
        out = self._inflate(_INPUT_CHUNK)
        if out:
            self.data += out
            return False
        self._end_reached()
        return pos >= self._produced

    def finish(self) -> None:
        # PS3.5 A.5 lets the deflated bytes be padded to an even length: at most one 0.
        inflater = self._inflater
        # At the stream's end zlib keeps what follows in unused_data, and also in
        # unconsumed_tail when an output limit stopped that same call.
        leftover = inflater.unused_data or inflater.unconsumed_tail
        trailer = leftover + bytes(self._raw[self._fed :])
        if trailer.strip(b"\0") or len(trailer) > 1:
            raise MalformedDataSet(self._produced, "bytes after the deflated stream")


def _item_end(pos: int, tag: int, length: int, *, undefined_item: bool) -> int:
    """An element of group FFFE among a data set's elements: only the delimiter of an
    undefined-length item may stand there (PS3.5 7.5.2); the offset after it."""
    if tag != ITEM_DELIMITER or not undefined_item:
        raise MalformedDataSet(pos, f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    if length:
        raise MalformedDataSet(pos, "item delimiter with a length")
    return pos + 8


class _Walk:
    """One walk over a data set; the top-level values in ``wanted`` land in ``values``."""

    def __init__(
        self, source: _Source, *, implicit: bool, little: bool, wanted: Collection[int]
    ) -> None:
        self.src = source
        self.implicit = implicit
        self.short, self.tag_length, self.long_length = _LAYOUTS[little]
        self.wanted = wanted
        self.values: dict[int, tuple[bytes, str]] = {}
        self.in_memory = not isinstance(source, _InflatingSource)

    def _dataset_in_memory(  # noqa: PLR0912 - one flat loop: a call per element costs 40%
        self, pos: int, end: int | None, depth: int, implicit: bool
    ) -> int:
        """:meth:`dataset` for bytes in memory, with the common case (a leaf element of
        defined length) inline: this loop runs for every element of every C-STORE."""
        data = self.src.data
        limit = len(data) if end is None else end
        where = "the data set" if end is None else "its item"
        unpack_short = self.short.unpack_from
        unpack_tag_length = self.tag_length.unpack_from
        unpack_long = self.long_length.unpack_from
        wanted = self.wanted if depth == 0 else ()
        previous = -1
        while True:
            if pos >= limit:
                if pos > limit:  # an undefined-length sequence ran past this item
                    raise MalformedDataSet(pos, "element overruns its item")
                if end is None and depth > 0:
                    raise MalformedDataSet(pos, "item without its delimiter")
                return pos
            if pos + 8 > limit:
                raise MalformedDataSet(pos, "truncated element")
            if implicit:
                group, element, length = unpack_tag_length(data, pos)
                vr, header = b"", 8
            else:
                group, element, vr, length = unpack_short(data, pos)
                header = 8
                if group == 0xFFFE:
                    (length,) = unpack_long(data, pos + 4)
                    vr = b""
                elif vr in _LONG:
                    if pos + 12 > limit:
                        raise MalformedDataSet(pos, "truncated element")
                    (length,) = unpack_long(data, pos + 8)
                    header = 12
                elif vr not in _SHORT:
                    raise MalformedDataSet(pos, f"invalid VR {vr!r} in ({group:04X},{element:04X})")
            tag = group << 16 | element
            if group == 0xFFFE:
                return _item_end(pos, tag, length, undefined_item=end is None and depth > 0)
            if tag <= previous:
                raise MalformedDataSet(pos, f"tag ({group:04X},{element:04X}) out of order")
            previous = tag
            if (
                length == UNDEFINED_LENGTH
                or vr == b"SQ"
                or (implicit and tag in _IMPLICIT_SEQUENCES)
            ):
                pos = self._value(pos, header, tag, vr, length, end, depth, implicit)
                continue
            start = pos + header
            stop = start + length
            if stop > limit:
                raise MalformedDataSet(pos, f"value of {length} bytes overruns {where}")
            if tag in wanted:
                if length > MAX_COLLECTED_VALUE:
                    raise MalformedDataSet(pos, f"value of {length} bytes is too long")
                self.values[tag] = (data[start:stop], vr.decode())
            pos = stop

    def dataset(self, pos: int, end: int | None, depth: int, *, implicit: bool) -> int:
        """Walk the elements from ``pos`` to ``end`` (None: to an item delimiter, or at
        depth 0 to the end of the data); return the offset just past them."""
        if depth > MAX_DEPTH:
            raise MalformedDataSet(pos, "sequences nested too deep")
        if self.in_memory:
            return self._dataset_in_memory(pos, end, depth, implicit)
        src = self.src
        previous = -1
        while True:
            if end is not None:
                if pos == end:
                    return pos
                if pos > end:  # an undefined-length sequence ran past this item
                    raise MalformedDataSet(pos, "element overruns its item")
            elif depth == 0 and src.at_end(pos):
                return pos
            group, element, vr, length, header = self._header(pos, implicit)
            tag = group << 16 | element
            if group == 0xFFFE:
                return _item_end(pos, tag, length, undefined_item=end is None and depth > 0)
            if tag <= previous:
                raise MalformedDataSet(pos, f"tag ({group:04X},{element:04X}) out of order")
            previous = tag
            pos = self._value(pos, header, tag, vr, length, end, depth, implicit)

    def _header(self, pos: int, implicit: bool) -> tuple[int, int, bytes, int, int]:
        """Group, element, VR (b"" when implicit or an item tag), length, header size."""
        src = self.src
        i = src.ensure(pos, 8)
        if implicit:
            group, element, length = self.tag_length.unpack_from(src.data, i)
            return group, element, b"", length, 8
        group, element, vr, length = self.short.unpack_from(src.data, i)
        if group == 0xFFFE:  # items and delimiters carry no VR (PS3.5 7.5)
            (length,) = self.long_length.unpack_from(src.data, i + 4)
            return group, element, b"", length, 8
        if vr in _LONG:
            i = src.ensure(pos, 12)
            (length,) = self.long_length.unpack_from(src.data, i + 8)
            return group, element, vr, length, 12
        if vr not in _SHORT:
            raise MalformedDataSet(pos, f"invalid VR {vr!r} in ({group:04X},{element:04X})")
        return group, element, vr, length, 8

    def _value(
        self,
        pos: int,
        header: int,
        tag: int,
        vr: bytes,
        length: int,
        end: int | None,
        depth: int,
        implicit: bool,
    ) -> int:
        start = pos + header
        if length == UNDEFINED_LENGTH:
            if implicit or vr == b"SQ":
                return self.items(start, None, depth + 1, implicit=implicit)
            if vr == b"UN":  # PS3.5 6.2.2: an undefined-length UN is Implicit VR inside
                return self.items(start, None, depth + 1, implicit=True)
            if vr in _ENCAPSULATABLE and tag == PIXEL_DATA:
                return self.fragments(start)
            raise MalformedDataSet(pos, f"undefined length on VR {vr.decode()}")
        stop = start + length
        if end is not None and stop > end:
            raise MalformedDataSet(pos, f"value of {length} bytes overruns its item")
        if vr == b"SQ" or (implicit and tag in _IMPLICIT_SEQUENCES):
            return self.items(start, stop, depth + 1, implicit=implicit)
        if depth == 0 and tag in self.wanted:
            if length > MAX_COLLECTED_VALUE:
                raise MalformedDataSet(pos, f"value of {length} bytes is too long")
            i = self.src.ensure(start, length)
            self.values[tag] = (bytes(self.src.data[i : i + length]), vr.decode())
        else:
            self.src.skip(start, length, pos)
        return stop

    def items(self, pos: int, end: int | None, depth: int, *, implicit: bool) -> int:
        """The items of a sequence (PS3.5 7.5): defined-length up to ``end``, or to the
        sequence delimiter when ``end`` is None."""
        while True:
            if end is not None and pos == end:
                return pos
            i = self.src.ensure(pos, 8)
            group, element, length = self.tag_length.unpack_from(self.src.data, i)
            tag = group << 16 | element
            if tag == SEQUENCE_DELIMITER and end is None:
                if length:
                    raise MalformedDataSet(pos, "sequence delimiter with a length")
                return pos + 8
            if tag != ITEM:
                raise MalformedDataSet(pos, f"({group:04X},{element:04X}) where an item belongs")
            start = pos + 8
            if length == UNDEFINED_LENGTH:
                pos = self.dataset(start, None, depth, implicit=implicit)
                continue
            stop = start + length
            if end is not None and stop > end:
                raise MalformedDataSet(pos, f"item of {length} bytes overruns its sequence")
            pos = self.dataset(start, stop, depth, implicit=implicit)

    def fragments(self, pos: int) -> int:
        """Encapsulated pixel data (PS3.5 A.4): defined-length items, then a delimiter."""
        while True:
            i = self.src.ensure(pos, 8)
            group, element, length = self.tag_length.unpack_from(self.src.data, i)
            tag = group << 16 | element
            if tag == SEQUENCE_DELIMITER:
                if length:
                    raise MalformedDataSet(pos, "sequence delimiter with a length")
                return pos + 8
            if tag != ITEM or length == UNDEFINED_LENGTH:
                raise MalformedDataSet(pos, "bad encapsulated pixel data fragment")
            self.src.skip(pos + 8, length, pos)
            pos += 8 + length


def walk(
    raw: bytes | memoryview,
    *,
    implicit: bool,
    little: bool,
    deflated: bool,
    wanted: Collection[int] = (),
    max_inflated: int = 4 << 30,
) -> dict[int, tuple[bytes, str]]:
    """Check every element header of ``raw``; return the top-level ``wanted`` values.

    Each value comes with its VR as encoded (empty for Implicit VR). Raises
    :class:`MalformedDataSet` (with the offset, in inflated bytes for a deflated data
    set) or :class:`TooLarge`.
    """
    source: _Source = _InflatingSource(raw, max_inflated) if deflated else _Source(raw)
    walker = _Walk(source, implicit=implicit, little=little, wanted=wanted)
    walker.dataset(0, None, 0, implicit=implicit)
    source.finish()
    return walker.values
