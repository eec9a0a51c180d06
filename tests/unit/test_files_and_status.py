"""File layer and status table."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from pynetdicom.status import code_to_category

from node.errors import InvalidRequest
from node.services.status import Status
from node.storage.files import FileStore, instance_relpath
from node.storage.uids import is_valid_uid


def test_status_names_match_their_category() -> None:
    for status in Status:
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
    assert FileStore(tmp_path).prepare() == 1
    assert list((tmp_path / ".tmp").iterdir()) == []
