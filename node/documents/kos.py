"""Key Object Selection Document builder (PS3.3 A.35.4, TID 2010), with secure references.

The builder makes a complete, valid KOS data set or raises IODError; it never returns a
half-built document. Signing is a separate step (:mod:`node.signatures.sign`) because the
signature must cover the finished document.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import UID, KeyObjectSelectionDocumentStorage

from node.documents.codes import KEY_OBJECT_DESCRIPTION
from node.documents.sr_common import (
    PATIENT_STUDY_KEYWORDS,
    IODError,
    Reference,
    copy_patient_study,
    device_observer_items,
    evidence_sequence,
    patient_study_from,
    reference_item,
    set_equipment,
    set_instance,
    set_root,
    text_item,
    value_type,
)

MPPS_SOP_CLASS = UID("1.2.840.10008.3.1.2.3.3")

# Shared with the report builder; re-exported for the KOS builders' callers.
__all__ = [
    "PATIENT_STUDY_KEYWORDS",
    "IODError",
    "KosRequest",
    "Reference",
    "build_kos",
    "patient_study_from",
    "value_type",
]


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
    copy_patient_study(ds, req.patient_study)
    set_instance(ds, KeyObjectSelectionDocumentStorage, req.sop_instance_uid, req.content_time)
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
    set_equipment(ds, req.retrieve_ae_title)
    # Key Object Document (C.17.6.2)
    ds.InstanceNumber = 1
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.CurrentRequestedProcedureEvidenceSequence = evidence_sequence(
        req.references, req.retrieve_ae_title
    )
    _document_content(ds, req)
    return ds


def _document_content(ds: Dataset, req: KosRequest) -> None:
    """SR Document Content (C.17.3) with TID 2010 at the root."""
    set_root(ds, req.title, "2010")
    content = device_observer_items(req.device_uid, req.device_name)
    if req.description:
        content.append(text_item("CONTAINS", KEY_OBJECT_DESCRIPTION, req.description))
    content.extend(reference_item(ref) for ref in req.references)
    ds.ContentSequence = Sequence(content)
