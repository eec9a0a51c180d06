"""C-FIND matching against the index (PS3.4 C.4.1.3.1 hierarchical search).

One SQL query selects the entities of the query level whose attributes match every
condition; each becomes a response identifier holding exactly the requested keys
(C.4.1.1.3.2), plus Query/Retrieve Level, Retrieve AE Title and, when a value needs it,
Specific Character Set. Values are returned as the index holds them, never "fixed".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import Engine, exists, func, select
from sqlalchemy.sql import Select

from node.storage.database import instances, patients, series, studies
from node.storage.query.identifier import FindQuery
from node.storage.query.matching import condition
from node.storage.query.model import LEVEL_TABLES, Key, Level, Match

UTF8 = "ISO_IR 192"  # Specific Character Set of responses holding non-ASCII text
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_BATCH = 500  # UIDs per IN (...) when collecting Modalities in Study
_STUDY_UID = "_study_uid"  # selected beside the keys, to find each row's modalities


def find(engine: Engine, query: FindQuery, retrieve_ae: str) -> Iterator[Dataset]:
    """The response identifiers of ``query``, in a stable order.

    The matches are read in one short transaction before the first is yielded, so a
    slow peer never holds the index open while C-STOREs wait to write.
    """
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(_select(query, engine.dialect.name))]
        modalities = _modalities(conn, rows) if "ModalitiesInStudy" in _keywords(query) else {}
    for values in rows:
        study_uid = values.pop(_STUDY_UID, None)
        if "ModalitiesInStudy" in values:
            values["ModalitiesInStudy"] = modalities.get(study_uid, [])
        yield response(query, values, retrieve_ae)


def response(query: FindQuery, values: dict[str, Any], retrieve_ae: str) -> Dataset:
    """One response identifier from the selected ``values`` (keyword to value)."""
    ds = Dataset()
    for key in query.returned:
        ds.add(_element(key, values.get(key.keyword)))
    ds.QueryRetrieveLevel = str(query.level)
    ds.RetrieveAETitle = retrieve_ae
    if any(not str(v).isascii() for v in values.values() if v is not None):
        ds.SpecificCharacterSet = UTF8
    return ds


def _element(key: Key, value: Any) -> DataElement:
    tag = tag_for_keyword(key.keyword)
    assert tag is not None  # every key of the model is a dictionary keyword
    vr = dictionary_VR(tag)
    if value is None or value in ("", []):
        value = None
    elif key.match is Match.NUMBER and not _INTEGER.match(str(value)):
        value = None  # an IS value the modality garbled cannot be encoded as IS
    # Stored values go back as received: no validation may reject or alter them.
    return DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)


def _keywords(query: FindQuery) -> set[str]:
    return {k.keyword for k in query.returned}


def _select(query: FindQuery, dialect: str) -> Select[Any]:
    level = query.level
    columns: list[Any] = []
    for key in query.returned:
        if key.column is not None:
            columns.append(key.column.label(key.keyword))
        elif key.match is Match.COUNT:
            columns.append(_count(key.keyword).label(key.keyword))
        else:  # Modalities in Study: filled in from a second query
            columns.append(studies.c.study_uid.label(key.keyword))
    if level is not Level.PATIENT:
        columns.append(studies.c.study_uid.label(_STUDY_UID))
    base = LEVEL_TABLES[level]
    stmt = select(*columns).select_from(_joined(level))
    for cond in query.conditions:
        clause = _clause(cond.key, cond.values, dialect)
        if clause is not None:
            stmt = stmt.where(clause)
    primary = list(base.primary_key.columns)
    return stmt.order_by(*_order(level), *primary)


def _clause(key: Key, values: Sequence[str], dialect: str) -> Any:
    if key.match is Match.MODALITIES:
        inner = condition(series.c.modality, Match.TEXT, values, dialect)
        if inner is None:
            return None
        return exists(
            select(series.c.series_uid).where(series.c.study_uid == studies.c.study_uid, inner)
        )
    if key.column is None:
        return None
    return condition(key.column, key.match, values, dialect)


def _joined(level: Level) -> Any:
    """The level's table joined to the tables of every level above it."""
    study_patient = studies.join(patients, patients.c.patient_key == studies.c.patient_key)
    series_up = series.join(study_patient, studies.c.study_uid == series.c.study_uid)
    return {
        Level.PATIENT: patients,
        Level.STUDY: study_patient,
        Level.SERIES: series_up,
        Level.IMAGE: instances.join(series_up, series.c.series_uid == instances.c.series_uid),
    }[level]


def _order(level: Level) -> list[Any]:
    order = {
        Level.PATIENT: [patients.c.patient_id],
        Level.STUDY: [studies.c.study_date, studies.c.study_time],
        Level.SERIES: [series.c.series_number],
        Level.IMAGE: [instances.c.instance_number],
    }
    return order[level]


def _count(keyword: str) -> Any:
    """A correlated count; inner tables are aliases so they never correlate away."""
    st, se, im = studies.alias(), series.alias(), instances.alias()
    se_st = se.join(st, st.c.study_uid == se.c.study_uid)
    im_se = im.join(se, se.c.series_uid == im.c.series_uid)
    count = func.count()
    queries = {
        "NumberOfPatientRelatedStudies": select(count)
        .select_from(st)
        .where(st.c.patient_key == patients.c.patient_key),
        "NumberOfPatientRelatedSeries": select(count)
        .select_from(se_st)
        .where(st.c.patient_key == patients.c.patient_key),
        "NumberOfPatientRelatedInstances": select(count)
        .select_from(im.join(se_st, se.c.series_uid == im.c.series_uid))
        .where(st.c.patient_key == patients.c.patient_key),
        "NumberOfStudyRelatedSeries": select(count)
        .select_from(se)
        .where(se.c.study_uid == studies.c.study_uid),
        "NumberOfStudyRelatedInstances": select(count)
        .select_from(im_se)
        .where(se.c.study_uid == studies.c.study_uid),
        "NumberOfSeriesRelatedInstances": select(count)
        .select_from(im)
        .where(im.c.series_uid == series.c.series_uid),
    }
    return queries[keyword].scalar_subquery()


def _modalities(conn: Any, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Modalities in Study (0008,0061) of the matched studies: their series' modalities."""
    uids = sorted({r[_STUDY_UID] for r in rows if r.get(_STUDY_UID)})
    found: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(uids), _BATCH):
        batch = uids[start : start + _BATCH]
        stmt = select(series.c.study_uid, series.c.modality).where(series.c.study_uid.in_(batch))
        for study_uid, modality in conn.execute(stmt):
            if modality:
                found[study_uid].add(modality)
    return {uid: sorted(values) for uid, values in found.items()}
