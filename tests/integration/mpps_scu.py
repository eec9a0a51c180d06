"""A pynetdicom MPPS SCU for tests: builds N-CREATE and N-SET attribute lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from tests.helpers import STUDY_UID


def create_attributes(study_uid: str = STUDY_UID, **overrides: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.ReferencedStudySequence = Sequence()
    step.AccessionNumber = "ACC1"
    step.RequestedProcedureID = "RP1"
    step.RequestedProcedureDescription = "CT head"
    step.ScheduledProcedureStepID = "SPS1"
    step.ScheduledProcedureStepDescription = "CT head"
    step.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT_1"
    ds.PerformedStationName = "CT one"
    ds.PerformedLocation = "Room 1"
    ds.PerformedProcedureStepStartDate = "20261122"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT head"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence()
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    for keyword, value in overrides.items():
        if value is None and keyword in ds:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    return ds


def final_attributes(series: dict[str, Iterable[Dataset]], status: str = "COMPLETED") -> Dataset:
    """N-SET to a final state listing ``series`` (series UID -> instances)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261122"
    ds.PerformedProcedureStepEndTime = "103000"
    items = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.PerformingPhysicianName = ""
        item.ProtocolName = "Head"
        item.OperatorsName = ""
        item.SeriesInstanceUID = series_uid
        item.SeriesDescription = ""
        item.RetrieveAETitle = ""
        images, others = Sequence(), Sequence()
        for inst in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = inst.SOPClassUID
            ref.ReferencedSOPInstanceUID = inst.SOPInstanceUID
            (images if "PixelData" in inst else others).append(ref)
        item.ReferencedImageSequence = images
        item.ReferencedNonImageCompositeSOPInstanceSequence = others
        items.append(item)
    ds.PerformedSeriesSequence = Sequence(items)
    return ds


class MppsClient:
    def __init__(self, port: int, aet: str = "CT_1") -> None:
        ae = AE(ae_title=aet)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        self.assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
        assert self.assoc.is_established

    def create(self, attributes: Dataset, uid: str | None = None) -> tuple[Dataset, str]:
        uid = uid or generate_uid()
        status, _ = self.assoc.send_n_create(attributes, ModalityPerformedProcedureStep, uid)
        return status, uid

    def set(self, uid: str, modification: Dataset) -> Dataset:
        status, _ = self.assoc.send_n_set(modification, ModalityPerformedProcedureStep, uid)
        return status

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
