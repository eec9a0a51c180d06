"""Bad input, duplicates, roles and a full disk: each gets its status, nothing partial
is left, and the association and the node keep serving.

Every test runs on both association paths (``node.fast_path: true`` and ``false``,
the ``fast_path`` fixture), and checks that its associations went to that path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.app import Node
from node.config import NodeConfig
from node.net.status import DUPLICATE_CONFLICT_STATUS, StorageStatus, VerificationStatus
from node.storage import audit
from node.storage.database import duplicates, instances
from node.storage.files import FileStore
from tests.helpers import ct_dataset, sha256, write_part10
from tests.integration.scu import association, store_status


def archive_files(node: Node) -> list[Path]:
    """Files that count as archived instances (not temporary, not quarantined)."""
    root = node.archive.files.root
    return [p for p in root.rglob("*.dcm") if not p.relative_to(root).parts[0].startswith(".")]


def temp_files(node: Node) -> list[Path]:
    return list((node.archive.files.root / ".tmp").iterdir())


def instance_count(node: Node) -> int:
    with node.archive.engine.connect() as conn:
        return len(conn.execute(select(instances)).all())


def served_by(node: Node, fast_path: bool) -> None:
    """The test's associations went to the path it is for (see ``FastStoragePath.takes``)."""
    if fast_path:
        assert node.fast_path is not None and node.fast_path.served > 0
    else:
        assert node.fast_path is None


@pytest.fixture
def node(node_any_path: Node, fast_path: bool) -> Iterator[Node]:
    """This module's node runs on each association path in turn."""
    yield node_any_path
    served_by(node_any_path, fast_path)


@pytest.fixture
def start_on_path(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], fast_path: bool
) -> Iterator[Callable[..., Node]]:
    """Start a node with extra configuration on the test's association path."""
    started: list[Node] = []

    def start(files: type[FileStore] | None = None, **sections: Any) -> Node:
        node_section = {**sections.pop("node", {}), "fast_path": fast_path}
        config = make_config(node=node_section, **sections)
        store = files(config.storage.archive) if files is not None else None
        started.append(start_node(config, files=store))
        return started[-1]

    yield start
    for node in started:
        served_by(node, fast_path)


def test_malformed_dataset_fails_and_association_continues(node: Node, tmp_path: Path) -> None:
    good = write_part10(ct_dataset(), tmp_path / "good.dcm")
    broken = tmp_path / "broken.dcm"
    data = good.read_bytes()
    # Keep the file meta, then a truncated element: a length running past the end.
    meta_end = data.index(b"\x08\x00\x05\x00")  # first data set element
    broken.write_bytes(data[:meta_end] + b"\x08\x00\x16\x00UI\xff\x00" + b"1.2")
    with association(node.port) as assoc:
        assert store_status(assoc, broken) == StorageStatus.FAILURE_CANNOT_UNDERSTAND
        assert store_status(assoc, good) == StorageStatus.SUCCESS
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert instance_count(node) == 1
    assert len(archive_files(node)) == 1
    assert temp_files(node) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_invalid_uid_is_refused_and_never_a_path(node: Node) -> None:
    ds = ct_dataset(SeriesInstanceUID="../../etc/passwd")
    with association(node.port) as assoc:
        assert store_status(assoc, ds) == StorageStatus.FAILURE_CANNOT_UNDERSTAND
    assert archive_files(node) == []
    assert not any("passwd" in str(p) for p in node.archive.files.root.rglob("*"))


def test_request_and_dataset_uid_mismatch(node: Node, tmp_path: Path) -> None:
    ds = ct_dataset()
    path = write_part10(ds, tmp_path / "a.dcm")
    # Rewrite only the file meta's instance UID: the request then differs from the data set.
    other = ds.SOPInstanceUID[:-1] + ("1" if ds.SOPInstanceUID[-1] != "1" else "2")
    path.write_bytes(path.read_bytes().replace(ds.SOPInstanceUID.encode(), other.encode(), 1))
    with association(node.port) as assoc:
        assert store_status(assoc, path) == StorageStatus.FAILURE_DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert archive_files(node) == []


def test_identical_duplicate_is_idempotent(node: Node) -> None:
    ds = ct_dataset()
    with association(node.port) as assoc:
        assert store_status(assoc, ds) == StorageStatus.SUCCESS
        assert store_status(assoc, ds) == StorageStatus.SUCCESS
    assert instance_count(node) == 1
    events = [r.event for r in audit.records(node.archive.engine)]
    assert events.count("instance-stored") == 1
    assert events.count("duplicate-identical") == 1


def test_conflicting_duplicate_keeps_first_and_sets_second_aside(node: Node) -> None:
    first = ct_dataset(seed=1)
    second = ct_dataset(seed=2)
    second.SOPInstanceUID = first.SOPInstanceUID
    with association(node.port) as assoc:
        assert store_status(assoc, first) == StorageStatus.SUCCESS
        (stored,) = archive_files(node)
        before = sha256(stored)
        assert store_status(assoc, second) == DUPLICATE_CONFLICT_STATUS
    assert sha256(stored) == before
    with node.archive.engine.connect() as conn:
        (dup,) = conn.execute(select(duplicates)).all()
        (row,) = conn.execute(select(instances)).all()
    kept_aside = node.archive.files.path(dup.path)
    assert kept_aside.is_file()
    assert sha256(kept_aside) == dup.sha256 != row.sha256
    assert dup.sha256 in dup.path
    assert "duplicate-conflict" in [r.event for r in audit.records(node.archive.engine)]


def test_peer_without_store_role_is_refused(start_on_path: Callable[..., Node]) -> None:
    node = start_on_path(peers=[{"ae_title": "QUERIER", "host": "127.0.0.1", "roles": ["query"]}])
    with association(node.port, aet="QUERIER") as assoc:
        ds = ct_dataset()
        assert store_status(assoc, ds) == StorageStatus.FAILURE_REFUSED_NOT_AUTHORIZED
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert instance_count(node) == 0
    # The refusal is custody too: who tried to store what, and the answer.
    failed = [r for r in audit.records(node.archive.engine) if r.event == "store-failed"]
    assert [(r.sop_instance_uid, r.details["status"]) for r in failed] == [
        (ds.SOPInstanceUID, "FAILURE_REFUSED_NOT_AUTHORIZED")
    ]


class FullDisk(FileStore):
    """A storage layer whose writes fail as on a full filesystem."""

    def _write_all(self, fd: int, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        os.write(fd, data[: len(data) // 2])  # a partial write first, as a real disk would
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_answers_out_of_resources_without_residue(
    start_on_path: Callable[..., Node],
) -> None:
    node = start_on_path(files=FullDisk)
    with association(node.port) as assoc:
        assert store_status(assoc, ct_dataset()) == StorageStatus.FAILURE_OUT_OF_RESOURCES
        assert store_status(assoc, ct_dataset()) == StorageStatus.FAILURE_OUT_OF_RESOURCES
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert archive_files(node) == []
    assert temp_files(node) == []
    assert instance_count(node) == 0
    assert [r.event for r in audit.records(node.archive.engine)].count("store-failed") == 2


def test_implicit_vr_store_through_pynetdicom(node: Node, tmp_path: Path) -> None:
    ds = ct_dataset()
    path = write_part10(ds, tmp_path / "e.dcm", ExplicitVRLittleEndian)
    with association(node.port) as assoc:
        assert store_status(assoc, path) == StorageStatus.SUCCESS
    assert instance_count(node) == 1
