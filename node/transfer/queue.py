"""The transfer queue: outgoing study transfers and their state, kept in the database.

States of a transfer::

    queued -> sending -> completed     every instance acknowledged, manifest delivered
                      -> partial       manifest delivered; some instances refused for good
                      -> retrying      association lost or partner busy; next attempt later
                      -> failed        retries exhausted, nothing accepted, or manifest refused
    retrying -> sending ...

Each instance of a transfer is ``pending``, ``sent`` (the partner answered Success or a
Warning) or ``refused`` (a permanent failure status, or no presentation context for it).
An instance is marked ``sent`` only after the partner's response, so after a crash the
worst case is sending it again (partners treat an identical copy as a duplicate).

The database is the source of truth (several processes may share it: ``dicom-node send``
and the serving node); claiming a transfer is a conditional update, so only one worker
sends it at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, insert, select, update

from node.config import RetryPolicy
from node.storage import audit
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow, instances_among, study_instance_uids
from node.transfer.tables import transfer_items, transfers

QUEUED = "queued"
SENDING = "sending"
RETRYING = "retrying"
COMPLETED = "completed"
PARTIAL = "partial"
FAILED = "failed"
OPEN_STATES = (QUEUED, SENDING, RETRYING)
DUE_STATES = (QUEUED, RETRYING)

PENDING = "pending"
SENT = "sent"
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: int
    study_uid: str
    partner: str
    state: str
    trigger: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    manifest_uid: str | None
    queued_at: str


@dataclass(frozen=True, slots=True)
class ItemCounts:
    pending: int = 0
    sent: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The partner's answer for one instance."""

    sop_instance_uid: str
    state: str  # SENT or REFUSED
    status: int | None
    detail: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def backoff(policy: RetryPolicy, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (exponential, capped)."""
    return float(min(policy.maximum, policy.initial * policy.factor ** max(0, attempts - 1)))


class TransferQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- queueing -------------------------------------------------------------------
    def enqueue(
        self, study_uid: str, partner: str, trigger: str, *, claimed: bool = False
    ) -> tuple[int, int]:
        """Queue every archived instance of the study; return (transfer id, instances).

        ``claimed``: the caller sends it at once (``dicom-node send``), so it is created
        ``sending`` and no poll of a serving node can take it first.

        Signed Manifests this node made for earlier transfers are not part of a study's
        content and are left out.
        """
        now = audit.utc_now()
        manifests = select(transfers.c.manifest_uid).where(transfers.c.manifest_uid.is_not(None))
        with self.engine.begin() as conn:
            ours = set(conn.execute(manifests).scalars())
            uids = [u for u in study_instance_uids(conn, study_uid) if u not in ours]
            if not uids:
                return 0, 0
            inserted = conn.execute(
                insert(transfers).values(
                    study_uid=study_uid,
                    partner=partner,
                    state=SENDING if claimed else QUEUED,
                    trigger=trigger,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    queued_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            transfer_id = int(inserted[0])
            conn.execute(
                insert(transfer_items),
                [
                    {"transfer_id": transfer_id, "sop_instance_uid": u, "state": PENDING}
                    for u in uids
                ],
            )
            audit.append(
                conn,
                AuditEvent.TRANSFER_QUEUED,
                study_uid=study_uid,
                details={
                    "transfer_id": transfer_id,
                    "partner": partner,
                    "trigger": trigger,
                    "instances": len(uids),
                },
            )
        return transfer_id, len(uids)

    # --- reading --------------------------------------------------------------------
    def get(self, transfer_id: int) -> Transfer | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(transfers).where(transfers.c.transfer_id == transfer_id)
            ).first()
        return _transfer(row) if row else None

    def all(self) -> list[Transfer]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(transfers).order_by(transfers.c.transfer_id)).all()
        return [_transfer(r) for r in rows]

    def queued_by(self, trigger: str, partner: str) -> bool:
        """Whether ``trigger`` already queued a transfer to ``partner`` (rules fire once)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(transfers.c.transfer_id)
                .where(transfers.c.trigger == trigger)
                .where(transfers.c.partner == partner)
            ).first()
        return found is not None

    def due(self, now: datetime | None = None) -> list[int]:
        """Transfers waiting for an attempt whose time has come."""
        stamp = (now or _now()).isoformat(timespec="microseconds")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(transfers.c.transfer_id)
                .where(transfers.c.state.in_(DUE_STATES))
                .where(transfers.c.next_attempt_at <= stamp)
                .order_by(transfers.c.transfer_id)
            )
            return [int(r[0]) for r in rows]

    def counts(self, transfer_id: int) -> ItemCounts:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(transfer_items.c.state, func.count())
                .where(transfer_items.c.transfer_id == transfer_id)
                .group_by(transfer_items.c.state)
            ).all()
        found = {state: int(n) for state, n in rows}
        return ItemCounts(found.get(PENDING, 0), found.get(SENT, 0), found.get(REFUSED, 0))

    def items(self, transfer_id: int, state: str) -> list[tuple[str, int | None, str]]:
        """(SOP Instance UID, status, detail) of the items in ``state``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    transfer_items.c.sop_instance_uid,
                    transfer_items.c.status,
                    transfer_items.c.detail,
                )
                .where(transfer_items.c.transfer_id == transfer_id)
                .where(transfer_items.c.state == state)
                .order_by(transfer_items.c.sop_instance_uid)
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def archived_items(self, transfer_id: int, state: str) -> tuple[list[InstanceRow], list[str]]:
        """Items in ``state`` found in the archive, and the UIDs no longer archived."""
        with self.engine.connect() as conn:
            wanted = select(transfer_items.c.sop_instance_uid).where(
                and_(
                    transfer_items.c.transfer_id == transfer_id,
                    transfer_items.c.state == state,
                )
            )
            rows = instances_among(conn, wanted)
            all_uids = [r[0] for r in conn.execute(wanted)]
        found = {r.sop_instance_uid for r in rows}
        return rows, [u for u in all_uids if u not in found]

    # --- state changes --------------------------------------------------------------
    def claim(self, transfer_id: int) -> bool:
        """Take a due transfer for sending; False if another worker has it or it is done."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(transfers)
                .where(transfers.c.transfer_id == transfer_id)
                .where(transfers.c.state.in_(DUE_STATES))
                .values(state=SENDING, updated_at=audit.utc_now())
            )
            return result.rowcount == 1

    def release(self, transfer_id: int) -> None:
        """Give a claimed transfer back untouched (no free association to the partner)."""
        self._set(transfer_id, state=RETRYING)

    def record(self, transfer: Transfer, results: Sequence[ItemResult]) -> None:
        """Store the partner's answers, with one custody event per instance, in one commit."""
        if not results:
            return
        entries = []
        for item in results:
            details: dict[str, Any] = {
                "transfer_id": transfer.transfer_id,
                "partner": transfer.partner,
                "status": item.status,
            }
            if item.detail:
                details["detail"] = item.detail
            event = AuditEvent.INSTANCE_SENT if item.state == SENT else AuditEvent.INSTANCE_REFUSED
            entries.append(audit.Entry(event, transfer.study_uid, item.sop_instance_uid, details))
        with self.engine.begin() as conn:
            conn.execute(
                update(transfer_items)
                .where(transfer_items.c.transfer_id == transfer.transfer_id)
                .where(transfer_items.c.sop_instance_uid == bindparam("uid"))
                .values(
                    state=bindparam("new_state"),
                    status=bindparam("new_status"),
                    detail=bindparam("new_detail"),
                ),
                [
                    {
                        "uid": r.sop_instance_uid,
                        "new_state": r.state,
                        "new_status": r.status,
                        "new_detail": r.detail,
                    }
                    for r in results
                ],
            )
            audit.append_many(conn, entries)

    def set_manifest(self, transfer_id: int, manifest_uid: str) -> None:
        """Remember the manifest's UID before it is built, so a retry reuses it."""
        self._set(transfer_id, manifest_uid=manifest_uid)

    def retry_later(self, transfer: Transfer, error: str, policy: RetryPolicy) -> str:
        """An attempt failed for a passing reason: schedule the next one, or give up."""
        attempts = transfer.attempts + 1
        if attempts >= policy.attempts:
            self.finish(transfer, FAILED, f"{error} (gave up after {attempts} attempts)")
            return FAILED
        when = _now() + timedelta(seconds=backoff(policy, attempts))
        with self.engine.begin() as conn:
            conn.execute(
                update(transfers)
                .where(transfers.c.transfer_id == transfer.transfer_id)
                .values(
                    state=RETRYING,
                    attempts=attempts,
                    next_attempt_at=when.isoformat(timespec="microseconds"),
                    last_error=error,
                    updated_at=audit.utc_now(),
                )
            )
            audit.append(
                conn,
                AuditEvent.TRANSFER_ATTEMPT_FAILED,
                study_uid=transfer.study_uid,
                details={
                    "transfer_id": transfer.transfer_id,
                    "partner": transfer.partner,
                    "attempt": attempts,
                    "error": error,
                    "next_attempt_at": when.isoformat(timespec="seconds"),
                },
            )
        return RETRYING

    def finish(
        self, transfer: Transfer, state: str, error: str = "", details: dict[str, Any] | None = None
    ) -> None:
        counts = self.counts(transfer.transfer_id)
        event = AuditEvent.TRANSFER_FAILED if state == FAILED else AuditEvent.TRANSFER_COMPLETED
        with self.engine.begin() as conn:
            conn.execute(
                update(transfers)
                .where(transfers.c.transfer_id == transfer.transfer_id)
                .values(
                    state=state,
                    attempts=transfer.attempts + 1,
                    last_error=error,
                    updated_at=audit.utc_now(),
                )
            )
            audit.append(
                conn,
                event,
                study_uid=transfer.study_uid,
                details={
                    "transfer_id": transfer.transfer_id,
                    "partner": transfer.partner,
                    "state": state,
                    "sent": counts.sent,
                    "refused": counts.refused,
                    **({"error": error} if error else {}),
                    **(details or {}),
                },
            )

    def resume(self) -> int:
        """At start: a transfer left ``sending`` by a crash is due again. Returns how many.

        Assumes one serving process per database (as the acquisition wait does).
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                update(transfers)
                .where(transfers.c.state == SENDING)
                .values(state=RETRYING, updated_at=audit.utc_now())
            )
            return int(result.rowcount)

    def _set(self, transfer_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(transfers)
                .where(transfers.c.transfer_id == transfer_id)
                .values(updated_at=audit.utc_now(), **values)
            )


def _transfer(row: Any) -> Transfer:
    r = row._mapping
    return Transfer(
        transfer_id=int(r["transfer_id"]),
        study_uid=r["study_uid"],
        partner=r["partner"],
        state=r["state"],
        trigger=r["trigger"],
        attempts=int(r["attempts"]),
        next_attempt_at=datetime.fromisoformat(r["next_attempt_at"]),
        last_error=r["last_error"] or "",
        manifest_uid=r["manifest_uid"],
        queued_at=r["queued_at"],
    )
