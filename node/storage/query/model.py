"""The Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2) over our index.

Each key names the index column it is matched against and returned from. The level of a
key is its Patient Root level; the Study Root model folds the patient level into the
study level (PS3.4 C.6.2.1), which :meth:`InformationModel.level_of` applies.
Keys without a column are computed: the ``NumberOf...Related...`` counts and Modalities
in Study (PS3.4 C.6.1.1.3 and C.6.2.1.2 optional keys).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from node.errors import InvalidRequest
from node.storage.database import instances, patients, series, studies


class IdentifierError(InvalidRequest):
    """The identifier does not fit the information model (answered with 0xA900)."""


class Level(enum.StrEnum):
    """Query/Retrieve Level (0008,0052) values (PS3.4 C.4.1.2.1)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class Match(enum.Enum):
    """How a key's value is compared with the index (PS3.4 C.2.2.2)."""

    TEXT = "text"  # single value (case-sensitive), wildcard, universal
    PERSON_NAME = "person-name"  # as TEXT, but case-insensitive (C.2.2.2.1 allows it for PN)
    DATE = "date"  # single value, range, universal
    TIME = "time"  # single value, range, universal
    UID = "uid"  # single value, list of UIDs, universal
    NUMBER = "number"  # single value (as an integer string), universal
    MODALITIES = "modalities"  # any of the values against the study's series (multi-valued)
    COUNT = "count"  # a return key only: computed, never matched


@dataclass(frozen=True, slots=True)
class Key:
    """One key attribute of the information model."""

    keyword: str
    level: Level
    match: Match
    column: Any = None  # the index column (SQLAlchemy Column); None for computed keys
    unique: bool = False
    required: bool = False


_KEYS = (
    # Patient level (PS3.4 Table C.6-1).
    Key("PatientName", Level.PATIENT, Match.PERSON_NAME, patients.c.patient_name, required=True),
    Key("PatientID", Level.PATIENT, Match.TEXT, patients.c.patient_id, unique=True),
    Key("IssuerOfPatientID", Level.PATIENT, Match.TEXT, patients.c.issuer),
    Key("PatientBirthDate", Level.PATIENT, Match.DATE, patients.c.birth_date),
    Key("PatientSex", Level.PATIENT, Match.TEXT, patients.c.sex),
    Key("NumberOfPatientRelatedStudies", Level.PATIENT, Match.COUNT),
    Key("NumberOfPatientRelatedSeries", Level.PATIENT, Match.COUNT),
    Key("NumberOfPatientRelatedInstances", Level.PATIENT, Match.COUNT),
    # Study level (PS3.4 Table C.6-2).
    Key("StudyDate", Level.STUDY, Match.DATE, studies.c.study_date, required=True),
    Key("StudyTime", Level.STUDY, Match.TIME, studies.c.study_time, required=True),
    Key("AccessionNumber", Level.STUDY, Match.TEXT, studies.c.accession_number, required=True),
    Key("StudyID", Level.STUDY, Match.TEXT, studies.c.study_id, required=True),
    Key("StudyInstanceUID", Level.STUDY, Match.UID, studies.c.study_uid, unique=True),
    Key("ReferringPhysicianName", Level.STUDY, Match.PERSON_NAME, studies.c.referring_physician),
    Key("StudyDescription", Level.STUDY, Match.TEXT, studies.c.study_description),
    Key("ModalitiesInStudy", Level.STUDY, Match.MODALITIES),
    Key("NumberOfStudyRelatedSeries", Level.STUDY, Match.COUNT),
    Key("NumberOfStudyRelatedInstances", Level.STUDY, Match.COUNT),
    # Series level (PS3.4 Table C.6-3).
    Key("Modality", Level.SERIES, Match.TEXT, series.c.modality, required=True),
    Key("SeriesNumber", Level.SERIES, Match.NUMBER, series.c.series_number, required=True),
    Key("SeriesInstanceUID", Level.SERIES, Match.UID, series.c.series_uid, unique=True),
    Key("SeriesDescription", Level.SERIES, Match.TEXT, series.c.series_description),
    Key("NumberOfSeriesRelatedInstances", Level.SERIES, Match.COUNT),
    # Composite object instance level (PS3.4 Table C.6-4).
    Key("InstanceNumber", Level.IMAGE, Match.NUMBER, instances.c.instance_number, required=True),
    Key("SOPInstanceUID", Level.IMAGE, Match.UID, instances.c.sop_instance_uid, unique=True),
    Key("SOPClassUID", Level.IMAGE, Match.UID, instances.c.sop_class_uid),
    Key("AvailableTransferSyntaxUID", Level.IMAGE, Match.UID, instances.c.transfer_syntax_uid),
)

KEYS: dict[str, Key] = {key.keyword: key for key in _KEYS}

# Attributes a request may carry that are not keys (PS3.4 C.4.1.1.3.1): never "unsupported".
NON_KEY_ATTRIBUTES = frozenset(
    {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability"}
)

# The index table of each level (the entities a query at that level returns).
LEVEL_TABLES = {
    Level.PATIENT: patients,
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.IMAGE: instances,
}


class InformationModel(enum.Enum):
    """The hierarchical (baseline) Q/R information models this node supports."""

    PATIENT_ROOT = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
    STUDY_ROOT = (Level.STUDY, Level.SERIES, Level.IMAGE)

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(self.value)

    def level(self, value: object) -> Level:
        """The Query/Retrieve Level of a request; IdentifierError when absent or invalid."""
        text = str(value or "").strip().upper()
        if not text:
            raise IdentifierError("Query/Retrieve Level (0008,0052) is missing")
        if text not in self.levels:
            allowed = ", ".join(self.levels)
            raise IdentifierError(f"Query/Retrieve Level {text!r} is not one of {allowed}")
        return Level(text)

    def level_of(self, key: Key) -> Level:
        """The level ``key`` belongs to in this model (C.6.2.1: patient keys are study keys)."""
        if self is InformationModel.STUDY_ROOT and key.level is Level.PATIENT:
            return Level.STUDY
        return key.level

    def above(self, level: Level) -> tuple[Level, ...]:
        """The levels above ``level``, top first."""
        return self.levels[: self.levels.index(level)]

    def unique_key(self, level: Level) -> Key:
        """The unique key of ``level`` (PS3.4 C.6.1.1, C.6.2.1)."""
        return next(k for k in _KEYS if k.unique and k.level is level)
