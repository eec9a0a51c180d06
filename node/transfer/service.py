"""Outgoing transfers in a running node: queueing, the poll, send rules, restart.

The serving node polls the queue every ``transfers.poll_interval`` and runs each due
transfer as a scheduler job (``dicom-node send`` in another process only queues, or makes
the first attempt itself). Retries are due when the queue's ``next_attempt_at`` passes,
so the backoff survives restarts: nothing about a transfer lives only in the scheduler.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from node.config import NodeConfig
from node.jobs.scheduler import Jobs
from node.storage.database import mpps, transfers
from node.transfer.queue import TransferQueue
from node.transfer.sender import TransferSender

log = logging.getLogger("node.transfer")


class TransferService:
    def __init__(
        self, config: NodeConfig, queue: TransferQueue, sender: TransferSender, jobs: Jobs
    ) -> None:
        self.config = config
        self.queue = queue
        self.sender = sender
        self.jobs = jobs

    def start(self) -> None:
        resumed = self.queue.resume()
        if resumed:
            log.info("%d transfers interrupted by a stop are due again", resumed)
        self.jobs.every("transfers:poll", self.config.transfers.poll_interval, self.poll)
        self.poll()

    def poll(self) -> None:
        """Start a job for every due transfer (a job per transfer, claimed in the queue)."""
        for transfer_id in self.queue.due():
            self.jobs.soon(f"transfer:{transfer_id}", self.sender.run, transfer_id)

    def on_kos_built(self, mpps_uid: str, kos_uid: str) -> None:
        """Send rules ``when: acquisition-kos``: queue the study for each matching partner."""
        rules = self.config.transfers.rules  # acquisition-kos is the only trigger so far
        if not rules:
            return
        with self.queue.engine.connect() as conn:
            row = conn.execute(
                select(mpps.c.study_uid, mpps.c.calling_ae).where(mpps.c.mpps_uid == mpps_uid)
            ).first()
        if row is None or not row[0]:
            return
        study_uid, calling_ae = str(row[0]), str(row[1])
        for rule in rules:
            if rule.from_ae is not None and rule.from_ae != calling_ae:
                continue
            partner = self.config.partner(rule.partner)
            if partner is None:
                continue
            trigger = f"rule:{rule.when.value}:{mpps_uid}"
            if self._already_queued(trigger, partner.name):
                continue
            transfer_id, count = self.queue.enqueue(study_uid, partner.name, trigger)
            log.info(
                "KOS %s built: transfer %d of study %s (%d instances) to %s queued by rule",
                kos_uid,
                transfer_id,
                study_uid,
                count,
                partner.name,
            )
            if transfer_id:
                self.jobs.soon(f"transfer:{transfer_id}", self.sender.run, transfer_id)

    def _already_queued(self, trigger: str, partner: str) -> bool:
        with self.queue.engine.connect() as conn:
            return (
                conn.execute(
                    select(transfers.c.transfer_id)
                    .where(transfers.c.trigger == trigger)
                    .where(transfers.c.partner == partner)
                ).first()
                is not None
            )
