"""One SOP Instance UID from several senders at once: exactly one writer owns the
archived file, its bytes are the acknowledged sender's, and a second identical data set
is a duplicate whoever sends it; concurrent associations keep one unbroken audit chain.
On both association paths, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from sqlalchemy import select

from node.app import Node
from node.config import NodeConfig
from node.net.status import DUPLICATE_CONFLICT_STATUS, StorageStatus
from node.storage import audit
from node.storage.database import duplicates, instances
from tests.helpers import ct_dataset, dataset_bytes, sha256
from tests.integration.scu import association

PAIRS = 12


@pytest.fixture
def index_database(database: str) -> str:
    return database  # every test here runs on SQLite and on PostgreSQL


@pytest.fixture(params=[True, False], ids=["fast-path", "pynetdicom-path"])
def any_node(
    request: pytest.FixtureRequest,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
) -> Node:
    return start_node(make_config(node={"fast_path": request.param}))


def encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def racing_pair(number: int) -> tuple[Dataset, Dataset]:
    first = ct_dataset(seed=2 * number, number=number)
    second = ct_dataset(seed=2 * number + 1, number=number)
    second.SOPInstanceUID = first.SOPInstanceUID
    return first, second


def test_concurrent_stores_of_one_uid_keep_the_acknowledged_bytes(any_node: Node) -> None:
    node = any_node
    pairs = [racing_pair(n) for n in range(1, PAIRS + 1)]
    barrier = threading.Barrier(2)
    statuses: dict[str, list[int]] = {"SENDER_A": [], "SENDER_B": []}

    def sender(aet: str, which: int) -> None:
        with association(node.port, aet=aet) as assoc:
            for pair in pairs:
                barrier.wait(timeout=30)  # both C-STOREs leave at the same instant
                statuses[aet].append(int(assoc.send_c_store(pair[which]).Status))

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(sender, "SENDER_A", 0), pool.submit(sender, "SENDER_B", 1)]:
            future.result()

    with node.archive.engine.connect() as conn:
        rows = {r.sop_instance_uid: r for r in conn.execute(select(instances))}
        aside = {r.sop_instance_uid: r for r in conn.execute(select(duplicates))}
    assert len(rows) == len(aside) == PAIRS
    for n, (first, second) in enumerate(pairs):
        got = (statuses["SENDER_A"][n], statuses["SENDER_B"][n])
        assert sorted(got) == sorted((StorageStatus.SUCCESS, DUPLICATE_CONFLICT_STATUS)), got
        winner, loser = (first, second) if got[0] == StorageStatus.SUCCESS else (second, first)
        row = rows[first.SOPInstanceUID]
        archived = node.archive.files.path(row.path)
        # The index, the file and the acknowledgement all name the same sender's bytes.
        assert sha256(archived) == row.sha256
        assert dataset_bytes(archived) == encoded(winner)
        assert row.calling_ae == ("SENDER_A" if winner is first else "SENDER_B")
        kept_aside = node.archive.files.path(aside[first.SOPInstanceUID].path)
        assert dataset_bytes(kept_aside) == encoded(loser)
    assert audit.verify_chain(node.archive.engine).ok


def test_identical_data_set_from_a_second_calling_ae_is_a_duplicate(any_node: Node) -> None:
    node = any_node
    ds = ct_dataset()
    for aet in ("MODALITY_1", "PACS_2"):
        with association(node.port, aet=aet) as assoc:
            response = assoc.send_c_store(ds)
            assert response.Status == StorageStatus.SUCCESS
            assert "ErrorComment" not in response
    with node.archive.engine.connect() as conn:
        (row,) = conn.execute(select(instances)).all()
        assert conn.execute(select(duplicates)).all() == []
    assert row.calling_ae == "MODALITY_1"
    assert list((node.archive.files.root / ".quarantine").rglob("*.dcm")) == []
    (second,) = [r for r in audit.records(node.archive.engine) if r.event == "duplicate-identical"]
    assert second.details["calling_ae"] == "PACS_2"
    assert second.sop_instance_uid == ds.SOPInstanceUID


def test_concurrent_identical_stores_from_two_senders_are_both_acknowledged(
    any_node: Node,
) -> None:
    node = any_node
    items = [ct_dataset(number=n, seed=n) for n in range(1, PAIRS + 1)]
    barrier = threading.Barrier(2)

    def sender(aet: str) -> list[int]:
        got = []
        with association(node.port, aet=aet) as assoc:
            for ds in items:
                barrier.wait(timeout=30)
                got.append(int(assoc.send_c_store(ds).Status))
        return got

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(sender, a) for a in ("SITE_A", "SITE_B")]]
    assert results == [[StorageStatus.SUCCESS] * PAIRS] * 2
    with node.archive.engine.connect() as conn:
        rows = conn.execute(select(instances)).all()
        assert conn.execute(select(duplicates)).all() == []
    assert len(rows) == PAIRS
    for row in rows:
        assert sha256(node.archive.files.path(row.path)) == row.sha256
    events = [r.event for r in audit.records(node.archive.engine)]
    assert events.count("duplicate-identical") == PAIRS


def test_concurrent_associations_extend_one_unbroken_audit_chain(any_node: Node) -> None:
    """Four associations store at once: every record takes the next sequence number after
    the one before it (no two appends read the same head), and no store fails for it."""
    node, senders, each = any_node, 4, 8
    barrier = threading.Barrier(senders)
    head = audit.head_seq(node.archive.engine)

    def sender(k: int) -> list[int]:
        items = [ct_dataset(number=n, seed=100 * k + n) for n in range(1, each + 1)]
        with association(node.port, aet=f"SITE_{k}") as assoc:
            got = []
            for ds in items:
                barrier.wait(timeout=30)
                got.append(int(assoc.send_c_store(ds).Status))
        return got

    with ThreadPoolExecutor(senders) as pool:
        results = [f.result() for f in [pool.submit(sender, k) for k in range(senders)]]
    assert results == [[StorageStatus.SUCCESS] * each] * senders
    stored = [r for r in audit.records(node.archive.engine) if r.event == "instance-stored"]
    assert len(stored) == senders * each
    report = audit.verify_chain(node.archive.engine)
    assert report.ok, report
    assert audit.head_seq(node.archive.engine) == report.count > head
