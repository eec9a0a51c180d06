"""Key Object Selection Document builder (PS3.3 A.35.4, TID 2010), with secure references.

The builder makes a complete, valid KOS data set or raises IODError; it never returns a
half-built document. Signing is a separate step (:mod:`node.signatures.sign`) because the
signature must cover the finished document.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import UID, KeyObjectSelectionDocumentStorage

from node.documents.codes import (
    DEVICE,
    DEVICE_OBSERVER_NAME,
    DEVICE_OBSERVER_UID,
    KEY_OBJECT_DESCRIPTION,
    OBSERVER_TYPE,
)
from node.errors import NodeError
from node.identity import IMPLEMENTATION_VERSION_NAME

MPPS_SOP_CLASS = UID("1.2.840.10008.3.1.2.3.3")

# Copied from a referenced instance: Patient (C.7.1.1) and General Study (C.7.2.1).
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
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


class IODError(NodeError):
    """A document cannot be built as asked (argument named, standard section cited)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One referenced instance, with the secure-reference items for it (C.17-3a)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    mac_items: Seq[Dataset] = ()
    signature_items: Seq[Dataset] = ()


@dataclass(frozen=True, slots=True)
class KosRequest:
    title: Code
    sop_instance_uid: str
    series_uid: str
    series_number: int
    references: Seq[Reference]
    patient_study: Dataset  # attributes copied into the document
    retrieve_ae_title: str
    device_uid: str
    device_name: str
    description: str | None = None
    performed_procedure_step_uid: str | None = None
    content_time: datetime = field(default_factory=lambda: datetime.now(UTC))


def value_type(sop_class_uid: str) -> str:
    """IMAGE, WAVEFORM or COMPOSITE from the SOP class name (as dcm4chee-arc does)."""
    name = UID(sop_class_uid).name
    if "Image Storage" in name:
        return "IMAGE"
    if "Waveform" in name:
        return "WAVEFORM"
    return "COMPOSITE"


def patient_study_from(path: Path) -> Dataset:
    """The Patient and General Study attributes of a stored instance."""
    source = dcmread(path, stop_before_pixels=True)
    out = Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            out[keyword] = source[keyword]
    return out


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _observer_items(req: KosRequest) -> list[Dataset]:
    """TID 1002 Observer Context with a Device observer (TID 1004): the node itself."""
    kind = Dataset()
    kind.RelationshipType = "HAS OBS CONTEXT"
    kind.ValueType = "CODE"
    kind.ConceptNameCodeSequence = Sequence([_code_item(OBSERVER_TYPE)])
    kind.ConceptCodeSequence = Sequence([_code_item(DEVICE)])
    uid = Dataset()
    uid.RelationshipType = "HAS OBS CONTEXT"
    uid.ValueType = "UIDREF"
    uid.ConceptNameCodeSequence = Sequence([_code_item(DEVICE_OBSERVER_UID)])
    uid.UID = req.device_uid
    name = Dataset()
    name.RelationshipType = "HAS OBS CONTEXT"
    name.ValueType = "TEXT"
    name.ConceptNameCodeSequence = Sequence([_code_item(DEVICE_OBSERVER_NAME)])
    name.TextValue = req.device_name
    return [kind, uid, name]


def _evidence(req: KosRequest) -> Sequence:
    """Current Requested Procedure Evidence Sequence, grouped by study and series."""
    studies: dict[str, dict[str, list[Reference]]] = {}
    for ref in req.references:
        studies.setdefault(ref.study_uid, {}).setdefault(ref.series_uid, []).append(ref)
    items = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = Sequence()
        for series_uid, refs in series.items():
            series_item = Dataset()
            series_item.RetrieveAETitle = req.retrieve_ae_title
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = Sequence()
            for ref in refs:
                sop = Dataset()
                sop.ReferencedSOPClassUID = ref.sop_class_uid
                sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
                if ref.signature_items:
                    sop.ReferencedDigitalSignatureSequence = Sequence(list(ref.signature_items))
                if ref.mac_items:
                    sop.ReferencedSOPInstanceMACSequence = Sequence(list(ref.mac_items))
                series_item.ReferencedSOPSequence.append(sop)
            study.ReferencedSeriesSequence.append(series_item)
        items.append(study)
    return Sequence(items)


def _content_item(ref: Reference) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type(ref.sop_class_uid)
    sop = Dataset()
    sop.ReferencedSOPClassUID = ref.sop_class_uid
    sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
    item.ReferencedSOPSequence = Sequence([sop])
    return item


def build_kos(req: KosRequest) -> Dataset:
    """A complete KOS document (PS3.3 A.35.4) for ``req``; raise IODError if impossible."""
    if not req.references:
        raise IODError("references: TID 2010 needs at least one IMAGE/WAVEFORM/COMPOSITE item")
    study_uid = str(req.patient_study.get("StudyInstanceUID", ""))
    other = {r.study_uid for r in req.references} - {study_uid}
    if other:
        # C.17.6.2.1: a KOS across studies needs Identical Documents copies in each.
        raise IODError(
            f"references: instances of other studies ({', '.join(sorted(other))}) "
            "need Identical Documents (PS3.3 C.17.6.2.1), which the node does not create"
        )
    ds = Dataset()
    ds.update(req.patient_study)
    when = req.content_time
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = req.sop_instance_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        ds.setdefault(keyword, "")  # Patient module, Type 2
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
        ds.setdefault(keyword, "")  # General Study module, Type 2
    ds.setdefault("AccessionNumber", "")
    # Key Object Document Series (C.17.6.1)
    ds.Modality = "KO"
    ds.SeriesInstanceUID = req.series_uid
    ds.SeriesNumber = req.series_number
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.SeriesDescription = req.title.meaning[:64]
    pps = Sequence()
    if req.performed_procedure_step_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref.ReferencedSOPInstanceUID = req.performed_procedure_step_uid
        pps.append(ref)
    ds.ReferencedPerformedProcedureStepSequence = pps
    # General Equipment (C.7.5.1)
    ds.Manufacturer = "dicom-node"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION_NAME
    ds.StationName = req.retrieve_ae_title
    # Key Object Document (C.17.6.2)
    ds.InstanceNumber = 1
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(req)
    _document_content(ds, req)
    return ds


def _document_content(ds: Dataset, req: KosRequest) -> None:
    """SR Document Content (C.17.3) with TID 2010 at the root."""
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code_item(req.title)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = Sequence([template])
    content = _observer_items(req)
    if req.description:
        text = Dataset()
        text.RelationshipType = "CONTAINS"
        text.ValueType = "TEXT"
        text.ConceptNameCodeSequence = Sequence([_code_item(KEY_OBJECT_DESCRIPTION)])
        text.TextValue = req.description
        content.append(text)
    content.extend(_content_item(ref) for ref in req.references)
    ds.ContentSequence = Sequence(content)
