"""The result of a retrieve: one line per object, one status per request, and a verdict."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from node.scu.request import FinalStatus, RetrieveRequest


class Outcome(enum.StrEnum):
    STORED = "stored"  # arrived and archived now
    DUPLICATE = "duplicate"  # arrived; the archive already held it
    FAILED = "failed"  # a sub-operation failed, or we could not store it
    MISSING = "missing"  # the source did not send it and reported no failure


@dataclass(frozen=True, slots=True)
class KosCheck:
    """A retrieved object checked against a KOS of the archive that references it.

    ``reference_ok``: the Referenced SOP Instance MAC (and any referenced signature)
    matches the retrieved object (PS3.15 A.4). ``kos_signature``: how the KOS's own
    signature verified; ``kos_trusted`` is False when it did not.
    """

    kos_uid: str
    kind: str  # "MAC" or "signature reference"
    reference_ok: bool
    details: tuple[str, ...]
    kos_signature: str
    kos_trusted: bool

    @property
    def ok(self) -> bool:
        return self.reference_ok and self.kos_trusted

    def describe(self) -> str:
        if not self.reference_ok:
            problems = "; ".join(self.details)
            return f"{self.kind} MISMATCH against KOS {self.kos_uid}: {problems}"
        text = f"{self.kind} verified against KOS {self.kos_uid}"
        if self.kos_trusted:
            return f"{text} ({self.kos_signature})"
        return f"{text}, but {self.kos_signature}"


@dataclass(frozen=True, slots=True)
class ObjectResult:
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    outcome: Outcome
    message: str = ""
    path: Path | None = None  # the archived (or kept-aside) copy of what arrived
    conflict: bool = False  # a different copy was archived before under this UID
    kos_checks: tuple[KosCheck, ...] = ()
    wado_url: str | None = None

    @property
    def arrived(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)

    @property
    def ok(self) -> bool:
        return self.arrived and not self.conflict and all(c.ok for c in self.kos_checks)


@dataclass(frozen=True, slots=True)
class RequestResult:
    request: RetrieveRequest
    method: str
    status: FinalStatus

    def describe(self) -> str:
        count = len(self.request.sop_instance_uids)
        what = f"{count} object{'s' if count != 1 else ''}" if count else "whole series"
        service = f"C-{self.method.upper()}"
        return f"{service} series {self.request.series_uid} ({what}): {self.status.summary()}"


@dataclass
class RetrieveResult:
    objects: list[ObjectResult] = field(default_factory=list)
    requests: list[RequestResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False if any sub-operation failed or any requested object did not arrive intact."""
        return (
            bool(self.objects)
            and all(o.ok for o in self.objects)
            and all(r.status.ok for r in self.requests)
        )
