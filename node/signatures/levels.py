"""Levels of a data set (the main data set and every sequence item) and their values.

The Digital Signatures macro may sit in the main data set or in any sequence item
(PS3.3 C.12.1.1.3); a level is addressed by a path such as
``CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]``, the form
dcmsign's ``--sign-item`` takes (0-based item numbers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from struct import iter_unpack, unpack_from

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from node.errors import UsageError
from node.signatures.encoding import Element, Encoded
from node.signatures.profiles import LevelFacts

ORIGINAL_ATTRIBUTES_SEQUENCE = 0x04000561
Level = list[Element]
Step = tuple[int, int]  # (sequence tag, item index)

_STEP = re.compile(
    r"^\s*(?:\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?|([A-Za-z][A-Za-z0-9]*))\[(\d+)\]\s*$"
)


def parse_path(text: str) -> list[Step]:
    """``Keyword[i].Keyword[j]`` (or ``(gggg,eeee)[i]``) as (tag, index) steps."""
    steps: list[Step] = []
    for part in text.split("."):
        match = _STEP.match(part)
        if match is None:
            raise UsageError(f"bad item path {text!r}: expected Keyword[index] parts")
        group, number, keyword, index = match.groups()
        if keyword:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise UsageError(f"bad item path {text!r}: unknown keyword {keyword}")
        else:
            tag = int(group + number, 16)
        steps.append((tag, int(index)))
    return steps


def format_path(steps: list[Step]) -> str:
    """The printable form of a path; the main data set is ``(main)``."""
    if not steps:
        return "(main)"
    return ".".join(f"{tag_name(tag)}[{index}]" for tag, index in steps)


def tag_name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def find(level: Level, tag: int) -> Element | None:
    for element in level:
        if element.tag == tag:
            return element
    return None


def resolve(encoded: Encoded, steps: list[Step]) -> Level:
    """The level a path names, or UsageError saying which step is missing."""
    level = encoded.elements
    for depth, (tag, index) in enumerate(steps):
        element = find(level, tag)
        where = format_path(steps[: depth + 1])
        if element is None or element.items is None:
            raise UsageError(f"item path {where}: no such sequence")
        if index >= len(element.items):
            raise UsageError(f"item path {where}: the sequence has {len(element.items)} items")
        level = element.items[index]
    return level


@dataclass(frozen=True, slots=True)
class LevelAt:
    """A level and where it is; ``in_original_attributes`` marks history copies."""

    steps: list[Step]
    level: Level
    in_original_attributes: bool


def walk(encoded: Encoded) -> Iterator[LevelAt]:
    """Every level, main data set first, depth first, in data-set order."""
    yield from _walk(encoded.elements, [], False)


def _walk(level: Level, steps: list[Step], in_original: bool) -> Iterator[LevelAt]:
    yield LevelAt(steps, level, in_original)
    for element in level:
        if element.items is None:
            continue
        inside = in_original or element.tag == ORIGINAL_ATTRIBUTES_SEQUENCE
        for index, item in enumerate(element.items):
            yield from _walk(item, [*steps, (element.tag, index)], inside)


def text(encoded: Encoded, level: Level, tag: int) -> str | None:
    """A text value with its padding removed, or None when absent."""
    element = find(level, tag)
    if element is None:
        return None
    return encoded.value(element).rstrip(b"\0 ").decode("latin-1").strip()


def unsigned_short(encoded: Encoded, element: Element) -> int | None:
    if element.value_end - element.value_start < 2:
        return None
    return int(unpack_from("<H", encoded.buffer, element.value_start)[0])


def attribute_tags(encoded: Encoded, element: Element) -> list[int]:
    """An AT value: (group, element) uint16 pairs, not uint32 (PS3.5 6.2, Table 6.2-1 "AT")."""
    data = encoded.value(element)
    usable = len(data) - len(data) % 4
    return [(group << 16) | number for group, number in iter_unpack("<HH", data[:usable])]


def item_count(level: Level, tag: int) -> int:
    element = find(level, tag)
    return len(element.items) if element is not None and element.items is not None else 0


def level_facts(encoded: Encoded, level: Level, *, top: bool) -> LevelFacts:
    """What the profile rules need to know of a level and its main data set."""
    main = encoded.elements
    return LevelFacts(
        present=frozenset(e.tag for e in level),
        top_level=top,
        sop_class_uid=text(encoded, main, 0x00080016) or "",
        verification_flag=text(encoded, main, 0x0040A493),
        verifying_observers=item_count(main, 0x0040A073),
    )
