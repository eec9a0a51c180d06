"""The Part 10 file header the archive writes: preamble and File Meta Information (PS3.10 7.1).

Written by hand because this runs for every received instance: the inputs are validated
UIDs and an AE title, so the encoding is fixed and simple (Explicit VR Little Endian,
PS3.10 7.1 and PS3.5 7.1.2). :func:`data_set_digest` reads back past it.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREAMBLE = b"\0" * 128 + b"DICM"


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, ts: str, source_ae: str) -> bytes:
    """The Part 10 preamble and File Meta Information group (PS3.10 7.1), Explicit VR LE."""
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _element(0x0002, 0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _element(0x0002, 0x0010, b"UI", _padded(ts, b"\0")),
            _element(0x0002, 0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\0")),
            _element(0x0002, 0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _element(0x0002, 0x0016, b"AE", _padded(source_ae, b" ")) if source_ae else b"",
        )
    )
    return PREAMBLE + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def data_set_digest(path: Path) -> str | None:
    """SHA-256 of the data set of a Part 10 file the archive wrote (after its file meta),
    read in blocks; None when the file is not one the archive wrote."""
    with path.open("rb") as fh:
        head = fh.read(144)
        if len(head) < 144 or head[:132] != PREAMBLE or head[132:136] != b"\x02\x00\x00\x00":
            return None
        (length,) = struct.unpack_from("<I", head, 140)
        fh.seek(144 + length)
        digest = hashlib.sha256()
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
