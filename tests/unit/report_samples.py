"""A small report request shared by the report and CDA unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    GrayscaleSoftcopyPresentationStateStorage,
)

from node.documents.report import KeyImages, Observer, ReportRequest, request_item
from node.documents.sr_common import Reference
from node.documents.transcription import parse_transcription

STUDY = "1.2.3.1"
SERIES = "1.2.3.1.1"
PR_SERIES = "1.2.3.1.2"
MF_SERIES = "1.2.3.1.3"
OTHER_STUDY = "1.2.3.9"
OTHER_SERIES = "1.2.3.9.1"
CT1, CT2, GSPS, MF, PRIOR = (
    "1.2.3.1.1.1",
    "1.2.3.1.1.2",
    "1.2.3.1.2.1",
    "1.2.3.1.3.1",
    "1.2.3.9.1.1",
)
WADO = "https://pacs.example.org/wado?site=a"


def patient_study() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg^^Dr"
    ds.PatientID = "PID-7"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = "19600229"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = STUDY
    ds.StudyDate, ds.StudyTime = "20260102", "101500"
    ds.AccessionNumber = "ACC9"
    ds.StudyDescription = "CT chest"
    return ds


def image(
    uid: str,
    sop_class: str = CTImageStorage,
    *,
    frames: list[int] | None = None,
    state: str | None = None,
    concept: bool = True,
) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
    if concept:
        name = Dataset()
        name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = (
            "260753009",
            "SCT",
            "Source",
        )
        item.ConceptNameCodeSequence = Sequence([name])
    sop = Dataset()
    sop.ReferencedSOPClassUID = sop_class
    sop.ReferencedSOPInstanceUID = uid
    if frames:
        sop.ReferencedFrameNumber = frames if len(frames) > 1 else frames[0]
    if state:
        ps = Dataset()
        ps.ReferencedSOPClassUID = GrayscaleSoftcopyPresentationStateStorage
        ps.ReferencedSOPInstanceUID = state
        sop.ReferencedSOPSequence = Sequence([ps])
    icon = Dataset()
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows = icon.Columns = 2
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PixelData = b"\x01\x02\x03\x04"
    sop.IconImageSequence = Sequence([icon])
    item.ReferencedSOPSequence = Sequence([sop])
    return item


def mac_item() -> Dataset:
    item = Dataset()
    item.MACCalculationTransferSyntaxUID = "1.2.840.10008.1.2.1"
    item.MACAlgorithm = "SHA256"
    item.DataElementsSigned = [0x00080016, 0x00080018]
    item.MAC = bytes(32)
    return item


DICTATION = "FINDINGS: nodule <1 cm> & more\nIMPRESSION: benign"


def ref(uid: str, series: str, study: str = STUDY, sop_class: str = CTImageStorage) -> Reference:
    return Reference(sop_class, uid, series, study, mac_items=[mac_item()])


def request(text: str = DICTATION, **more: object) -> ReportRequest:
    fields: dict[str, object] = {
        "sop_instance_uid": "1.2.3.1.99.1",
        "series_uid": "1.2.3.1.99",
        "cda_uid": "1.2.3.1.98",
        "cda_uri": "file:///reports/1.2.3.1.98.xml",
        "patient_study": patient_study(),
        "sections": parse_transcription(text),
        "author": Observer("Smith^John", "1001", institution="Clinic"),
        "station_name": "NODE",
        "retrieve_ae_title": "NODE",
        "institution": "Example Hospital",
        "key_images": [
            KeyImages(
                "1.2.3.1.50.1",
                "Nodule <left> & right",
                [
                    image(CT1, state=GSPS),
                    image(MF, EnhancedCTImageStorage, frames=[2, 5]),
                    image(PRIOR),
                ],
            )
        ],
        "evidence": [
            ref(CT1, SERIES),
            ref(CT2, SERIES),
            ref(GSPS, PR_SERIES, sop_class=GrayscaleSoftcopyPresentationStateStorage),
            ref(MF, MF_SERIES, sop_class=EnhancedCTImageStorage),
        ],
        "other_evidence": [ref(PRIOR, OTHER_SERIES, OTHER_STUDY)],
        "requests": [request_item(STUDY, patient_study())],
        "content_time": datetime(2026, 1, 2, 12, 30, 0, tzinfo=UTC),
    }
    fields.update(more)
    return ReportRequest(**fields)  # type: ignore[arg-type]


MODALITIES = {SERIES: "CT", PR_SERIES: "PR", MF_SERIES: "CT", OTHER_SERIES: "CT"}
