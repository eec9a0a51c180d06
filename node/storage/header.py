"""Read the identifying attributes of a received data set without decoding its values.

The data set bytes stay exactly as received; this only looks at them, and stops before
Pixel Data so a 0.5 MB image costs no more than its header.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from node.errors import InvalidRequest
from node.signatures.encoding import LONG_VRS
from node.storage.uids import checked_uid

_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the index keeps about an instance (PS3.4 C.6.1.1 Q/R keys, and custody)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    modality: str
    series_number: str
    series_description: str
    instance_number: str


def dataset_bytes_for_parsing(raw: bytes, transfer_syntax: UID) -> bytes:
    """Inflate a Deflated Explicit VR LE data set (PS3.5 A.5); others pass through."""
    if transfer_syntax.is_deflated:
        try:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise InvalidRequest(f"deflated data set cannot be inflated: {exc}") from exc
    return raw


def parse_dataset(
    raw: bytes,
    transfer_syntax: UID,
    *,
    stop_before_pixels: bool,
    stop_after_group: int | None = None,
    only: list[BaseTag | int] | None = None,
) -> Dataset:
    """Parse data set bytes in ``transfer_syntax``; raise InvalidRequest when malformed.

    ``stop_after_group`` ends the parse at the first element of a later group, and
    ``only`` keeps just those tags: both make header reads cheap on the C-STORE path.
    """
    data = dataset_bytes_for_parsing(raw, transfer_syntax)
    limit = _PIXEL_DATA if stop_before_pixels else 0x100000000
    if stop_after_group is not None:
        limit = min(limit, (stop_after_group + 1) << 16)

    def stop(tag: int, _vr: str | None, _length: int) -> bool:
        return tag >= limit

    try:
        ds = read_dataset(
            BytesIO(data),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=stop,
            specific_tags=only,
        )
    except Exception as exc:  # pydicom raises many types for broken encodings
        raise InvalidRequest(f"data set cannot be parsed: {exc}") from exc
    if not len(ds):
        raise InvalidRequest("data set is empty")
    return ds


_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
)
_KEYWORD_TAGS = {keyword: int(Tag(keyword)) for keyword in _KEYWORDS}
_CHARSET = int(Tag("SpecificCharacterSet"))
_HEADER_TAGS: list[BaseTag | int] = [_CHARSET, *_KEYWORD_TAGS.values()]
_LAST_HEADER_TAG = max(int(t) for t in _HEADER_TAGS)
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
_TEXT_DELIMITERS = {ord("^"), ord("="), ord("\\")}  # PN component and value separators


def _decode_text(value: bytes, vr: str, encodings: list[str]) -> str:
    if vr in _TEXT_VRS:
        return str(decode_bytes(value, encodings, _TEXT_DELIMITERS)).strip(" \0")
    return value.decode("ascii", "replace").strip(" \0")


# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(vr.encode() for vr in LONG_VRS)
_HEADER_TAG_SET = frozenset(int(t) for t in _HEADER_TAGS)
_DICTIONARY_VRS = {int(t): dictionary_VR(t) for t in _HEADER_TAGS}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_TAG_AND_SHORT = struct.Struct("<HH2sH")
_TAG_AND_LONG = struct.Struct("<HHI")


class _NotSimple(Exception):
    """A layout the quick scan leaves to pydicom (undefined lengths, odd VRs)."""


def _scan_values(data: bytes, implicit: bool) -> dict[int, tuple[bytes, str]]:
    """The header elements of a Little Endian data set, read straight from its bytes.

    Top-level elements only, each skipped by its length, until the last wanted tag has
    passed. Anything unusual (an undefined length, an unknown VR, a truncated element)
    raises _NotSimple, and pydicom's parser reads the data set instead.
    """
    values: dict[int, tuple[bytes, str]] = {}
    offset, end = 0, len(data)
    while offset + 8 <= end:
        if implicit:
            group, element, length = _TAG_AND_LONG.unpack_from(data, offset)
            tag = group << 16 | element
            vr = _DICTIONARY_VRS.get(tag, "")
            offset += 8
        else:
            group, element, raw_vr, length = _TAG_AND_SHORT.unpack_from(data, offset)
            tag = group << 16 | element
            if not (raw_vr.isalpha() and raw_vr.isupper()):
                raise _NotSimple
            vr = raw_vr.decode()
            offset += 8
            if raw_vr in _LONG_VRS:
                if offset + 4 > end:
                    raise _NotSimple
                (length,) = struct.unpack_from("<I", data, offset)
                offset += 4
        if tag > _LAST_HEADER_TAG:
            return values
        if length == _UNDEFINED_LENGTH or offset + length > end:
            raise _NotSimple
        if tag in _HEADER_TAG_SET:
            values[tag] = (data[offset : offset + length], vr)
        offset += length
    if offset != end:
        raise _NotSimple
    return values


def _raw_values(data: bytes, transfer_syntax: UID) -> dict[int, tuple[bytes, str]]:
    if transfer_syntax.is_little_endian:
        try:
            return _scan_values(data, transfer_syntax.is_implicit_VR)
        except _NotSimple:
            pass
    return _parsed_values(data, transfer_syntax)


def _parsed_values(data: bytes, transfer_syntax: UID) -> dict[int, tuple[bytes, str]]:
    values: dict[int, tuple[bytes, str]] = {}
    for element in data_element_generator(
        BytesIO(data),
        transfer_syntax.is_implicit_VR,
        transfer_syntax.is_little_endian,
        stop_when=lambda tag, _vr, _length: tag > _LAST_HEADER_TAG,
        specific_tags=_HEADER_TAGS,
    ):
        value = element.value
        if isinstance(value, bytes):
            values[int(element.tag)] = (value, element.VR or dictionary_VR(element.tag))
    return values


def read_header(raw: bytes, transfer_syntax: UID) -> InstanceHeader:
    """Parse and check the attributes the archive needs from a received data set.

    Reads raw elements up to group 0020 and decodes only the ones kept: this runs for
    every C-STORE, so it does not build a pydicom Dataset.
    """
    data = dataset_bytes_for_parsing(raw, transfer_syntax)
    try:
        values = _raw_values(data, transfer_syntax)
        encodings = ["iso8859"]
        if _CHARSET in values:
            terms = values[_CHARSET][0].decode("ascii", "replace").strip(" \0").split("\\")
            encodings = convert_encodings([t.strip() for t in terms])
        text = {
            keyword: _decode_text(*values[tag], encodings) if tag in values else ""
            for keyword, tag in _KEYWORD_TAGS.items()
        }
    except Exception as exc:  # pydicom raises many types for broken encodings
        raise InvalidRequest(f"data set cannot be parsed: {exc}") from exc
    if not values:
        raise InvalidRequest("data set is empty or has none of the identifying attributes")
    return InstanceHeader(
        sop_class_uid=checked_uid(text["SOPClassUID"], "SOP Class UID"),
        sop_instance_uid=checked_uid(text["SOPInstanceUID"], "SOP Instance UID"),
        study_uid=checked_uid(text["StudyInstanceUID"], "Study Instance UID"),
        series_uid=checked_uid(text["SeriesInstanceUID"], "Series Instance UID"),
        patient_id=text["PatientID"],
        issuer=text["IssuerOfPatientID"],
        patient_name=text["PatientName"],
        birth_date=text["PatientBirthDate"],
        sex=text["PatientSex"],
        study_date=text["StudyDate"],
        study_time=text["StudyTime"],
        accession_number=text["AccessionNumber"],
        study_id=text["StudyID"],
        study_description=text["StudyDescription"],
        referring_physician=text["ReferringPhysicianName"],
        modality=text["Modality"],
        series_number=text["SeriesNumber"],
        series_description=text["SeriesDescription"],
        instance_number=text["InstanceNumber"],
    )
