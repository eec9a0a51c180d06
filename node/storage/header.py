"""Read the identifying attributes of a received data set without decoding its values.

The data set bytes stay exactly as received; this only looks at them, and stops before
Pixel Data so a 0.5 MB image costs no more than its header.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from node.errors import InvalidRequest
from node.storage.structure import walk
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


# Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) attributes: the index keeps them
# (PS3.4 C.6.1.1 keys), and the SR documents the node builds copy them from the study
# (node.documents.sr_common). The one list of them.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    *PATIENT_STUDY_KEYWORDS,
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
)
_KEYWORD_TAGS = {keyword: int(Tag(keyword)) for keyword in _KEYWORDS}
_CHARSET = int(Tag("SpecificCharacterSet"))
_HEADER_TAGS: list[BaseTag | int] = [_CHARSET, *_KEYWORD_TAGS.values()]
_LAST_HEADER_TAG = max(int(t) for t in _HEADER_TAGS)
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
_TEXT_DELIMITERS = {ord("^"), ord("="), ord("\\")}  # PN component and value separators


def _decode(tag: int, value: bytes, vr: str, encodings: list[str]) -> str:
    return _decode_text(value, vr or _DICTIONARY_VRS[tag], encodings)


def _decode_text(value: bytes, vr: str, encodings: list[str]) -> str:
    if vr in _TEXT_VRS:
        return str(decode_bytes(value, encodings, _TEXT_DELIMITERS)).strip(" \0")
    return value.decode("ascii", "replace").strip(" \0")


_HEADER_TAG_SET = frozenset(int(t) for t in _HEADER_TAGS)
_DICTIONARY_VRS = {int(t): dictionary_VR(t) for t in _HEADER_TAGS}
# Deflated data sets inflate to at most this many bytes unless configured otherwise.
DEFAULT_MAX_INFLATED = 4 << 30


def read_header(
    raw: bytes | memoryview, transfer_syntax: UID, *, max_inflated: int = DEFAULT_MAX_INFLATED
) -> InstanceHeader:
    """Check the structure of a received data set and read the attributes the archive needs.

    One walk over every element header (:mod:`node.storage.structure`) both proves the
    data set well formed and collects the raw values kept; only those are decoded. This
    runs for every C-STORE, so it builds no pydicom Dataset.
    """
    values = walk(
        raw,
        implicit=transfer_syntax.is_implicit_VR,
        little=transfer_syntax.is_little_endian,
        deflated=transfer_syntax.is_deflated,
        wanted=_HEADER_TAG_SET,
        max_inflated=max_inflated,
    )
    try:
        encodings = ["iso8859"]
        if _CHARSET in values:
            terms = values[_CHARSET][0].decode("ascii", "replace").strip(" \0").split("\\")
            encodings = convert_encodings([t.strip() for t in terms])
        text = {
            keyword: _decode(tag, *values[tag], encodings) if tag in values else ""
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
