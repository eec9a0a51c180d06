"""Received Signed Manifests: register on arrival, check, wait for late instances.

PS3.17 Annex W case 2, receiving side. When a KOS titled "Signed Manifest" is stored,
the node records it with the instances it lists and checks it at once. While listed
instances are missing, the manifest is ``waiting``: every newly stored instance it lists
triggers another check, and at the deadline (``manifests.wait``) a manifest still
missing instances becomes ``incomplete``. The final result goes into the audit log and
a JSON report (``manifests.reports/<manifest UID>.json``). All state is in the database;
at start the waits are rescheduled from it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.uid import KeyObjectSelectionDocumentStorage
from sqlalchemy import Engine, insert, select, update

from node.config import NodeConfig
from node.jobs.scheduler import Jobs
from node.signatures import load_trust
from node.signatures.check_references import referenced_uids
from node.signed_manifests.check import (
    FINAL_STATES,
    VERIFIED,
    WAITING,
    Findings,
    examine,
    is_signed_manifest,
    read_title,
)
from node.signed_manifests.tables import manifest_references, received_manifests
from node.storage import audit
from node.storage.archive import Archive, StoreOutcome, StoreResult
from node.storage.audit import AuditEvent
from node.storage.files import write_atomic
from node.storage.index import archived_paths_among, find_instance

log = logging.getLogger("node.signed_manifests")

REPORT_FORMAT = "dicom-node-manifest-check"
REPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReceivedSignedManifest:
    manifest_uid: str
    study_uid: str
    calling_ae: str
    state: str
    deadline: datetime
    signer: str
    referenced: int
    missing: list[str]
    altered: dict[str, list[str]]
    detail: str
    report: str
    received_at: str


def all_signed_manifests(engine: Engine) -> list[ReceivedSignedManifest]:
    """Every received manifest, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(received_manifests).order_by(received_manifests.c.received_at)
        ).all()
    return [_manifest(r) for r in rows]


