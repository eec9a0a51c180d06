"""Persistence of MPPS instances (PS3.4 F.7): every instance and every state change is
kept in the index and recorded in the audit log; nothing lives only in memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, select, update

from node.mpps import rules
from node.mpps.reads import decode, encode
from node.mpps.rules import MppsRefused, Problem
from node.mpps.tables import acquisitions, mpps, mpps_expected
from node.storage import audit


class MppsEvent:
    CREATED = "mpps-created"
    UPDATED = "mpps-updated"
    COMPLETED = "mpps-completed"
    DISCONTINUED = "mpps-discontinued"


@dataclass(frozen=True, slots=True)
class MppsChange:
    """The attribute list after a change, and the state it left the step in."""

    attributes: Dataset
    status: str
    study_uid: str | None


class MppsRegistry:
    def __init__(self, engine: Engine, completion_timeout: float) -> None:
        self.engine = engine
        self.completion_timeout = completion_timeout

    def get(self, mpps_uid: str) -> tuple[str, Dataset] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(mpps.c.status, mpps.c.attributes).where(mpps.c.mpps_uid == mpps_uid)
            ).first()
        return (row.status, decode(row.attributes)) if row else None

    def create(self, mpps_uid: str, attributes: Dataset, calling_ae: str) -> MppsChange:
        """N-CREATE: validate, store, record; raise MppsRefused."""
        rules.check_instance_uid(mpps_uid)
        rules.check_create(attributes)
        study_uid = rules.study_uid_of(attributes)
        now = audit.utc_now()
        with self.engine.begin() as conn:
            exists = conn.execute(select(mpps.c.mpps_uid).where(mpps.c.mpps_uid == mpps_uid))
            if exists.first():
                raise MppsRefused(Problem.DUPLICATE_INSTANCE, f"MPPS {mpps_uid} already exists")
            conn.execute(
                mpps.insert().values(
                    mpps_uid=mpps_uid,
                    status=rules.IN_PROGRESS,
                    study_uid=study_uid,
                    calling_ae=calling_ae,
                    attributes=encode(attributes),
                    created_at=now,
                    updated_at=now,
                )
            )
            audit.append(
                conn,
                MppsEvent.CREATED,
                study_uid=study_uid,
                details={"mpps_uid": mpps_uid, "calling_ae": calling_ae},
            )
        return MppsChange(attributes, rules.IN_PROGRESS, study_uid)

    def update(self, mpps_uid: str, modification: Dataset, calling_ae: str) -> MppsChange:
        """N-SET: validate against the stored state, merge, store, record."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(mpps.c.status, mpps.c.attributes, mpps.c.study_uid).where(
                    mpps.c.mpps_uid == mpps_uid
                )
            ).first()
            if row is None:
                raise MppsRefused(Problem.NO_SUCH_INSTANCE, f"no MPPS {mpps_uid}")
            rules.check_set(row.status, modification)
            merged = rules.merge(decode(row.attributes), modification)
            status = rules.status_of(merged)
            if status in rules.FINAL_STATES:
                rules.check_final(merged)
            conn.execute(
                update(mpps)
                .where(mpps.c.mpps_uid == mpps_uid)
                .values(status=status, attributes=encode(merged), updated_at=audit.utc_now())
            )
            event = {
                rules.COMPLETED: MppsEvent.COMPLETED,
                rules.DISCONTINUED: MppsEvent.DISCONTINUED,
            }.get(status, MppsEvent.UPDATED)
            details: dict[str, object] = {"mpps_uid": mpps_uid, "calling_ae": calling_ae}
            if status == rules.COMPLETED:
                expected = rules.expected_instances(merged)
                details["expected_instances"] = len(expected)
                self._start_wait(conn, mpps_uid, row.study_uid or "", expected)
            audit.append(conn, event, study_uid=row.study_uid, details=details)
        return MppsChange(merged, status, row.study_uid)

    def _start_wait(
        self,
        conn: Connection,
        mpps_uid: str,
        study_uid: str,
        expected: list[rules.ExpectedInstance],
    ) -> None:
        for item in expected:
            conn.execute(
                mpps_expected.insert().values(
                    mpps_uid=mpps_uid,
                    sop_instance_uid=item.sop_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    series_uid=item.series_uid,
                )
            )
        deadline = datetime.now(UTC) + timedelta(seconds=self.completion_timeout)
        conn.execute(
            acquisitions.insert().values(
                mpps_uid=mpps_uid,
                state="waiting",
                study_uid=study_uid,
                deadline=deadline.isoformat(),
                missing=json.dumps([i.sop_instance_uid for i in expected]),
                detail="",
                updated_at=audit.utc_now(),
            )
        )
