"""The MAC byte stream of PS3.3 C.12.1.1.3.1.1 and .1.2, built from stored bytes.

Rules (PS3.15 C.12.1.1.3.1.1 via PS3.3 C.12.1.1.3.1, checked byte for byte against
``dcmsign --dump``):

* Only *signable* elements go in (C.12.1.1.3.1.1): never groups below 0008, group
  lengths, Length to End, UN, a sequence holding UN at any depth, group FFFA, the MAC
  Parameters Sequence, Data Set Trailing Padding or item delimiters. Inside a signed
  sequence the same filter drops elements silently.
* Every element is encoded as Explicit VR Little Endian; leaf values exactly as stored,
  padding included.
* A sequence is ``tag SQ 00 00``, then per item ``FE FF 00 E0`` and its elements, then
  ``FE FF DD E0``: no lengths, no item delimiters, whatever the stored lengths were.
* An undefined-length encapsulated value is written the same way, one item per fragment
  (Basic Offset Table first).
* For a signature, the fields of its Digital Signatures Sequence item follow, except
  Certificate of Signer, Signature and the Certified Timestamp pair (C.12.1.1.3.1.2).

Stored explicit-LE leaf elements are already in the stream's encoding, so runs of them
are hashed straight from the file buffer through memoryviews, with no copy; this keeps the
MAC close to the speed of hashing the file. :mod:`node.signatures.rawscan` applies the same
rules without building the element tree (the fast path for stored files); tests hold the
two to identical streams.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from struct import pack

from node.signatures.digests import new_hash
from node.signatures.encoding import Element, Encoded, explicit_header

LENGTH_TO_END = 0x00080001
MAC_PARAMETERS_SEQUENCE = 0x4FFE0001
DATA_SET_TRAILING_PADDING = 0xFFFCFFFC

# Fields of a Digital Signatures Sequence item left out of the stream (C.12.1.1.3.1.2).
UNSIGNED_SIGNATURE_FIELDS = frozenset(
    {
        0x04000115,  # Certificate of Signer
        0x04000120,  # Signature
        0x04000305,  # Certified Timestamp Type
        0x04000310,  # Certified Timestamp
    }
)

_ITEM_TAG = pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_DELIMITER_TAG = pack("<HH", 0xFFFE, 0xE0DD)


def signable_tag(tag: int) -> bool:
    """Whether the tag itself may ever be listed in Data Elements Signed."""
    group = tag >> 16
    return not (
        group < 0x0008
        or tag & 0xFFFF == 0
        or tag == LENGTH_TO_END
        or group in (0xFFFA, 0xFFFE)
        or tag in (MAC_PARAMETERS_SEQUENCE, DATA_SET_TRAILING_PADDING)
    )


def is_signable(element: Element) -> bool:
    """Whether the stored element may be signed (tag, VR and contents all allow it)."""
    if not signable_tag(element.tag) or element.vr == "UN":
        return False
    return element.items is None or not contains_un(element)


def contains_un(element: Element) -> bool:
    """Whether a sequence holds a UN element at any depth (such a sequence is unsignable)."""
    for item in element.items or ():
        for child in item:
            if child.vr == "UN" or (child.items is not None and contains_un(child)):
                return True
    return False


def signable_tags(level: Iterable[Element]) -> list[int]:
    """Tags of every signable element of one data set, in data-set order."""
    return [element.tag for element in level if is_signable(element)]


@dataclass(slots=True)
class Stream:
    """A MAC stream as a list of byte pieces (zero-copy views where possible)."""

    pieces: list[memoryview | bytes] = field(default_factory=list)
    _view: memoryview | None = None
    _run_start: int = 0
    _run_end: int = 0

    def span(self, encoded: Encoded, start: int, end: int) -> None:
        """Append stored bytes; touching spans of one buffer merge into one piece."""
        if self._view is encoded.view and start == self._run_end:
            self._run_end = end
            return
        self._flush()
        self._view, self._run_start, self._run_end = encoded.view, start, end

    def literal(self, data: bytes) -> None:
        self._flush()
        self.pieces.append(data)

    def _flush(self) -> None:
        if self._view is not None and self._run_end > self._run_start:
            self.pieces.append(self._view[self._run_start : self._run_end])
        self._view = None
        self._run_start = self._run_end = 0

    def finish(self) -> Stream:
        self._flush()
        return self

    def digest(self, algorithm: str) -> bytes:
        """H(stream) with one of the six MAC Algorithm terms (PS3.15 C.1)."""
        hasher = new_hash(algorithm)
        for piece in self.finish().pieces:
            hasher.update(piece)
        return bytes(hasher.digest())

    def to_bytes(self) -> bytes:
        return b"".join(self.finish().pieces)


def emit(stream: Stream, encoded: Encoded, element: Element) -> None:
    """Append one element by the rules of C.12.1.1.3.1.1 (see the module docstring)."""
    tag = element.tag
    if element.items is not None:
        stream.literal(pack("<HH4s", tag >> 16, tag & 0xFFFF, b"SQ\0\0"))
        for item in element.items:
            stream.literal(_ITEM_TAG)
            for child in item:
                if is_signable(child):
                    emit(stream, encoded, child)
        stream.literal(_SEQUENCE_DELIMITER_TAG)
    elif element.fragments is not None:
        vr = element.vr.encode("ascii")
        stream.literal(pack("<HH2s2x", tag >> 16, tag & 0xFFFF, vr))
        for start, end in element.fragments:
            stream.literal(_ITEM_TAG)
            stream.span(encoded, start, end)
        stream.literal(_SEQUENCE_DELIMITER_TAG)
    elif encoded.explicit:
        stream.span(encoded, element.start, element.value_end)
    else:
        length = element.value_end - element.value_start
        stream.literal(explicit_header(tag, element.vr, length))
        stream.span(encoded, element.value_start, element.value_end)


@dataclass(frozen=True, slots=True)
class Selection:
    """The elements of one level chosen for a MAC, and listed tags that are unusable."""

    elements: list[Element]
    missing: list[int]
    unsignable: list[int]


def select(level: Iterable[Element], tags: Collection[int]) -> Selection:
    """Elements of ``level`` whose tags are listed, iterating the data set, not the list
    (PS3.3 C.12.1.1.3.1.1; DCMTK's ``verifyCurrent`` does the same)."""
    wanted = set(tags)
    chosen: list[Element] = []
    unsignable: list[int] = []
    for element in level:
        if element.tag not in wanted:
            continue
        if is_signable(element):
            chosen.append(element)
        else:
            unsignable.append(element.tag)
    present = {element.tag for element in chosen} | set(unsignable)
    missing = [tag for tag in tags if tag not in present]
    return Selection(chosen, missing, unsignable)


def data_stream(encoded: Encoded, elements: Iterable[Element]) -> Stream:
    """The stream of the chosen data-set elements alone (a Referenced SOP Instance MAC)."""
    stream = Stream()
    for element in elements:
        emit(stream, encoded, element)
    return stream


def append_signature_fields(stream: Stream, encoded: Encoded, item: Iterable[Element]) -> None:
    """Append the signed fields of a Digital Signatures Sequence item (C.12.1.1.3.1.2)."""
    for element in item:
        if element.tag not in UNSIGNED_SIGNATURE_FIELDS and is_signable(element):
            emit(stream, encoded, element)
