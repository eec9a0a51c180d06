"""The archived instances a C-MOVE or C-GET names (PS3.4 C.4.2.2.1, C.4.3.2.1).

A retrieve identifier holds unique keys from the top of the hierarchy down to its level;
every instance below the named entities is a sub-operation. The index rows carry what
the sub-operations need: the stored file, its SOP class and its transfer syntax.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from node.storage.database import instances, patients, series, studies
from node.storage.index import InstanceRow, instance_rows
from node.storage.query.identifier import RetrieveQuery
from node.storage.query.matching import condition
from node.storage.query.model import Level

# The unique key of each level below the patient, as a column of the instance query.
_COLUMNS: dict[Level, Any] = {
    Level.STUDY: series.c.study_uid,
    Level.SERIES: instances.c.series_uid,
    Level.IMAGE: instances.c.sop_instance_uid,
}


def instances_to_retrieve(engine: Engine, query: RetrieveQuery) -> list[InstanceRow]:
    """Every archived instance below the entities ``query`` names, in series order."""
    where: list[Any] = []
    dialect = engine.dialect.name
    for cond in query.conditions:
        key = cond.key
        column = key.column if key.level is Level.PATIENT else _COLUMNS[key.level]
        clause = condition(column, key.match, cond.values, dialect)
        if clause is None:  # parse_retrieve never lets a unique key be universal
            continue
        if key.level is Level.PATIENT:
            # Patients are above the instance query's join: select their studies.
            patient_studies = select(studies.c.study_uid).join(
                patients, patients.c.patient_key == studies.c.patient_key
            )
            clause = series.c.study_uid.in_(patient_studies.where(clause))
        where.append(clause)
    with engine.connect() as conn:
        return instance_rows(conn, *where)
