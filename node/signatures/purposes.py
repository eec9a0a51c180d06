"""Digital Signature Purpose codes: CID 7007, coding scheme ``ASTM-sigpurpose`` (ASTM E1762).

Used in the Digital Signature Purpose Code Sequence (0400,0401), PS3.3 C.12.1.1.3;
required on every signature under the SR RSA profile (PS3.15 C.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.errors import UsageError

CODING_SCHEME = "ASTM-sigpurpose"


@dataclass(frozen=True, slots=True)
class Purpose:
    """One code of CID 7007."""

    value: str
    meaning: str

    def code_item(self) -> Dataset:
        """The single item of (0400,0401): Code Value, Coding Scheme Designator, Meaning."""
        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = CODING_SCHEME
        item.CodeMeaning = self.meaning
        return item

    def __str__(self) -> str:
        return f"{self.value} ({self.meaning})"


PURPOSES = tuple(
    Purpose(str(number), meaning)
    for number, meaning in enumerate(
        (
            "Author's Signature",
            "Coauthor's Signature",
            "Co-participant's Signature",
            "Transcriptionist/Recorder Signature",
            "Verification Signature",
            "Validation Signature",
            "Consent Signature",
            "Signature Witness Signature",
            "Event Witness Signature",
            "Identity Witness Signature",
            "Consent Witness Signature",
            "Interpreter Signature",
            "Review Signature",
            "Source Signature",
            "Addendum Signature",
            "Modification Signature",
            "Administrative (Error/Edit) Signature",
            "Timestamp Signature",
        ),
        start=1,
    )
)
AUTHOR = PURPOSES[0]
VERIFICATION = PURPOSES[4]
SOURCE = PURPOSES[13]


def _normalise(text: str) -> str:
    # "author", "Author's Signature" and "AUTHOR-SIGNATURE" all name code 1.
    words = re.sub(r"[^a-z0-9]+", " ", text.lower().replace("'s", "")).split()
    if words and words[-1] == "signature" and len(words) > 1:
        words = words[:-1]
    return " ".join(words)


_BY_NAME = {_normalise(p.meaning): p for p in PURPOSES}


def purpose(key: str | int) -> Purpose:
    """A purpose by number (1-18, as int or string) or by name, case and punctuation free."""
    text = str(key).strip()
    if text.isdigit():
        number = int(text)
        if 1 <= number <= len(PURPOSES):
            return PURPOSES[number - 1]
        raise UsageError(f"signature purpose {number} is not in CID 7007 (1-18)")
    found = _BY_NAME.get(_normalise(text))
    if found is None:
        raise UsageError(f"unknown signature purpose {key!r}; use 1-18 or a name from CID 7007")
    return found
