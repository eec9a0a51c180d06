"""Read the identifying attributes of a received data set without decoding its values.

The data set bytes stay exactly as received; this only looks at them, and stops before
Pixel Data so a 0.5 MB image costs no more than its header.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from node.errors import InvalidRequest
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


def parse_dataset(raw: bytes, transfer_syntax: UID, *, stop_before_pixels: bool) -> Dataset:
    """Parse data set bytes in ``transfer_syntax``; raise InvalidRequest when malformed."""
    data = dataset_bytes_for_parsing(raw, transfer_syntax)

    def stop(tag: int, _vr: str | None, _length: int) -> bool:
        return stop_before_pixels and tag >= _PIXEL_DATA

    try:
        ds = read_dataset(
            BytesIO(data),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=stop if stop_before_pixels else None,
        )
    except Exception as exc:  # pydicom raises many types for broken encodings
        raise InvalidRequest(f"data set cannot be parsed: {exc}") from exc
    if not len(ds):
        raise InvalidRequest("data set is empty")
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise InvalidRequest(f"{keyword} cannot be decoded: {exc}") from exc
    if value is None:
        return ""
    return str(value).strip()


def read_header(raw: bytes, transfer_syntax: UID) -> InstanceHeader:
    """Parse and check the attributes the archive needs from a received data set."""
    ds = parse_dataset(raw, transfer_syntax, stop_before_pixels=True)
    return InstanceHeader(
        sop_class_uid=checked_uid(_text(ds, "SOPClassUID"), "SOP Class UID"),
        sop_instance_uid=checked_uid(_text(ds, "SOPInstanceUID"), "SOP Instance UID"),
        study_uid=checked_uid(_text(ds, "StudyInstanceUID"), "Study Instance UID"),
        series_uid=checked_uid(_text(ds, "SeriesInstanceUID"), "Series Instance UID"),
        patient_id=_text(ds, "PatientID"),
        issuer=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        modality=_text(ds, "Modality"),
        series_number=_text(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        instance_number=_text(ds, "InstanceNumber"),
    )
