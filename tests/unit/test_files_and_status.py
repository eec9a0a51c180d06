"""File layer and status table."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from pynetdicom.status import code_to_category

from node.errors import InvalidRequest
from node.net.status import MppsStatus, QueryRetrieveStatus, StorageStatus, VerificationStatus
from node.storage.files import FileStore, instance_relpath
from node.storage.uids import is_valid_uid


def test_status_names_match_their_category() -> None:
    for enum in (VerificationStatus, StorageStatus, MppsStatus, QueryRetrieveStatus):
        for status in enum:
            category = code_to_category(int(status)).upper()
            assert status.name.startswith(category), (status.name, category)


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0.1", True),
        ("1.02", False),
        ("1..2", False),
        ("1.2.", False),
        ("../etc", False),
        ("1.2/3", False),
        ("1." + "2" * 63, False),
        ("", False),
    ],
)
def test_uid_syntax(uid: str, valid: bool) -> None:
    assert is_valid_uid(uid) is valid


def test_paths_come_only_from_valid_uids() -> None:
    assert instance_relpath("1.2", "1.2.3", "1.2.3.4") == PurePosixPath("1.2/1.2.3/1.2.3.4.dcm")
    with pytest.raises(InvalidRequest):
        instance_relpath("1.2", "..", "1.2.3.4")


def test_write_new_never_overwrites(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.prepare()
    rel = PurePosixPath("a/b.dcm")
    store.write_new(rel, [b"first"])
    with pytest.raises(FileExistsError):
        store.write_new(rel, [b"second"])
    assert store.path(rel).read_bytes() == b"first"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_prepare_removes_crash_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "123-abc.part").write_bytes(b"half")
    assert FileStore(tmp_path).prepare().removed == 1
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_prepare_leaves_a_live_writer_alone_and_counts_dead_ones_with_a_final_name(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path)
    store.prepare()
    live = store.write_held(PurePosixPath("s/1.dcm"), [b"being committed"])
    dead = store.write_held(PurePosixPath("s/2.dcm"), [b"writer died before its commit"])
    live_inode = store.path("s/1.dcm").stat().st_ino
    (dead_temporary,) = [p for p in (tmp_path / ".tmp").iterdir() if p.stat().st_ino != live_inode]
    # A crash drops the lock but not the names: what a killed writer leaves.
    fd, dead._fd = dead._fd, None
    assert fd is not None
    os.close(fd)
    leftovers = FileStore(tmp_path).prepare()
    assert (leftovers.removed, leftovers.linked) == (1, 1)
    assert not dead_temporary.exists()
    assert store.path("s/2.dcm").read_bytes() == b"writer died before its commit"
    assert len(list((tmp_path / ".tmp").iterdir())) == 1  # the live writer's
    live.release()
    assert list((tmp_path / ".tmp").iterdir()) == []
