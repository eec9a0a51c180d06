"""Glue between events (a stored instance, a COMPLETED step) and the acquisition wait.

Checks run in the scheduler, never on an association thread, so a C-STORE or N-SET
answer is not delayed by MAC computation. The timeout of each wait is a scheduler job
at its deadline; all jobs are rebuilt from the database at start.
"""

from __future__ import annotations

import logging

from node.jobs.scheduler import Jobs
from node.mpps.acquisition import AcquisitionTracker
from node.storage.archive import StoreOutcome, StoreResult

log = logging.getLogger("node.acquisition")


class AcquisitionWorkflow:
    def __init__(self, tracker: AcquisitionTracker, jobs: Jobs) -> None:
        self.tracker = tracker
        self.jobs = jobs

    def schedule(self, mpps_uid: str) -> None:
        """Check now, and expire at the deadline."""
        acq = self.tracker.get(mpps_uid)
        if acq is None:
            return
        self.jobs.soon(f"check:{mpps_uid}", self.tracker.check, mpps_uid)
        self.jobs.at(f"expire:{mpps_uid}", acq.deadline, self.tracker.expire, mpps_uid)

    def on_completed(self, mpps_uid: str) -> None:
        self.schedule(mpps_uid)

    def on_stored(self, outcome: StoreOutcome) -> None:
        """A new instance: check the waits that list it; note late arrivals."""
        if outcome.result is not StoreResult.STORED:
            return
        uid = outcome.header.sop_instance_uid
        waiting, decided = self.tracker.waits_for(uid, outcome.header.series_uid)
        for mpps_uid in waiting:
            self.jobs.soon(f"check:{mpps_uid}", self.tracker.check, mpps_uid)
        for mpps_uid in decided:
            log.warning("instance %s arrived after MPPS %s was decided", uid, mpps_uid)
            self.tracker.record_late_arrival(mpps_uid, uid, outcome.header.study_uid)

    def resume(self) -> int:
        """Rebuild the jobs of every open wait from the database; return how many."""
        waits = self.tracker.resume()
        for acq in waits:
            self.schedule(acq.mpps_uid)
        return len(waits)
