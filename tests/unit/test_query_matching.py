"""Q/R matching (PS3.4 C.2.2.2) and the hierarchical models (C.6.1, C.6.2) on a real index."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from node.config import parse_config
from node.config.destinations import MoveDestination, move_destination
from node.storage.database import instances, open_database
from node.storage.header import InstanceHeader
from node.storage.index import upsert_hierarchy
from node.storage.query.find import find
from node.storage.query.identifier import parse_find, parse_retrieve
from node.storage.query.model import IdentifierError, InformationModel
from node.storage.query.retrieve import instances_to_retrieve

PATIENT_ROOT = InformationModel.PATIENT_ROOT
STUDY_ROOT = InformationModel.STUDY_ROOT

BASE = InstanceHeader(
    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    sop_instance_uid="",
    study_uid="1.2.3.1",
    series_uid="1.2.3.1.1",
    patient_id="PID-1",
    issuer="",
    patient_name="Doe^Jane",
    birth_date="19700101",
    sex="F",
    study_date="20240315",
    study_time="101500",
    accession_number="ACC1",
    study_id="1",
    study_description="CT chest",
    referring_physician="",
    modality="CT",
    series_number="1",
    series_description="axial",
    instance_number="1",
)


def _add(engine: Engine, header: InstanceHeader) -> None:
    with engine.begin() as conn:
        upsert_hierarchy(conn, header)
        conn.execute(
            instances.insert().values(
                sop_instance_uid=header.sop_instance_uid,
                series_uid=header.series_uid,
                sop_class_uid=header.sop_class_uid,
                instance_number=header.instance_number,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                path=f"{header.study_uid}/{header.series_uid}/{header.sop_instance_uid}.dcm",
                size=100,
                sha256="0" * 64,
                calling_ae="CT",
                peer_address="127.0.0.1",
                association_id="a" * 32,
                received_at="2024-03-15T10:15:00+00:00",
            )
        )


@pytest.fixture
def engine(database: str) -> Engine:
    """Two patients: Doe (one CT study, two series, 3+2 images) and Roe (one MR study);
    on SQLite and on PostgreSQL (the ``database`` fixture)."""
    engine = open_database(database)
    for n in (1, 2, 3):
        _add(engine, replace(BASE, sop_instance_uid=f"1.2.3.1.1.{n}", instance_number=str(n)))
    second = replace(
        BASE, series_uid="1.2.3.1.2", modality="SR", series_number="2", series_description="dose"
    )
    for n in (1, 2):
        _add(engine, replace(second, sop_instance_uid=f"1.2.3.1.2.{n}", instance_number=str(n)))
    roe = replace(
        BASE,
        patient_id="PID-2",
        patient_name="Roe^Richard",
        sex="M",
        study_uid="1.2.3.2",
        series_uid="1.2.3.2.1",
        study_date="20230101",
        study_time="0800",
        accession_number="acc2",
        modality="MR",
        sop_instance_uid="1.2.3.2.1.1",
    )
    _add(engine, roe)
    return engine


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def results(engine: Engine, model: InformationModel, **keys: Any) -> list[Dataset]:
    return list(find(engine, parse_find(model, identifier(**keys)), "DICOM_NODE"))


def values(engine: Engine, model: InformationModel, keyword: str, **keys: Any) -> list[Any]:
    keys.setdefault(keyword, "")
    return [ds.get(keyword) for ds in results(engine, model, **keys)]


def test_patient_level_returns_requested_keys_only(engine: Engine) -> None:
    found = results(
        engine,
        PATIENT_ROOT,
        QueryRetrieveLevel="PATIENT",
        PatientName="",
        PatientID="",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedInstances="",
    )
    assert [str(ds.PatientName) for ds in found] == ["Doe^Jane", "Roe^Richard"]
    assert [ds.NumberOfPatientRelatedInstances for ds in found] == [5, 1]
    assert [ds.NumberOfPatientRelatedStudies for ds in found] == [1, 1]
    assert set(found[0].dir()) == {
        "PatientName",
        "PatientID",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
        "QueryRetrieveLevel",
        "RetrieveAETitle",
    }
    assert found[0].QueryRetrieveLevel == "PATIENT"
    assert found[0].RetrieveAETitle == "DICOM_NODE"
    assert "SpecificCharacterSet" not in found[0]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("DOE*", ["PID-1"]),  # PN matching ignores case
        ("doe^jane", ["PID-1"]),
        ("?oe*", ["PID-1", "PID-2"]),
        ("*", ["PID-1", "PID-2"]),
        ("", ["PID-1", "PID-2"]),
        ("Doe", []),  # single value matching is not a prefix match
    ],
)
def test_person_name_matching(engine: Engine, pattern: str, expected: list[str]) -> None:
    found = values(
        engine, PATIENT_ROOT, "PatientID", QueryRetrieveLevel="PATIENT", PatientName=pattern
    )
    assert found == expected


@pytest.mark.parametrize(
    ("accession", "expected"),
    [("ACC*", ["1.2.3.1"]), ("acc*", ["1.2.3.2"]), ("ACC1", ["1.2.3.1"]), ("acc1", [])],
)
def test_text_matching_is_case_sensitive(
    engine: Engine, accession: str, expected: list[str]
) -> None:
    found = values(
        engine,
        STUDY_ROOT,
        "StudyInstanceUID",
        QueryRetrieveLevel="STUDY",
        AccessionNumber=accession,
    )
    assert found == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("StudyDate", "20240101-20241231", ["1.2.3.1"]),
        ("StudyDate", "20240315", ["1.2.3.1"]),
        ("StudyDate", "-20231231", ["1.2.3.2"]),
        ("StudyDate", "20230101-", ["1.2.3.2", "1.2.3.1"]),
        ("StudyDate", "20250101-", []),
        ("StudyTime", "0900-1100", ["1.2.3.1"]),
        ("StudyTime", "-0800", ["1.2.3.2"]),  # a reduced-precision bound covers its minute
        # ... compared character by character, whatever the server's collation (a
        # PostgreSQL database in en_US.UTF-8 ignores the "~" that closes the bound).
        ("StudyTime", "-1015", ["1.2.3.2", "1.2.3.1"]),
        ("StudyTime", "1015-1015", ["1.2.3.1"]),
        ("StudyTime", "101500", ["1.2.3.1"]),
    ],
)
def test_date_and_time_range_matching(
    engine: Engine, key: str, value: str, expected: list[str]
) -> None:
    found = values(
        engine, STUDY_ROOT, "StudyInstanceUID", QueryRetrieveLevel="STUDY", **{key: value}
    )
    assert found == expected


def test_list_of_uid_matching(engine: Engine) -> None:
    found = values(
        engine,
        STUDY_ROOT,
        "StudyDate",
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=["1.2.3.2", "1.2.3.1", "9.9"],
    )
    assert found == ["20230101", "20240315"]


def test_study_level_counts_and_modalities(engine: Engine) -> None:
    (study,) = results(
        engine,
        STUDY_ROOT,
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID="1.2.3.1",
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
        PatientName="",
    )
    assert list(study.ModalitiesInStudy) == ["CT", "SR"]
    assert study.NumberOfStudyRelatedSeries == 2
    assert study.NumberOfStudyRelatedInstances == 5
    assert str(study.PatientName) == "Doe^Jane"  # Study Root: patient keys at study level


def test_modalities_in_study_matches_any_series(engine: Engine) -> None:
    for value, expected in (("SR", ["1.2.3.1"]), (["MR", "SR"], ["1.2.3.2", "1.2.3.1"])):
        found = values(
            engine,
            STUDY_ROOT,
            "StudyInstanceUID",
            QueryRetrieveLevel="STUDY",
            ModalitiesInStudy=value,
        )
        assert found == expected


def test_series_and_image_levels(engine: Engine) -> None:
    series = results(
        engine,
        STUDY_ROOT,
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID="1.2.3.1",
        SeriesInstanceUID="",
        Modality="",
        NumberOfSeriesRelatedInstances="",
    )
    assert [(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [
        ("CT", 3),
        ("SR", 2),
    ]
    assert all(s.StudyInstanceUID == "1.2.3.1" for s in series)
    images = values(
        engine,
        PATIENT_ROOT,
        "SOPInstanceUID",
        QueryRetrieveLevel="IMAGE",
        PatientID="PID-1",
        StudyInstanceUID="1.2.3.1",
        SeriesInstanceUID="1.2.3.1.1",
        InstanceNumber="",
    )
    assert images == ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3"]
    numbered = values(
        engine,
        STUDY_ROOT,
        "SOPInstanceUID",
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID="1.2.3.1",
        SeriesInstanceUID="1.2.3.1.1",
        InstanceNumber="02",
    )
    assert numbered == ["1.2.3.1.1.2"]


def test_non_ascii_values_set_utf8(engine: Engine) -> None:
    _add(
        engine,
        replace(
            BASE,
            patient_id="PID-3",
            patient_name="Müller^Jürgen",
            study_uid="1.2.3.3",
            series_uid="1.2.3.3.1",
            sop_instance_uid="1.2.3.3.1.1",
        ),
    )
    (found,) = results(
        engine, PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="PID-3", PatientName=""
    )
    assert found.SpecificCharacterSet == "ISO_IR 192"
    assert str(found.PatientName) == "Müller^Jürgen"


def test_unsupported_keys_are_reported_and_not_returned(engine: Engine) -> None:
    query = parse_find(
        STUDY_ROOT, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="", InstitutionName="")
    )
    assert query.unsupported == ("InstitutionName",)
    (first, _) = list(find(engine, query, "DICOM_NODE"))
    assert "InstitutionName" not in first


@pytest.mark.parametrize(
    ("model", "keys", "message"),
    [
        (STUDY_ROOT, {"StudyInstanceUID": ""}, "Query/Retrieve Level (0008,0052) is missing"),
        (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT"}, "is not one of STUDY, SERIES, IMAGE"),
        (STUDY_ROOT, {"QueryRetrieveLevel": "FRAME"}, "is not one of"),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES"}, "single value of StudyInstanceUID"),
        (
            STUDY_ROOT,
            {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ["1.2", "1.3"]},
            "single value of StudyInstanceUID",
        ),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY"}, "single value of PatientID"),
        (
            PATIENT_ROOT,
            {"QueryRetrieveLevel": "STUDY", "PatientID": "PID*"},
            "single value of PatientID",
        ),
    ],
)
def test_invalid_find_identifiers(
    model: InformationModel, keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(IdentifierError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_find(model, identifier(**keys))


def retrieved(engine: Engine, model: InformationModel, **keys: Any) -> list[str]:
    query = parse_retrieve(model, identifier(**keys))
    return [row.sop_instance_uid for row in instances_to_retrieve(engine, query)]


def test_retrieve_resolves_each_level(engine: Engine) -> None:
    study = retrieved(engine, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3.1")
    assert study == ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3", "1.2.3.1.2.1", "1.2.3.1.2.2"]
    assert retrieved(engine, PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="PID-2") == [
        "1.2.3.2.1.1"
    ]
    series = retrieved(
        engine,
        STUDY_ROOT,
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID="1.2.3.1",
        SeriesInstanceUID="1.2.3.1.2",
    )
    assert series == ["1.2.3.1.2.1", "1.2.3.1.2.2"]
    images = retrieved(
        engine,
        PATIENT_ROOT,
        QueryRetrieveLevel="IMAGE",
        PatientID="PID-1",
        StudyInstanceUID="1.2.3.1",
        SeriesInstanceUID="1.2.3.1.1",
        SOPInstanceUID=["1.2.3.1.1.3", "1.2.3.1.1.1"],
    )
    assert images == ["1.2.3.1.1.1", "1.2.3.1.1.3"]
    # The unique keys above must name the same entity: a wrong study finds nothing.
    assert not retrieved(
        engine,
        STUDY_ROOT,
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID="1.2.3.2",
        SeriesInstanceUID="1.2.3.1.2",
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"QueryRetrieveLevel": "STUDY"}, "STUDY level needs the unique key StudyInstanceUID"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, "needs a value"),
        (
            {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2"},
            "unique key StudyInstanceUID",
        ),
        (
            {
                "QueryRetrieveLevel": "SERIES",
                "StudyInstanceUID": ["1", "2"],
                "SeriesInstanceUID": "3",
            },
            "StudyInstanceUID must have a single value",
        ),
    ],
)
def test_invalid_retrieve_identifiers(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(IdentifierError, match=message):
        parse_retrieve(STUDY_ROOT, identifier(**keys))


def test_patient_id_wildcard_cannot_retrieve() -> None:
    with pytest.raises(IdentifierError, match="without wildcards"):
        parse_retrieve(PATIENT_ROOT, identifier(QueryRetrieveLevel="PATIENT", PatientID="PID*"))


def test_move_destinations_are_partners_and_peers_with_an_address(tmp_path: Path) -> None:
    config = parse_config(
        {
            "peers": [
                {"ae_title": "WS", "host": "10.0.0.8", "port": 11113, "roles": ["store"]},
                {"ae_title": "QR", "host": "10.0.0.7", "roles": ["query", "retrieve"]},
                {"ae_title": "SITE_B", "host": "10.0.0.9", "port": 1, "roles": ["store"]},
            ],
            "partners": [{"name": "b", "ae_title": "SITE_B", "host": "site-b", "port": 11112}],
            "sources": [{"name": "pacs", "ae_title": "PACS", "host": "pacs", "port": 104}],
        },
        tmp_path,
    )
    assert move_destination(config, "WS") == MoveDestination("WS", "10.0.0.8", 11113)
    assert move_destination(config, "SITE_B") == MoveDestination("SITE_B", "site-b", 11112)
    assert move_destination(config, "QR") is None  # a peer without a port
    assert move_destination(config, "PACS") is None  # sources are not destinations
    assert move_destination(config, "NOWHERE") is None
