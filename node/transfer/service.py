"""Outgoing transfers in a running node: queueing, the poll, send rules, restart.

The serving node polls the queue every ``transfers.poll_interval`` and runs each due
transfer as a scheduler job (``dicom-node send`` in another process only queues, or makes
the first attempt itself). Retries are due when the queue's ``next_attempt_at`` passes,
so the backoff survives restarts: nothing about a transfer lives only in the scheduler.
"""

from __future__ import annotations

import logging

from node.config import NodeConfig
from node.jobs.scheduler import Jobs
from node.mpps.reads import step_origin
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
        step = step_origin(self.queue.engine, mpps_uid)
        if step is None or not step.study_uid:
            return
        study_uid, calling_ae = step.study_uid, step.calling_ae
        for rule in rules:
            if rule.from_ae is not None and rule.from_ae != calling_ae:
                continue
            partner = self.config.partner(rule.partner)
            if partner is None:
                continue
            trigger = f"rule:{rule.when.value}:{mpps_uid}"
            if self.queue.queued_by(trigger, partner.name):
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
