"""Custody records that must never cost a peer its association.

The association-accepted and association-rejected records, and the refusals of
connections that never became associations, are bookkeeping: when the database cannot
be written (disk full, read-only, locked for too long) the node must still answer
C-ECHO and refuse C-STORE with Out of Resources (PS3.4 Annex B, 0xA700) rather than
fail the association. So such a record that cannot be written is kept *pending* in
memory, in order, with the time it happened, and appended before the next record as
soon as the database takes writes again. The list is bounded: past
:data:`PENDING_LIMIT` records, further ones are only counted, and the count, the time
span and the event names are appended as one ``audit-gap`` record, so the log states
what it is missing instead of hiding it. Records still pending when the node stops are
named in one log line (they are lost with the process).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from node.storage import audit
from node.storage.archive import Archive
from node.storage.audit import AuditEvent, Entry

log = logging.getLogger("node.audit")

# Enough for several hours of refused connections at a realistic rate, and small in
# memory (a record is a few hundred bytes).
PENDING_LIMIT = 1000


@dataclass
class _Gap:
    """Records not kept in memory while the database could not be written."""

    count: int = 0
    first_at: str | None = None
    last_at: str | None = None
    events: Counter[str] | None = None

    def add(self, event: str, when: str) -> None:
        self.count += 1
        self.first_at = self.first_at or when
        self.last_at = when
        self.events = self.events or Counter()
        self.events[event] += 1

    def entry(self) -> Entry:
        return Entry(
            AuditEvent.AUDIT_GAP,
            details={
                "lost": self.count,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "events": dict(sorted((self.events or Counter()).items())),
                "reason": "the database could not be written; pending records were full",
            },
        )


class CustodyRecorder:
    """Appends custody events; keeps them pending while the database refuses writes."""

    def __init__(self, archive: Archive, limit: int = PENDING_LIMIT) -> None:
        self.archive = archive
        self.limit = limit
        self._pending: list[Entry] = []
        self._gap = _Gap()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + self._gap.count

    def record(self, event: str, **fields: Any) -> bool:
        """Append ``event`` (after any pending records); False when it had to wait.

        Never raises for a database error: one warning line says what waits.
        """
        study_uid = fields.pop("study_uid", None)
        sop_uid = fields.pop("sop_instance_uid", None)
        entry = Entry(event, study_uid, sop_uid, fields)
        with self._lock:
            if self._write([entry]):
                return True
            when = audit.utc_now()
            late = Entry(event, study_uid, sop_uid, {**fields, "occurred_at": when, "late": True})
            first = not self._pending
            if len(self._pending) < self.limit:
                self._pending.append(late)
            elif not self._gap.count:
                first = True
                self._gap.add(event, when)
            else:
                self._gap.add(event, when)
        # One line when records start to wait, and one when the memory for them is full:
        # the failures themselves are logged by whoever met them.
        if first and not self._gap.count:
            log.warning("audit log not writable (%s): records wait in memory", self._error)
        elif first:
            log.error("%d audit records wait; further ones are only counted", self.limit)
        return False

    def flush(self) -> bool:
        """Append what is pending, if anything; True when nothing is left waiting."""
        with self._lock:
            return self._write([])

    def abandon(self) -> None:
        """At stop: name in one line what could not be written (it is lost with us)."""
        if not self.flush():
            log.error(
                "%d audit records could not be written before stopping (database unwritable)",
                self.pending,
            )

    # Holding the lock: pending records first, in order, then the gap, then ``entries``.
    _error: str = ""

    def _write(self, entries: list[Entry]) -> bool:
        batch = list(self._pending)
        if self._gap.count:
            batch.append(self._gap.entry())
        batch += entries
        if not batch:
            return True
        try:
            with self.archive.engine.begin() as conn:
                audit.append_many(conn, batch)
        except Exception as exc:  # any database failure: the caller's service goes on
            self._error = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            return False
        if self._pending or self._gap.count:
            late = len(batch) - len(entries)
            log.info("audit log writable again: %d pending records appended", late)
        self._pending.clear()
        self._gap = _Gap()
        return True
