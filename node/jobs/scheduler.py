"""A thin wrapper around APScheduler's BackgroundScheduler with explicit job policies.

Jobs are plain, idempotent functions. Each runs with ``coalesce=True`` (a backlog of
the same job runs once), ``max_instances=2`` (a request that arrives while the job runs
is queued behind it rather than dropped, as APScheduler does at the limit) and a
``misfire_grace_time`` of one hour (APScheduler's default of one second would drop a job
whose time passed while the node was busy). Every job logs its failures and never stops
the daemon. Nothing is stored in APScheduler itself: at start the jobs are rebuilt from
the database (see :meth:`node.mpps.acquisition.AcquisitionTracker.resume`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("node.jobs")

MISFIRE_GRACE_SECONDS = 3600


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        started = time.monotonic()
        try:
            func(*args)
        except Exception:
            log.exception("job %s failed", name)
        else:
            log.debug("job %s done in %.3fs", name, time.monotonic() - started)

    return run


class Jobs:
    """Schedule functions now or at a time, keyed so that a job is never duplicated."""

    def __init__(self, workers: int = 2) -> None:
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 2,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            },
            timezone=UTC,
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def soon(self, key: str, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` as soon as a worker is free (once, even if asked twice)."""
        self.at(key, datetime.now(UTC), func, *args)

    def at(self, key: str, when: datetime, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` at ``when`` (at once if it has passed); replaces ``key``."""
        self._scheduler.add_job(
            _guarded(key, func),
            "date",
            run_date=max(when, datetime.now(UTC)),
            args=args,
            id=key,
            replace_existing=True,
        )

    def every(self, key: str, seconds: float, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` every ``seconds`` from now on (a poll); replaces ``key``."""
        self._scheduler.add_job(
            _guarded(key, func),
            "interval",
            seconds=seconds,
            args=args,
            id=key,
            replace_existing=True,
            max_instances=1,  # a slow poll is not stacked behind itself
        )

    def pending(self) -> list[tuple[str, datetime]]:
        return [(job.id, job.next_run_time) for job in self._scheduler.get_jobs()]
