"""What every SR document the node builds shares (KOS, PS3.3 A.35.4; Basic Text SR, A.35.1).

One implementation of: the Patient/Study attributes copied from the reported study,
the General Equipment of the node, coded content items (PS3.3 C.17.3), the TID 1002
device observer, and the Hierarchical SOP Instance Reference Macro with secure
references (PS3.3 Table C.17-3/C.17-3a) used by the evidence sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import UID

from node.documents.codes import (
    DEVICE,
    DEVICE_OBSERVER_NAME,
    DEVICE_OBSERVER_UID,
    OBSERVER_TYPE,
)
from node.errors import NodeError
from node.identity import IMPLEMENTATION_VERSION_NAME
from node.storage.header import PATIENT_STUDY_KEYWORDS as _PATIENT_STUDY

MANUFACTURER = "dicom-node"

# Copied from a referenced instance: its character set, then the Patient (C.7.1.1) and
# General Study (C.7.2.1) attributes (node.storage.header's list).
PATIENT_STUDY_KEYWORDS = ("SpecificCharacterSet", *_PATIENT_STUDY)
# Type 2 attributes of the Patient and General Study modules: present, maybe empty.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
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


def copy_patient_study(ds: Dataset, patient_study: Dataset) -> None:
    """Patient and General Study modules identical to the study's (Type 2 kept present)."""
    ds.update(patient_study)
    for keyword in _TYPE2_PATIENT_STUDY:
        ds.setdefault(keyword, "")


def set_instance(ds: Dataset, sop_class_uid: str, sop_instance_uid: str, when: datetime) -> None:
    """SOP Common identity and creation time (C.12.1)."""
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")


def set_equipment(ds: Dataset, station_name: str) -> None:
    """General Equipment (C.7.5.1): the node made this document."""
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = IMPLEMENTATION_VERSION_NAME
    ds.StationName = station_name


def code_item(code: Code) -> Dataset:
    """One item of a Code Sequence (Table 8.8-1)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def code_of(item: Dataset) -> Code:
    """The Code of a Code Sequence item."""
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def concept_of(item: Dataset) -> Code | None:
    """The concept name of a content item, if it has one."""
    names = item.get("ConceptNameCodeSequence") or []
    return code_of(names[0]) if names else None


def set_root(ds: Dataset, title: Code, template_id: str) -> None:
    """The root CONTAINER of an SR document (C.17.3) with its template (DCMR)."""
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code_item(title)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = template_id
    ds.ContentTemplateSequence = Sequence([template])


def container_item(relationship: str, concept: Code | None, children: Iterable[Dataset]) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "CONTAINER"
    if concept is not None:
        item.ConceptNameCodeSequence = Sequence([code_item(concept)])
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(list(children))
    return item


def text_item(relationship: str, concept: Code, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([code_item(concept)])
    item.TextValue = text
    return item


def code_content_item(relationship: str, concept: Code, value: Code) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "CODE"
    item.ConceptNameCodeSequence = Sequence([code_item(concept)])
    item.ConceptCodeSequence = Sequence([code_item(value)])
    return item


def uid_item(relationship: str, concept: Code, uid: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "UIDREF"
    item.ConceptNameCodeSequence = Sequence([code_item(concept)])
    item.UID = uid
    return item


def reference_item(ref: Reference) -> Dataset:
    """A CONTAINS IMAGE/WAVEFORM/COMPOSITE item without concept name (TID 2010 rows 7-9)."""
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type(ref.sop_class_uid)
    sop = Dataset()
    sop.ReferencedSOPClassUID = ref.sop_class_uid
    sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
    item.ReferencedSOPSequence = Sequence([sop])
    return item


def device_observer_items(device_uid: str, device_name: str) -> list[Dataset]:
    """TID 1002 Observer Context with a Device observer (TID 1004): the node itself."""
    name = Dataset()
    name.RelationshipType = "HAS OBS CONTEXT"
    name.ValueType = "TEXT"
    name.ConceptNameCodeSequence = Sequence([code_item(DEVICE_OBSERVER_NAME)])
    name.TextValue = device_name
    return [
        code_content_item("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        uid_item("HAS OBS CONTEXT", DEVICE_OBSERVER_UID, device_uid),
        name,
    ]


def sop_reference(ref: Reference) -> Dataset:
    """A Referenced SOP Sequence item of the evidence, with its secure references."""
    sop = Dataset()
    sop.ReferencedSOPClassUID = ref.sop_class_uid
    sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if ref.signature_items:
        sop.ReferencedDigitalSignatureSequence = Sequence(list(ref.signature_items))
    if ref.mac_items:
        sop.ReferencedSOPInstanceMACSequence = Sequence(list(ref.mac_items))
    return sop


def evidence_sequence(references: Iterable[Reference], retrieve_ae_title: str | None) -> Sequence:
    """Hierarchical SOP Instance Reference items (C.17-3), grouped by study and series."""
    studies: dict[str, dict[str, list[Reference]]] = {}
    for ref in references:
        studies.setdefault(ref.study_uid, {}).setdefault(ref.series_uid, []).append(ref)
    items = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = Sequence()
        for series_uid, refs in series.items():
            series_item = Dataset()
            if retrieve_ae_title:
                series_item.RetrieveAETitle = retrieve_ae_title
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = Sequence([sop_reference(r) for r in refs])
            study.ReferencedSeriesSequence.append(series_item)
        items.append(study)
    return Sequence(items)


def evidence_references(ds: Dataset, keyword: str) -> list[Reference]:
    """The references of an evidence sequence, with their secure-reference items."""
    found = []
    for study in ds.get(keyword) or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for sop in series.get("ReferencedSOPSequence") or []:
                found.append(
                    Reference(
                        sop_class_uid=str(sop.ReferencedSOPClassUID),
                        sop_instance_uid=str(sop.ReferencedSOPInstanceUID),
                        series_uid=str(series.SeriesInstanceUID),
                        study_uid=str(study.StudyInstanceUID),
                        mac_items=list(sop.get("ReferencedSOPInstanceMACSequence") or []),
                        signature_items=list(sop.get("ReferencedDigitalSignatureSequence") or []),
                    )
                )
    return found
