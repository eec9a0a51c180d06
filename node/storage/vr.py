"""Value Representations and the tags the encoding rules single out (PS3.5 6.2, 7.1, 7.5).

The lowest layer's vocabulary: the structure walk of received data sets and the
signature encoder both read element headers by these rules.
"""

from __future__ import annotations

# VRs whose explicit encoding has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
KNOWN_VRS = LONG_VRS | {
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
}  # fmt: skip

UNDEFINED_LENGTH = 0xFFFFFFFF
# Item and delimitation tags (PS3.5 7.5).
ITEM = 0xFFFEE000
ITEM_DELIMITATION = 0xFFFEE00D
SEQUENCE_DELIMITATION = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
