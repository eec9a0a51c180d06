"""Index queries and upserts over the tables of :mod:`node.storage.database`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from node.storage.database import (
    duplicates,
    instances,
    patients,
    series,
    studies,
)
from node.storage.header import InstanceHeader
from node.storage.prepared import Prepared

# Only its field names matter: the column lists of the prepared hierarchy inserts.
_EXAMPLE_HEADER = InstanceHeader(*[""] * len(fields(InstanceHeader)))


def _insert_ignore_statement(dialect: str, table: Table) -> Any:
    """INSERT that leaves an existing row with the same key untouched (first one wins)."""
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"database dialect {dialect} is not supported")  # pragma: no cover


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    conn.execute(_insert_ignore_statement(conn.dialect.name, table).values(values))


def patient_key(header: InstanceHeader) -> str:
    return f"{header.patient_id}\\{header.issuer}"


def _hierarchy_rows(h: InstanceHeader) -> list[tuple[Table, dict[str, Any]]]:
    key = patient_key(h)
    return [
        (
            patients,
            {
                "patient_key": key,
                "patient_id": h.patient_id,
                "issuer": h.issuer,
                "patient_name": h.patient_name,
                "birth_date": h.birth_date,
                "sex": h.sex,
            },
        ),
        (
            studies,
            {
                "study_uid": h.study_uid,
                "patient_key": key,
                "study_date": h.study_date,
                "study_time": h.study_time,
                "accession_number": h.accession_number,
                "study_id": h.study_id,
                "study_description": h.study_description,
                "referring_physician": h.referring_physician,
            },
        ),
        (
            series,
            {
                "series_uid": h.series_uid,
                "study_uid": h.study_uid,
                "modality": h.modality,
                "series_number": h.series_number,
                "series_description": h.series_description,
            },
        ),
    ]


def upsert_hierarchy(conn: Connection, h: InstanceHeader) -> None:
    """Make sure the patient, study and series rows of ``h`` exist."""
    for table, values in _hierarchy_rows(h):
        insert_ignore(conn, table, values)


class CursorHierarchy:
    """:func:`upsert_hierarchy` for a DB-API cursor (see :mod:`node.storage.prepared`)."""

    def __init__(self, engine: Engine) -> None:
        self._statements: dict[str, Prepared] = {}
        for table, values in _hierarchy_rows(_EXAMPLE_HEADER):
            statement = _insert_ignore_statement(engine.dialect.name, table)
            self._statements[table.name] = Prepared(engine, statement, list(values))

    def upsert(self, cursor: Any, h: InstanceHeader) -> None:
        for table, values in _hierarchy_rows(h):
            self._statements[table.name].run(cursor, values)


@dataclass(frozen=True, slots=True)
class InstanceRow:
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    sha256: str
    calling_ae: str
    received_at: str


def _instance_query() -> Any:
    return select(
        instances.c.sop_instance_uid,
        instances.c.series_uid,
        series.c.study_uid,
        instances.c.sop_class_uid,
        instances.c.transfer_syntax_uid,
        instances.c.path,
        instances.c.size,
        instances.c.sha256,
        instances.c.calling_ae,
        instances.c.received_at,
    ).join(series, series.c.series_uid == instances.c.series_uid)


def instance_rows(conn: Connection, *where: Any) -> list[InstanceRow]:
    """Archived instances matching the ``where`` clauses, in series and instance order."""
    query = _instance_query().where(*where)
    query = query.order_by(series.c.series_number, instances.c.instance_number, instances.c.path)
    return [InstanceRow(*r) for r in conn.execute(query)]


def find_instance(conn: Connection, sop_instance_uid: str) -> InstanceRow | None:
    row = conn.execute(
        _instance_query().where(instances.c.sop_instance_uid == sop_instance_uid)
    ).first()
    return InstanceRow(*row) if row else None


# The functions below take the UIDs as a one-column query of the caller's own tables
# (what an MPPS, a transfer or a manifest lists), so each is a single statement and
# node.storage never names another package's table.
UidQuery = Select[Any]


def instances_among(conn: Connection, uids: UidQuery) -> list[InstanceRow]:
    """The archived instances among ``uids``, in series and instance order."""
    return instance_rows(conn, instances.c.sop_instance_uid.in_(uids))


def instances_by_uid(conn: Connection, uids: UidQuery) -> list[InstanceRow]:
    """The archived instances among ``uids``, by series UID then SOP Instance UID."""
    rows = conn.execute(
        _instance_query()
        .where(instances.c.sop_instance_uid.in_(uids))
        .order_by(instances.c.series_uid, instances.c.sop_instance_uid)
    )
    return [InstanceRow(*r) for r in rows]


def not_archived(conn: Connection, uids: UidQuery) -> list[str]:
    """Those of ``uids`` the archive does not hold, in UID order."""
    listed = uids.subquery()
    uid = listed.c[0]
    query = (
        select(uid)
        .outerjoin(instances, instances.c.sop_instance_uid == uid)
        .where(instances.c.sop_instance_uid.is_(None))
        .order_by(uid)
    )
    return [str(r[0]) for r in conn.execute(query)]


def archived_paths_among(conn: Connection, uids: UidQuery) -> dict[str, str]:
    """SOP Instance UID -> archive-relative path of the archived instances among ``uids``."""
    query = select(instances.c.sop_instance_uid, instances.c.path).where(
        instances.c.sop_instance_uid.in_(uids)
    )
    return {str(uid): str(path) for uid, path in conn.execute(query)}


def study_instance_uids(conn: Connection, study_uid: str) -> list[str]:
    """The SOP Instance UIDs of a study, in series and instance number order."""
    query = (
        select(instances.c.sop_instance_uid)
        .join(series, series.c.series_uid == instances.c.series_uid)
        .where(series.c.study_uid == study_uid)
        .order_by(series.c.series_number, instances.c.instance_number)
    )
    return [str(r[0]) for r in conn.execute(query)]


def study_instances(engine: Engine, study_uid: str) -> list[InstanceRow]:
    """Every instance of a study, ordered by series then instance number."""
    with engine.connect() as conn:
        rows = conn.execute(
            _instance_query()
            .where(series.c.study_uid == study_uid)
            .order_by(series.c.series_number, instances.c.instance_number, instances.c.path)
        )
        return [InstanceRow(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class StudySummary:
    study_uid: str
    patient_id: str
    study_date: str
    accession_number: str
    description: str
    series_count: int
    instance_count: int


def study_summaries(engine: Engine) -> list[StudySummary]:
    n_series = func.count(func.distinct(series.c.series_uid))
    n_instances = func.count(instances.c.sop_instance_uid)
    query = (
        select(
            studies.c.study_uid,
            patients.c.patient_id,
            studies.c.study_date,
            studies.c.accession_number,
            studies.c.study_description,
            n_series,
            n_instances,
        )
        .join(patients, patients.c.patient_key == studies.c.patient_key)
        .join(series, series.c.study_uid == studies.c.study_uid)
        .join(instances, instances.c.series_uid == series.c.series_uid)
        .group_by(studies.c.study_uid, patients.c.patient_id)
        .order_by(studies.c.study_date, studies.c.study_uid)
    )
    with engine.connect() as conn:
        return [StudySummary(*r) for r in conn.execute(query)]


def series_modality(engine: Engine, series_uid: str) -> str | None:
    """The Modality the archive holds for a series, if it holds the series."""
    with engine.connect() as conn:
        found = conn.execute(
            select(series.c.modality).where(series.c.series_uid == series_uid)
        ).scalar()
    return str(found) if found else None


def archived_paths(engine: Engine) -> set[str]:
    """The archive-relative path of every indexed instance (what the census compares)."""
    with engine.connect() as conn:
        return {str(p) for p in conn.execute(select(instances.c.path)).scalars()}


def totals(engine: Engine) -> dict[str, int]:
    """Counts of rows per table, for ``dicom-node status``."""
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in (
                ("patients", patients),
                ("studies", studies),
                ("series", series),
                ("instances", instances),
                ("duplicates", duplicates),
            )
        }


def study_files_in_order(engine: Engine, study_uid: str) -> list[tuple[Any, ...]]:
    """The study's instances as (SOP Instance UID, Study UID, path, size, SHA-256,
    modality, Series Number, Instance Number), in index order; the export sorts them."""
    query = (
        select(
            instances.c.sop_instance_uid,
            series.c.study_uid,
            instances.c.path,
            instances.c.size,
            instances.c.sha256,
            series.c.modality,
            series.c.series_number,
            instances.c.instance_number,
        )
        .join(series, series.c.series_uid == instances.c.series_uid)
        .where(series.c.study_uid == study_uid)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]
