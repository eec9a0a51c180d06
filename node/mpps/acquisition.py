"""The wait for a COMPLETED MPPS's instances, and the one KOS it may yield.

PS3.17 Annex W case 1: when a step is COMPLETED and every instance it lists is in the
archive, build the "Signed Complete Acquisition Content" KOS. The database is the
source of truth: the ``acquisitions`` row holds the state (waiting, building,
kos-built, incomplete, failed), the deadline and the missing UIDs, so the wait
survives restarts; scheduler jobs are only rebuilt from it.

Rules kept here: one MPPS never yields a second KOS (the state moves from waiting to
building in one conditional UPDATE, which only one checker can win); a timeout never
yields a "complete" KOS; DISCONTINUED never starts a wait; instances that arrive after
the KOS (or after the timeout) for a series of the step are recorded as late arrivals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update

from node.mpps import reads
from node.mpps.reads import Acquisition
from node.mpps.tables import acquisitions, mpps_expected
from node.storage import audit
from node.storage.prepared import Prepared, raw_cursor

log = logging.getLogger("node.acquisition")

WAITING = "waiting"
BUILDING = "building"
KOS_BUILT = "kos-built"
INCOMPLETE = "incomplete"
FAILED = "failed"


class AcquisitionEvent:
    COMPLETE = "acquisition-complete"
    INCOMPLETE = "acquisition-incomplete"
    KOS_FAILED = "kos-failed"
    LATE_ARRIVAL = "late-arrival"


# Builds and stores the KOS for an MPPS; returns the KOS SOP Instance UID.
KosBuilder = Callable[[str], str]


class AcquisitionTracker:
    def __init__(
        self,
        engine: Engine,
        build_kos: KosBuilder,
        on_built: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.build_kos = build_kos
        # Called with (MPPS UID, KOS UID) once, right after a KOS is built (send rules).
        self.on_built = on_built
        # Runs once per stored instance: compiled once (node.storage.prepared).
        self._waits_query = Prepared(
            engine,
            select(acquisitions.c.mpps_uid, acquisitions.c.state, mpps_expected.c.sop_instance_uid)
            .join(mpps_expected, mpps_expected.c.mpps_uid == acquisitions.c.mpps_uid)
            .where(
                (mpps_expected.c.sop_instance_uid == bindparam("instance"))
                | and_(
                    mpps_expected.c.series_uid == bindparam("series"),
                    or_(acquisitions.c.state == KOS_BUILT, acquisitions.c.state == INCOMPLETE),
                )
            ),
        )

    def get(self, mpps_uid: str) -> Acquisition | None:
        return reads.acquisition(self.engine, mpps_uid)

    def all(self) -> list[Acquisition]:
        return reads.all_acquisitions(self.engine)

    def open_waits(self) -> list[Acquisition]:
        """Acquisitions still to decide: rebuilt into scheduler jobs at start."""
        return [a for a in self.all() if a.state in (WAITING, BUILDING, FAILED)]

    def resume(self) -> list[Acquisition]:
        """At start: a build a crash interrupted goes back to waiting (the KOS UID is
        derived from the MPPS UID, so a rebuild finds a KOS that was already stored).
        Returns the open waits for the scheduler."""
        with self.engine.begin() as conn:
            conn.execute(
                update(acquisitions)
                .where(acquisitions.c.state == BUILDING)
                .values(state=WAITING, updated_at=audit.utc_now())
            )
        return self.open_waits()

    def missing(self, mpps_uid: str) -> list[str]:
        """The listed instances not (yet) in the archive, in UID order."""
        with self.engine.connect() as conn:
            return reads.missing_listed_by(conn, mpps_uid)

    def check(self, mpps_uid: str) -> str:
        """Build the KOS if every listed instance is archived; return the new state."""
        acq = self.get(mpps_uid)
        if acq is None or acq.state not in (WAITING, FAILED):
            return acq.state if acq else "unknown"
        missing = self.missing(mpps_uid)
        if missing:
            self._set(mpps_uid, acq.state, missing=json.dumps(missing))
            return acq.state
        if not self._claim(mpps_uid, acq.state):
            return BUILDING  # another checker won the claim
        try:
            kos_uid = self.build_kos(mpps_uid)
        except Exception as exc:
            log.exception("building the KOS for MPPS %s failed", mpps_uid)
            self._finish(mpps_uid, FAILED, AcquisitionEvent.KOS_FAILED, acq, detail=str(exc))
            return FAILED
        self._finish(mpps_uid, KOS_BUILT, AcquisitionEvent.COMPLETE, acq, kos_uid=kos_uid)
        if self.on_built is not None:
            try:
                self.on_built(mpps_uid, kos_uid)
            except Exception:  # the KOS is built and recorded; a follow-up must not undo that
                log.exception("after-KOS action failed for MPPS %s", mpps_uid)
        return KOS_BUILT

    def expire(self, mpps_uid: str) -> str:
        """The deadline passed: build if complete after all, else mark incomplete."""
        state = self.check(mpps_uid)
        if state != WAITING:
            return state
        acq = self.get(mpps_uid)
        assert acq is not None
        # The claim, the instances still missing and the custody record commit together:
        # a reader (or a crash) never finds the acquisition incomplete without its record.
        with self.engine.begin() as conn:
            if not self._claim_in(conn, mpps_uid, WAITING, INCOMPLETE):
                return self._state(conn, mpps_uid) or INCOMPLETE  # another worker decided
            missing = reads.missing_listed_by(conn, mpps_uid)
            conn.execute(
                update(acquisitions)
                .where(acquisitions.c.mpps_uid == mpps_uid)
                .values(missing=json.dumps(missing), kos_uid=None, detail="")
            )
            audit.append(
                conn,
                AcquisitionEvent.INCOMPLETE,
                study_uid=acq.study_uid,
                details={"mpps_uid": mpps_uid, "missing": missing},
            )
        log.warning(
            "acquisition of MPPS %s incomplete at its deadline: %d instances missing",
            mpps_uid,
            len(missing),
        )
        return INCOMPLETE

    @staticmethod
    def _state(conn: Connection, mpps_uid: str) -> str | None:
        return conn.execute(
            select(acquisitions.c.state).where(acquisitions.c.mpps_uid == mpps_uid)
        ).scalar_one_or_none()

    def waits_for(self, sop_instance_uid: str, series_uid: str) -> tuple[list[str], list[str]]:
        """(MPPS waiting for this instance, MPPS already decided that cover its series)."""
        waiting: set[str] = set()
        decided: set[str] = set()
        with raw_cursor(self.engine) as cursor:
            rows = self._waits_query.run(
                cursor, {"instance": sop_instance_uid, "series": series_uid}
            ).fetchall()
        for mpps_uid, state, listed in rows:
            if listed == sop_instance_uid and state in (WAITING, FAILED):
                waiting.add(mpps_uid)
            elif state in (KOS_BUILT, INCOMPLETE):
                decided.add(mpps_uid)
        return sorted(waiting), sorted(decided)

    def record_late_arrival(self, mpps_uid: str, sop_instance_uid: str, study_uid: str) -> None:
        with self.engine.begin() as conn:
            audit.append(
                conn,
                AcquisitionEvent.LATE_ARRIVAL,
                study_uid=study_uid,
                sop_instance_uid=sop_instance_uid,
                details={"mpps_uid": mpps_uid},
            )

    def _claim(self, mpps_uid: str, state: str, to: str = BUILDING) -> bool:
        with self.engine.begin() as conn:
            return self._claim_in(conn, mpps_uid, state, to)

    @staticmethod
    def _claim_in(conn: Connection, mpps_uid: str, state: str, to: str) -> bool:
        """Move the acquisition from ``state`` to ``to``; False when it was not in ``state``
        (another checker or worker got there first)."""
        result = conn.execute(
            update(acquisitions)
            .where(acquisitions.c.mpps_uid == mpps_uid)
            .where(acquisitions.c.state == state)
            .values(state=to, updated_at=audit.utc_now())
        )
        return result.rowcount == 1

    def _set(self, mpps_uid: str, state: str, **values: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(acquisitions)
                .where(acquisitions.c.mpps_uid == mpps_uid)
                .where(acquisitions.c.state == state)
                .values(updated_at=audit.utc_now(), **values)
            )

    def _finish(
        self,
        mpps_uid: str,
        state: str,
        event: str,
        acq: Acquisition,
        *,
        kos_uid: str | None = None,
        missing: list[str] | None = None,
        detail: str = "",
    ) -> None:
        details: dict[str, object] = {"mpps_uid": mpps_uid}
        if kos_uid:
            details["kos_uid"] = kos_uid
        if missing is not None:
            details["missing"] = missing
        if detail:
            details["error"] = detail
        with self.engine.begin() as conn:
            conn.execute(
                update(acquisitions)
                .where(acquisitions.c.mpps_uid == mpps_uid)
                .values(
                    state=state,
                    kos_uid=kos_uid,
                    missing=json.dumps(missing or []),
                    detail=detail,
                    updated_at=audit.utc_now(),
                )
            )
            audit.append(conn, event, study_uid=acq.study_uid, details=details)
