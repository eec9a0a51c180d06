"""What node.mpps tells the rest of the node: which study a step is of, in which state.

The MPPS tables (:mod:`node.mpps.tables`) belong to node.mpps; transfers, reports, the
acquisition KOS and ``dicom-node status`` ask these functions instead of querying them.
PS3.4 F.7 (the step and its attributes) and PS3.17 Annex W case 1 (the instances a
COMPLETED step lists, and the wait for them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.engine import Row

from node.mpps.rules import COMPLETED
from node.mpps.tables import acquisitions, mpps, mpps_expected
from node.storage.header import parse_dataset
from node.storage.index import InstanceRow, instances_by_uid, not_archived


def encode(ds: Dataset) -> bytes:
    """The stored form of a step's attributes: an Explicit VR Little Endian data set."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def decode(data: bytes) -> Dataset:
    return parse_dataset(data, ExplicitVRLittleEndian, stop_before_pixels=False)


@dataclass(frozen=True, slots=True)
class StepOrigin:
    """The study a step belongs to and the AE that created it."""

    study_uid: str | None
    calling_ae: str


@dataclass(frozen=True, slots=True)
class ListedInstance:
    """One instance a COMPLETED step lists (Performed Series Sequence, PS3.4 Table F.7.2-1)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str


@dataclass(frozen=True, slots=True)
class Acquisition:
    """The wait for a COMPLETED step's instances (node.mpps.acquisition has the states)."""

    mpps_uid: str
    state: str
    study_uid: str
    deadline: datetime
    kos_uid: str | None
    missing: list[str]
    detail: str


def step_origin(engine: Engine, mpps_uid: str) -> StepOrigin | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(mpps.c.study_uid, mpps.c.calling_ae).where(mpps.c.mpps_uid == mpps_uid)
        ).first()
    return StepOrigin(row[0], str(row[1])) if row is not None else None


def completed_steps(engine: Engine, study_uid: str) -> list[Dataset]:
    """The attributes of every COMPLETED step of the study."""
    query = select(mpps.c.attributes).where(
        mpps.c.study_uid == study_uid, mpps.c.status == COMPLETED
    )
    with engine.connect() as conn:
        return [decode(r[0]) for r in conn.execute(query)]


def listed_for_study(engine: Engine, study_uid: str) -> list[ListedInstance]:
    """Every instance the COMPLETED steps of the study list."""
    query = (
        select(
            mpps_expected.c.sop_instance_uid,
            mpps_expected.c.sop_class_uid,
            mpps_expected.c.series_uid,
        )
        .join(mpps, mpps.c.mpps_uid == mpps_expected.c.mpps_uid)
        .where(mpps.c.study_uid == study_uid, mpps.c.status == COMPLETED)
    )
    with engine.connect() as conn:
        return [ListedInstance(r[0], r[1], r[2]) for r in conn.execute(query)]


def listed_query(mpps_uid: str) -> Select[Any]:
    """The SOP Instance UIDs one step lists, as a query (for node.storage.index)."""
    return select(mpps_expected.c.sop_instance_uid).where(mpps_expected.c.mpps_uid == mpps_uid)


def listed_count(conn: Connection, mpps_uid: str) -> int:
    """How many instances one step lists."""
    query = select(func.count()).where(mpps_expected.c.mpps_uid == mpps_uid)
    return int(conn.execute(query).scalar_one())


def archived_listed_by(conn: Connection, mpps_uid: str) -> list[InstanceRow]:
    """The archived instances among those a step lists, by series then UID."""
    return instances_by_uid(conn, listed_query(mpps_uid))


def missing_listed_by(conn: Connection, mpps_uid: str) -> list[str]:
    """The instances a step lists that the archive does not hold (yet), in UID order."""
    return not_archived(conn, listed_query(mpps_uid))


def step_counts(engine: Engine) -> list[tuple[str, int]]:
    """How many steps are in each state (IN PROGRESS, COMPLETED, DISCONTINUED)."""
    with engine.connect() as conn:
        rows = conn.execute(select(mpps.c.status, func.count()).group_by(mpps.c.status))
        return [(str(status), int(n)) for status, n in rows]


def acquisition(engine: Engine, mpps_uid: str) -> Acquisition | None:
    with engine.connect() as conn:
        row = conn.execute(select(acquisitions).where(acquisitions.c.mpps_uid == mpps_uid)).first()
    return _acquisition(row) if row else None


def all_acquisitions(engine: Engine) -> list[Acquisition]:
    """Every acquisition wait, oldest change first."""
    with engine.connect() as conn:
        rows = conn.execute(select(acquisitions).order_by(acquisitions.c.updated_at))
        return [_acquisition(r) for r in rows]


def _acquisition(row: Row[object]) -> Acquisition:
    r = row._mapping
    return Acquisition(
        mpps_uid=r["mpps_uid"],
        state=r["state"],
        study_uid=r["study_uid"],
        deadline=datetime.fromisoformat(r["deadline"]),
        kos_uid=r["kos_uid"],
        missing=json.loads(r["missing"] or "[]"),
        detail=r["detail"] or "",
    )
