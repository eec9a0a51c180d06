"""Modality Performed Procedure Step rules (PS3.4 Annex F, PS3.3 B.17).

Pure checks on pydicom data sets: which attributes N-CREATE must carry, which N-SET may
change, and what a final state (COMPLETED, DISCONTINUED) requires. Failures raise
:class:`MppsRefused`, which the service layer maps to a DIMSE status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from node.errors import MppsProblem as Problem
from node.errors import MppsRefused
from node.storage.uids import is_valid_uid

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
STATES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL_STATES = (COMPLETED, DISCONTINUED)

# Error ID of an N-SET after the final state (PS3.4 Table F.7.2-2).
ERROR_ID_NO_LONGER_UPDATABLE = 0xA710


# Type 1 in N-CREATE (PS3.4 Table F.7.2-1).
CREATE_TYPE1 = (
    "ScheduledStepAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus",
    "Modality",
)

# "Not allowed" in N-SET: fixed once created (PS3.4 Table F.7.2-1).
NOT_SETTABLE = (
    "SOPClassUID",
    "SOPInstanceUID",
    "ScheduledStepAttributesSequence",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
    "ReferencedPatientSequence",
    "AdmissionID",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformedLocation",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Modality",
    "StudyID",
)

# Type 1 once the step is COMPLETED or DISCONTINUED ("final state" column).
FINAL_TYPE1 = (
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedSeriesSequence",
)
FINAL_SERIES_TYPE1 = ("SeriesInstanceUID", "ProtocolName")


def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


def _empty(ds: Dataset, keyword: str) -> bool:
    value = ds[keyword].value
    return value is None or value == "" or (isinstance(value, list) and not value)


def _require(ds: Dataset, keywords: Iterable[str], where: str) -> None:
    missing = [k for k in keywords if k not in ds]
    if missing:
        raise MppsRefused(
            Problem.MISSING_ATTRIBUTE,
            f"{where}: missing {', '.join(missing)}",
            [_tag(k) for k in missing],
        )
    empty = [k for k in keywords if _empty(ds, k)]
    if empty:
        raise MppsRefused(
            Problem.MISSING_ATTRIBUTE_VALUE,
            f"{where}: no value for {', '.join(empty)}",
            [_tag(k) for k in empty],
        )


def check_instance_uid(uid: str) -> str:
    if not is_valid_uid(uid):
        raise MppsRefused(Problem.INVALID_INSTANCE, f"invalid MPPS SOP Instance UID {uid!r}")
    return uid


def check_create(attributes: Dataset) -> None:
    """N-CREATE: Type 1 attributes present, status IN PROGRESS, study UIDs valid."""
    _require(attributes, CREATE_TYPE1, "N-CREATE")
    status = str(attributes.PerformedProcedureStepStatus).strip()
    if status != IN_PROGRESS:
        raise MppsRefused(
            Problem.INVALID_ATTRIBUTE_VALUE,
            f"N-CREATE status must be IN PROGRESS, not {status!r}",
            [_tag("PerformedProcedureStepStatus")],
        )
    for item in attributes.ScheduledStepAttributesSequence:
        _require(item, ["StudyInstanceUID"], "Scheduled Step Attributes Sequence item")
        if not is_valid_uid(str(item.StudyInstanceUID)):
            raise MppsRefused(
                Problem.INVALID_ATTRIBUTE_VALUE,
                f"invalid Study Instance UID {item.StudyInstanceUID!r}",
                [_tag("StudyInstanceUID")],
            )


def check_set(current_status: str, modification: Dataset) -> None:
    """N-SET: allowed only IN PROGRESS, only on settable attributes, to a known state."""
    if current_status in FINAL_STATES:
        raise MppsRefused(
            Problem.PROCESSING_FAILURE,
            "Performed Procedure Step Object may no longer be updated",
            error_id=ERROR_ID_NO_LONGER_UPDATABLE,
        )
    fixed = [k for k in NOT_SETTABLE if k in modification]
    if fixed:
        raise MppsRefused(
            Problem.INVALID_ATTRIBUTE_VALUE,
            f"N-SET may not change {', '.join(fixed)}",
            [_tag(k) for k in fixed],
        )
    if "PerformedProcedureStepStatus" in modification:
        status = str(modification.PerformedProcedureStepStatus or "").strip()
        if status not in STATES:
            raise MppsRefused(
                Problem.INVALID_ATTRIBUTE_VALUE,
                f"unknown Performed Procedure Step Status {status!r}",
                [_tag("PerformedProcedureStepStatus")],
            )


def merge(stored: Dataset, modification: Dataset) -> Dataset:
    """The stored attributes with the N-SET values replacing theirs (sequences whole)."""
    merged = Dataset()
    merged.update(stored)
    for element in modification:
        merged[element.tag] = element
    return merged


def check_final(merged: Dataset) -> None:
    """A COMPLETED or DISCONTINUED step must carry its end time and every series."""
    _require(merged, FINAL_TYPE1, "final state")
    for item in merged.PerformedSeriesSequence:
        _require(item, FINAL_SERIES_TYPE1, "Performed Series Sequence item")


def status_of(ds: Dataset) -> str:
    return str(ds.get("PerformedProcedureStepStatus", "") or "").strip()


def study_uid_of(ds: Dataset) -> str | None:
    """The study: from the Scheduled Step Attribute Sequence (an MPPS has no top-level one)."""
    for item in ds.get("ScheduledStepAttributesSequence", []):
        uid = str(item.get("StudyInstanceUID", "") or "")
        if uid:
            return uid
    return None


@dataclass(frozen=True, slots=True)
class ExpectedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str


def expected_instances(ds: Dataset) -> list[ExpectedInstance]:
    """Every instance the step lists: Referenced Image plus Non-Image Composite items."""
    found: dict[str, ExpectedInstance] = {}
    for series in ds.get("PerformedSeriesSequence", []):
        series_uid = str(series.get("SeriesInstanceUID", ""))
        for keyword in (
            "ReferencedImageSequence",
            "ReferencedNonImageCompositeSOPInstanceSequence",
        ):
            for ref in series.get(keyword, []) or []:
                uid = str(ref.get("ReferencedSOPInstanceUID", ""))
                if is_valid_uid(uid):
                    found[uid] = ExpectedInstance(
                        uid, str(ref.get("ReferencedSOPClassUID", "")), series_uid
                    )
    return list(found.values())
