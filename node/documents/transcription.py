"""A transcribed dictation, split into report sections (PS3.17 X.2.2; TID 2005 rows 3-4).

A heading is a line that starts with a known caption and a colon, in any letter case:
``FINDINGS:``, ``Impression:``, ``clinical history:``. Text after the colon on the same
line starts the section. Each section becomes one CONTAINER named by its CID 7001
heading holding one TEXT item named by the matching CID 7002 element. A dictation
without headings (and any text before the first heading) is one "Findings" section
with one "Finding" (X.2.2). Headings without text are left out.

CID 7002 has no element for some CID 7001 headings (Indications for Procedure,
Clinical Information, Addendum); there the TEXT item carries the heading concept
itself, which the Baseline (extensible) context group allows.

The text must be UTF-8 and may hold any printable character (it is written to DICOM
as ISO_IR 192 and to the CDA as UTF-8 XML); control characters other than tab and line
breaks are refused, because neither DICOM text nor XML 1.0 can carry them.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pydicom.sr.coding import Code

from node.documents import codes
from node.errors import UsageError

MAX_CHARACTERS = 1_000_000  # a dictation, not a book: larger input is a wrong file


@dataclass(frozen=True, slots=True)
class Heading:
    """A CID 7001 heading and the CID 7002 concept of its text."""

    heading: Code
    element: Code


@dataclass(frozen=True, slots=True)
class Section:
    heading: Code
    element: Code
    text: str


FINDINGS = Heading(codes.FINDINGS, codes.FINDING)

# Spoken captions (lower case) and what they mean.
_HEADINGS: dict[str, Heading] = {}
for _names, _heading in (
    (("history", "clinical history"), Heading(codes.HISTORY, codes.HISTORY)),
    (("request", "clinical request"), Heading(codes.REQUEST, codes.REQUEST)),
    (
        ("procedure", "technique", "current procedure", "procedure description"),
        Heading(codes.CURRENT_PROCEDURE_DESCRIPTIONS, codes.PROCEDURE_DESCRIPTION),
    ),
    (
        ("comparison", "prior procedures", "prior procedure"),
        Heading(codes.PRIOR_PROCEDURE_DESCRIPTIONS, codes.PROCEDURE_DESCRIPTION),
    ),
    (("previous findings",), Heading(codes.PREVIOUS_FINDINGS, codes.PREVIOUS_FINDING)),
    (("findings", "finding"), FINDINGS),
    (("impressions", "impression"), Heading(codes.IMPRESSIONS, codes.IMPRESSION)),
    (
        ("recommendations", "recommendation"),
        Heading(codes.RECOMMENDATIONS, codes.RECOMMENDATION),
    ),
    (("conclusions", "conclusion"), Heading(codes.CONCLUSIONS, codes.CONCLUSION)),
    (("summary",), Heading(codes.SUMMARY, codes.SUMMARY)),
    (
        ("patient presentation",),
        Heading(codes.PATIENT_PRESENTATION, codes.PATIENT_PRESENTATION),
    ),
    (
        ("complications", "complication"),
        Heading(codes.COMPLICATIONS, codes.COMPLICATION_OF_PROCEDURE),
    ),
    (
        ("indications", "indication", "indications for procedure"),
        Heading(codes.INDICATIONS_FOR_PROCEDURE, codes.INDICATIONS_FOR_PROCEDURE),
    ),
    (
        ("clinical information",),
        Heading(codes.CLINICAL_INFORMATION, codes.CLINICAL_INFORMATION),
    ),
    (("addendum",), Heading(codes.ADDENDUM, codes.ADDENDUM)),
):
    for _name in _names:
        _HEADINGS[_name] = _heading

# Longest caption first, so "previous findings" wins over "findings".
_CAPTIONS = "|".join(
    re.escape(n).replace(r"\ ", r"\s+") for n in sorted(_HEADINGS, key=len, reverse=True)
)
_HEADING_LINE = re.compile(rf"^[ \t]*(?P<name>{_CAPTIONS})[ \t]*:(?P<rest>.*)$", re.IGNORECASE)
_ALLOWED_CONTROLS = {"\t", "\n"}


class TranscriptionError(UsageError):
    """The transcription cannot become a report (the reason names the line)."""


def read_transcription(source: Path | str) -> str:
    """The text of ``source`` (a file, or ``-`` for standard input) as checked Unicode."""
    try:
        data = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise TranscriptionError(f"{source}: transcription file not found") from exc
    except OSError as exc:
        raise TranscriptionError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TranscriptionError(
            f"{source}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02X})"
        ) from exc
    return text


def parse_transcription(text: str) -> list[Section]:
    """The sections of a dictation; raise TranscriptionError when there is no text."""
    if len(text) > MAX_CHARACTERS:
        raise TranscriptionError(
            f"the transcription has {len(text):,} characters; the limit is {MAX_CHARACTERS:,}"
        )
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    _check_characters(lines)
    found: list[tuple[Heading, list[str]]] = [(FINDINGS, [])]
    for line in lines:
        match = _HEADING_LINE.match(line)
        if match:
            name = " ".join(match.group("name").lower().split())
            found.append((_HEADINGS[name], [match.group("rest").strip()]))
        else:
            found[-1][1].append(line.rstrip())
    sections = [
        Section(h.heading, h.element, body)
        for h, body_lines in found
        if (body := _join(body_lines))
    ]
    if not sections:
        what = "empty" if not text.strip() else "only headings, no text"
        raise TranscriptionError(f"the transcription is {what}: a report needs text")
    return sections


def _join(lines: list[str]) -> str:
    """The section text without leading or trailing blank lines."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(lines)


def _check_characters(lines: list[str]) -> None:
    for number, line in enumerate(lines, start=1):
        for char in line:
            if char in _ALLOWED_CONTROLS:
                continue
            category = unicodedata.category(char)
            # Cc: control characters; Cs: lone surrogates; U+FFFE/FFFF are not XML.
            if category in ("Cc", "Cs") or char in ("\ufffe", "\uffff"):
                raise TranscriptionError(
                    f"line {number}: control character U+{ord(char):04X} is not allowed "
                    "in report text"
                )
