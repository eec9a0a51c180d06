"""The transfer queue's state machine and the outbound C-STORE status classes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.app import open_archive
from node.config import NodeConfig, RetryPolicy
from node.scu.store import ACKNOWLEDGED, BUSY, REFUSED, Outgoing, classify, contexts_for
from node.storage.archive import Custody, ReceivedInstance
from node.transfer.queue import (
    FAILED,
    PENDING,
    QUEUED,
    RETRYING,
    SENDING,
    SENT,
    ItemResult,
    TransferQueue,
    backoff,
)
from node.transfer.queue import (
    REFUSED as ITEM_REFUSED,
)
from tests.helpers import STUDY_UID, ct_dataset, dataset_bytes, write_part10


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, ACKNOWLEDGED),
        (0xB000, ACKNOWLEDGED),
        (0xB007, ACKNOWLEDGED),
        (0xA700, BUSY),
        (0xA7FF, BUSY),
        (0x0213, BUSY),
        (0xA900, REFUSED),
        (0xC000, REFUSED),
        (0x0122, REFUSED),
        (0x0124, REFUSED),
    ],
)
def test_classify(status: int, outcome: str) -> None:
    assert classify(status) == outcome


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(initial=30, factor=2, maximum=100, attempts=5)
    assert [backoff(policy, n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


def test_contexts_exact_syntax_plus_one_uncompressed_fallback() -> None:
    items = [
        Outgoing(Path("a"), "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1"),
        Outgoing(Path("b"), "1.2.840.10008.5.1.4.1.1.2", "1.2.4", "1.2.840.10008.1.2.4.70"),
    ]
    contexts = contexts_for(items)
    offered = [(str(c.abstract_syntax), [str(t) for t in c.transfer_syntax]) for c in contexts]
    assert offered == [
        ("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"]),
        ("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.4.70"]),
        ("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]),
    ]


@pytest.fixture
def queue(make_config: Callable[..., NodeConfig], tmp_path: Path, database: str) -> TransferQueue:
    archive = open_archive(make_config(storage={"database": database}))
    for n in range(3):
        ds = ct_dataset(number=n, seed=n)
        path = write_part10(ds, tmp_path / f"{n}.dcm")
        archive.store(
            ReceivedInstance(
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                "1.2.840.10008.1.2.1",
                dataset_bytes(path),
                Custody("CT_1", "127.0.0.1", "test"),
            )
        )
    return TransferQueue(archive.engine)


def test_one_claim_at_a_time_and_nothing_sent_without_an_answer(queue: TransferQueue) -> None:
    transfer_id, count = queue.enqueue(STUDY_UID, "site-b", "command")
    assert count == 3
    assert queue.get(transfer_id).state == QUEUED  # type: ignore[union-attr]
    assert queue.due() == [transfer_id]
    assert queue.claim(transfer_id)
    assert not queue.claim(transfer_id)  # a second worker does not get it
    assert queue.get(transfer_id).state == SENDING  # type: ignore[union-attr]
    assert queue.counts(transfer_id).pending == 3
    assert queue.enqueue("1.2.3.4.404", "site-b", "command") == (0, 0)  # unknown study


def test_two_claimers_at_once_one_wins(queue: TransferQueue) -> None:
    """Two workers claim the same due transfer at the same instant: exactly one gets it
    (the claim is one conditional UPDATE, not a read then a write)."""
    transfer_id, _ = queue.enqueue(STUDY_UID, "site-b", "command")
    for _ in range(5):
        barrier = threading.Barrier(2)

        def claimer(barrier: threading.Barrier) -> bool:
            barrier.wait(timeout=30)
            return queue.claim(transfer_id)

        with ThreadPoolExecutor(2) as pool:
            won = [f.result() for f in [pool.submit(claimer, barrier) for _ in range(2)]]
        assert sorted(won) == [False, True]
        queue.release(transfer_id)  # due again for the next round


def test_retry_later_then_give_up(queue: TransferQueue) -> None:
    transfer_id, _ = queue.enqueue(STUDY_UID, "site-b", "command")
    policy = RetryPolicy(initial=60, factor=2, maximum=600, attempts=2)
    assert queue.claim(transfer_id)
    transfer = queue.get(transfer_id)
    assert transfer is not None
    before = datetime.now(UTC)
    assert queue.retry_later(transfer, "site-b could not be reached", policy) == RETRYING
    waiting = queue.get(transfer_id)
    assert waiting is not None and waiting.attempts == 1
    assert waiting.next_attempt_at >= before + timedelta(seconds=59)
    assert queue.due() == []  # not before its time
    assert queue.due(datetime.now(UTC) + timedelta(seconds=61)) == [transfer_id]
    assert queue.claim(transfer_id)
    assert queue.retry_later(waiting, "still down", policy) == FAILED
    failed = queue.get(transfer_id)
    assert failed is not None and "gave up after 2 attempts" in failed.last_error


def test_answers_are_recorded_per_instance(queue: TransferQueue) -> None:
    transfer_id, _ = queue.enqueue(STUDY_UID, "site-b", "command")
    transfer = queue.get(transfer_id)
    assert transfer is not None
    uids = [u for u, _, _ in queue.items(transfer_id, PENDING)]
    queue.record(
        transfer,
        [
            ItemResult(uids[0], SENT, 0x0000),
            ItemResult(uids[1], ITEM_REFUSED, 0xA900, "refused (status 0xa900)"),
        ],
    )
    counts = queue.counts(transfer_id)
    assert (counts.pending, counts.sent, counts.refused) == (1, 1, 1)
    assert queue.items(transfer_id, ITEM_REFUSED) == [(uids[1], 0xA900, "refused (status 0xa900)")]


def test_interrupted_sending_is_due_again_at_start(queue: TransferQueue) -> None:
    transfer_id, _ = queue.enqueue(STUDY_UID, "site-b", "command")
    assert queue.claim(transfer_id)
    assert queue.resume() == 1
    assert queue.get(transfer_id).state == RETRYING  # type: ignore[union-attr]
    assert queue.due() == [transfer_id]


def test_a_transfer_sent_at_once_is_never_due_for_a_poll(queue: TransferQueue) -> None:
    """``dicom-node send`` holds its transfer from creation: a serving node cannot take it."""
    transfer_id, _ = queue.enqueue(STUDY_UID, "site-b", "command", claimed=True)
    assert queue.get(transfer_id).state == SENDING  # type: ignore[union-attr]
    assert queue.due() == []
    assert not queue.claim(transfer_id)
