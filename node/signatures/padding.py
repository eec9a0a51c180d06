"""Trailing padding of string values, normalised before signing as DCMTK does.

PS3.5 6.2 pads a string value to even length with one space (NUL for UI). Some objects
carry more (``"P1  "``). DCMTK removes *all* trailing padding when it reads a string
value and adds back at most one pad byte, so it computes the MAC over ``"P1"``, and
``dcmsign`` itself writes the normalised value when it signs. Observed with DCMTK 3.6.7:
``dcmconv`` turns LO ``"AB    "`` into ``"AB"`` and UI ``"1.2.3.4\\0\\0\\0"`` into
``"1.2.3.4\\0"``; leading spaces are kept.

A signature over the excess padding would be correct by the letter of C.12.1.1.3.1.1 but
"corrupted" for DCMTK, the reference peer. So, before signing, the signed string values
with excess padding are rewritten in that normal form (and only those; every other byte
is kept). Verification stays strict: it hashes what is stored.
"""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from node.signatures.encoding import Element, Encoded
from node.signatures.macstream import is_signable

STRING_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)


def normal_form(value: bytes, vr: str) -> bytes:
    """The value as DCMTK holds it: trailing padding removed, one pad byte if odd."""
    pad = b"\0" if vr == "UI" else b" "
    stripped = value.rstrip(pad)
    return stripped + pad if len(stripped) % 2 else stripped


def needs_normalising(encoded: Encoded, elements: list[Element]) -> bool:
    """Whether any of these elements (sequences included) has excess trailing padding."""
    for element in elements:
        if not is_signable(element):
            continue
        if element.items is not None:
            if any(needs_normalising(encoded, item) for item in element.items):
                return True
        elif element.vr in STRING_VRS:
            value = encoded.value(element)
            if normal_form(value, element.vr) != value:
                return True
    return False


def normalise(ds: Dataset, encoded: Encoded, elements: list[Element]) -> None:
    """Rewrite excess padding in ``ds``, whose serialisation ``encoded`` parsed to ``elements``.

    Only the sequences on the way to a changed value are decoded into items, and every
    rewritten value is a raw element, so pydicom writes exactly these bytes.
    """
    for element in elements:
        if not is_signable(element):
            continue
        if element.items is not None:
            if not any(needs_normalising(encoded, item) for item in element.items):
                continue
            for item_ds, item in zip(ds[element.tag].value, element.items, strict=True):
                normalise(item_ds, encoded, item)
        elif element.vr in STRING_VRS:
            value = encoded.value(element)
            fixed = normal_form(value, element.vr)
            if fixed != value:
                tag = Tag(element.tag)
                ds[tag] = RawDataElement(tag, element.vr, len(fixed), fixed, 0, False, True)
