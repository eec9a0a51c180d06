"""The transcription parser: headings to CID 7001/7002 sections (PS3.17 X.2.2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.documents import codes
from node.documents.transcription import (
    MAX_CHARACTERS,
    TranscriptionError,
    parse_transcription,
    read_transcription,
)


def summary(text: str) -> list[tuple[str, str, str]]:
    return [(s.heading.value, s.element.value, s.text) for s in parse_transcription(text)]


def test_headings_in_any_case_with_text_on_the_same_line() -> None:
    text = (
        "CLINICAL HISTORY: fall.\n"
        "Findings:\n  Fracture of the radius.\n\n  Soft tissue swelling.\n\n"
        "impression: fracture\n"
        "Recommendations : follow-up\n"
    )
    assert summary(text) == [
        (codes.HISTORY.value, codes.HISTORY.value, "fall."),
        (
            codes.FINDINGS.value,
            codes.FINDING.value,
            "  Fracture of the radius.\n\n  Soft tissue swelling.",
        ),
        (codes.IMPRESSIONS.value, codes.IMPRESSION.value, "fracture"),
        (codes.RECOMMENDATIONS.value, codes.RECOMMENDATION.value, "follow-up"),
    ]


def test_no_headings_is_one_findings_section() -> None:
    assert summary("No acute disease.\nNormal heart size.") == [
        (codes.FINDINGS.value, codes.FINDING.value, "No acute disease.\nNormal heart size.")
    ]


def test_text_before_the_first_heading_is_findings() -> None:
    assert [s[0] for s in summary("Preamble.\nIMPRESSION: normal")] == [
        codes.FINDINGS.value,
        codes.IMPRESSIONS.value,
    ]


def test_longest_caption_wins_and_unknown_captions_are_text() -> None:
    sections = summary("Previous findings: stable\nNote: not a heading\nDr. Who: neither")
    assert sections == [
        (
            codes.PREVIOUS_FINDINGS.value,
            codes.PREVIOUS_FINDING.value,
            "stable\nNote: not a heading\nDr. Who: neither",
        )
    ]


@pytest.mark.parametrize(
    ("caption", "heading", "element"),
    [
        ("Technique", codes.CURRENT_PROCEDURE_DESCRIPTIONS, codes.PROCEDURE_DESCRIPTION),
        ("Comparison", codes.PRIOR_PROCEDURE_DESCRIPTIONS, codes.PROCEDURE_DESCRIPTION),
        ("Conclusion", codes.CONCLUSIONS, codes.CONCLUSION),
        ("Complications", codes.COMPLICATIONS, codes.COMPLICATION_OF_PROCEDURE),
        ("Indications", codes.INDICATIONS_FOR_PROCEDURE, codes.INDICATIONS_FOR_PROCEDURE),
        ("Patient   presentation", codes.PATIENT_PRESENTATION, codes.PATIENT_PRESENTATION),
    ],
)
def test_heading_table(caption: str, heading: object, element: object) -> None:
    (section,) = parse_transcription(f"{caption}: text")
    assert (section.heading, section.element) == (heading, element)


def test_line_endings_and_empty_sections() -> None:
    sections = parse_transcription("FINDINGS:\r\none\r\ntwo\rIMPRESSION:\r\n\r\n")
    assert [(s.heading.value, s.text) for s in sections] == [(codes.FINDINGS.value, "one\ntwo")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the transcription is empty"),
        (" \n\t\n", "the transcription is empty"),
        ("FINDINGS:\nIMPRESSION:", "only headings, no text"),
        ("ok\nform\x0cfeed", "line 2: control character U+000C"),
        ("ok\x00", "line 1: control character U+0000"),
        ("x" * (MAX_CHARACTERS + 1), "the limit is 1,000,000"),
    ],
)
def test_unusable_text_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(TranscriptionError, match=re.escape(message)):
        parse_transcription(text)


def test_markup_and_non_ascii_are_kept_verbatim() -> None:
    text = "<b>Ödem</b> & 日本語 \\ backslash"
    assert parse_transcription(text)[0].text == text


def test_read_utf8_with_bom_and_refuse_other_encodings(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffFINDINGS: Ödem".encode())
    assert read_transcription(good) == "FINDINGS: Ödem"
    bad = tmp_path / "bad.txt"
    bad.write_bytes("one\nÖdem".encode("latin-1"))
    with pytest.raises(TranscriptionError, match=r"line 2: not UTF-8 text \(byte 0xD6\)"):
        read_transcription(bad)
    with pytest.raises(TranscriptionError, match="transcription file not found"):
        read_transcription(tmp_path / "absent.txt")