class SignedManifestReceiver:
    def __init__(self, config: NodeConfig, archive: Archive, jobs: Jobs) -> None:
        self.config = config
        self.archive = archive
        self.engine = archive.engine
        self.jobs = jobs
        # Whether any manifest waits for instances: while none does, a stored instance
        # costs no query. Kept under a lock with registering and deciding, and rebuilt
        # from the database at start (one serving process registers manifests).
        self._waiting_lock = threading.Lock()
        self._any_waiting = False

    # --- events ---------------------------------------------------------------------
    def on_stored(self, outcome: StoreOutcome) -> None:
        """A stored instance: a new manifest to check, or one a waiting manifest lists."""
        if outcome.result is not StoreResult.STORED:
            return
        header = outcome.header
        if header.sop_class_uid == KeyObjectSelectionDocumentStorage:
            path = self.archive.files.path(outcome.relpath)
            if is_signed_manifest(read_title(path)):
                self.register(header.sop_instance_uid, header.study_uid, path)
                return
        if not self._any_waiting:
            return  # the usual case: no query on the C-STORE path
        with self.engine.connect() as conn:
            waiting = [
                r[0]
                for r in conn.execute(
                    select(manifest_references.c.manifest_uid)
                    .join(
                        received_manifests,
                        received_manifests.c.manifest_uid == manifest_references.c.manifest_uid,
                    )
                    .where(manifest_references.c.sop_instance_uid == header.sop_instance_uid)
                    .where(received_manifests.c.state == WAITING)
                )
            ]
        for manifest_uid in waiting:
            self.jobs.soon(f"manifest-check:{manifest_uid}", self.check, manifest_uid)

    def register(self, manifest_uid: str, study_uid: str, path: Path) -> None:
        """Record a newly stored manifest and the instances it lists, then check it.

        Runs on the C-STORE path of the manifest: the listed UIDs are read from the
        file's bytes, without pydicom objects for its items.
        """
        listed = sorted({uid for uid in referenced_uids(path) if uid})
        now = datetime.now(UTC)
        deadline = now + timedelta(seconds=self.config.manifests.wait)
        with self._waiting_lock:
            self._any_waiting = True  # before the rows: a store after this looks them up
            with self.engine.begin() as conn:
                row = find_instance(conn, manifest_uid)
                calling_ae = row.calling_ae if row else ""
                conn.execute(
                    insert(received_manifests).values(
                        manifest_uid=manifest_uid,
                        study_uid=study_uid,
                        calling_ae=calling_ae,
                        state=WAITING,
                        deadline=deadline.isoformat(timespec="microseconds"),
                        referenced=len(listed),
                        received_at=now.isoformat(timespec="microseconds"),
                        updated_at=now.isoformat(timespec="microseconds"),
                    )
                )
                if listed:
                    conn.execute(
                        insert(manifest_references),
                        [{"manifest_uid": manifest_uid, "sop_instance_uid": u} for u in listed],
                    )
                audit.append(
                    conn,
                    AuditEvent.MANIFEST_RECEIVED,
                    study_uid=study_uid,
                    sop_instance_uid=manifest_uid,
                    details={"calling_ae": calling_ae, "references": len(listed)},
                )
        self.schedule(manifest_uid, deadline)

    def schedule(self, manifest_uid: str, deadline: datetime) -> None:
        self.jobs.soon(f"manifest-check:{manifest_uid}", self.check, manifest_uid)
        self.jobs.at(f"manifest-expire:{manifest_uid}", deadline, self.expire, manifest_uid)

    def resume(self) -> int:
        """Reschedule every waiting manifest from the database; return how many."""
        waiting = [m for m in all_signed_manifests(self.engine) if m.state == WAITING]
        with self._waiting_lock:
            self._any_waiting = bool(waiting)
        for manifest in waiting:
            self.schedule(manifest.manifest_uid, manifest.deadline)
        return len(waiting)

    # --- checking -------------------------------------------------------------------
    def check(self, manifest_uid: str, *, final: bool = False) -> str:
        """Check a waiting manifest; decide it when nothing is missing or ``final``."""
        current = self.get(manifest_uid)
        if current is None or current.state != WAITING:
            return current.state if current else "unknown"
        with self.engine.connect() as conn:
            row = find_instance(conn, manifest_uid)
        if row is None:
            return current.state
        findings = examine(
            self.archive.files.path(row.path),
            self._lookup(manifest_uid),
            load_trust(self.config.trust),
        )
        verdict = findings.verdict(waiting_allowed=not final)
        if verdict == WAITING:
            self._update(manifest_uid, WAITING, findings)
            return WAITING
        if self._decide(current, verdict, findings):
            log.log(
                logging.INFO if verdict == VERIFIED else logging.WARNING,
                "Signed Manifest %s from %s: %s",
                manifest_uid,
                current.calling_ae,
                _summary(verdict, findings),
            )
        return verdict

    def expire(self, manifest_uid: str) -> str:
        """The wait is over: decide with what has arrived."""
        return self.check(manifest_uid, final=True)

    def get(self, manifest_uid: str) -> ReceivedSignedManifest | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(received_manifests).where(received_manifests.c.manifest_uid == manifest_uid)
            ).first()
        return _manifest(row) if row else None

    def _lookup(self, manifest_uid: str) -> Callable[[str], Path | None]:
        """Paths of the archived instances the manifest lists, read in one query."""
        listed = select(manifest_references.c.sop_instance_uid).where(
            manifest_references.c.manifest_uid == manifest_uid
        )
        with self.engine.connect() as conn:
            rows = archived_paths_among(conn, listed)
        paths = {uid: self.archive.files.path(path) for uid, path in rows.items()}
        return paths.get

    def _refresh_waiting(self) -> None:
        with self._waiting_lock, self.engine.connect() as conn:
            self._any_waiting = (
                conn.execute(
                    select(received_manifests.c.manifest_uid)
                    .where(received_manifests.c.state == WAITING)
                    .limit(1)
                ).first()
                is not None
            )

    def _update(self, manifest_uid: str, state: str, findings: Findings, **more: Any) -> int:
        with self.engine.begin() as conn:
            return self._update_in(conn, manifest_uid, state, findings, **more)

    @staticmethod
    def _update_in(
        conn: Any, manifest_uid: str, state: str, findings: Findings, **more: Any
    ) -> int:
        return int(
            conn.execute(
                update(received_manifests)
                .where(received_manifests.c.manifest_uid == manifest_uid)
                .where(received_manifests.c.state == WAITING)
                .values(
                    state=state,
                    signer=findings.signer,
                    missing=json.dumps(findings.missing),
                    altered=json.dumps(findings.altered),
                    detail="; ".join(findings.signature_problems),
                    updated_at=audit.utc_now(),
                    **more,
                )
            ).rowcount
        )

    def _decide(self, current: ReceivedSignedManifest, verdict: str, findings: Findings) -> bool:
        """Write the final result once (a concurrent check that lost the race does not)."""
        # The report is on disk before the state says it is decided (a reader of the
        # state finds it); a concurrent check writes the same verdict over it.
        report = self.config.manifests.reports / f"{current.manifest_uid}.json"
        document = _report(current, verdict, findings)
        write_atomic(report, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
        verified = verdict == VERIFIED
        # The verdict and its custody record commit together: a reader that sees the
        # state finds the record, and a crash cannot keep one without the other.
        with self.engine.begin() as conn:
            if not self._update_in(
                conn, current.manifest_uid, verdict, findings, report=str(report)
            ):
                return False
            audit.append(
                conn,
                AuditEvent.MANIFEST_VERIFIED if verified else AuditEvent.MANIFEST_CHECK_FAILED,
                study_uid=current.study_uid,
                sop_instance_uid=current.manifest_uid,
                details={
                    "result": verdict,
                    "calling_ae": current.calling_ae,
                    "signer": findings.signer,
                    "referenced": len(findings.referenced),
                    "missing": findings.missing,
                    "altered": sorted(findings.altered),
                    "signature_problems": findings.signature_problems,
                    "report": str(report),
                },
            )
        self._refresh_waiting()
        return True


def _summary(verdict: str, findings: Findings) -> str:
    parts = [verdict, f"{len(findings.referenced)} referenced"]
    if findings.missing:
        parts.append(f"{len(findings.missing)} missing")
    if findings.altered:
        parts.append(f"{len(findings.altered)} altered")
    if findings.signature_problems:
        parts.append("signature: " + "; ".join(findings.signature_problems))
    return ", ".join(parts)


def _report(current: ReceivedSignedManifest, verdict: str, findings: Findings) -> dict[str, Any]:
    """The JSON report of one manifest check (format name and version first)."""
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "manifest_uid": current.manifest_uid,
        "study_uid": current.study_uid,
        "sender_ae": current.calling_ae,
        "received_at": current.received_at,
        "checked_at": audit.utc_now(),
        "result": verdict,
        "signer": findings.signer,
        "signature_problems": findings.signature_problems,
        "referenced": len(findings.referenced),
        "verified": len(findings.referenced) - len(findings.missing) - len(findings.altered),
        "missing": findings.missing,
        "altered": [{"sop_instance_uid": u, "problems": p} for u, p in findings.altered.items()],
    }


def _manifest(row: Any) -> ReceivedSignedManifest:
    r = row._mapping
    return ReceivedSignedManifest(
        manifest_uid=r["manifest_uid"],
        study_uid=r["study_uid"],
        calling_ae=r["calling_ae"],
        state=r["state"],
        deadline=datetime.fromisoformat(r["deadline"]),
        signer=r["signer"] or "",
        referenced=int(r["referenced"] or 0),
        missing=json.loads(r["missing"] or "[]"),
        altered=json.loads(r["altered"] or "{}"),
        detail=r["detail"] or "",
        report=r["report"] or "",
        received_at=r["received_at"],
    )


__all__ = [
    "FINAL_STATES",
    "ReceivedSignedManifest",
    "SignedManifestReceiver",
    "all_signed_manifests",
]
