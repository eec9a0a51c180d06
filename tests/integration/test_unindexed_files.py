"""Final files without an index row (a writer killed between its file and its row) are
adopted when whole and set aside otherwise, at the start after an unclean stop and when
a new copy of the instance arrives; a file another process still writes is waited for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.app import Node
from node.config import NodeConfig, load_config
from node.net.status import DUPLICATE_CONFLICT_STATUS, StorageStatus
from node.storage import archive as archive_module
from node.storage import audit
from node.storage.database import duplicates, instances
from node.storage.filemeta import file_meta_bytes
from node.storage.files import FileStore, instance_relpath
from tests.conftest import config_dict
from tests.helpers import ct_dataset, sha256
from tests.integration.process import write_config
from tests.integration.scu import association


@pytest.fixture
def index_database(database: str) -> str:
    return database  # every test here runs on SQLite and on PostgreSQL


def encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def left_behind(
    root: Path, *, number: int, source_ae: str = "MODALITY", cut: int = 0, ds: Dataset | None = None
) -> Path:
    """A final file as a writer leaves it when killed before its commit."""
    ds = ds or ct_dataset(number=number, seed=number)
    relpath = instance_relpath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    meta = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, source_ae)
    data = encoded(ds)
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(meta + (data[:-cut] if cut else data))
    return path


def rows(node: Node) -> dict[str, object]:
    with node.archive.engine.connect() as conn:
        return {r.path: r for r in conn.execute(select(instances))}


def events(node: Node, name: str) -> list[audit.AuditRecord]:
    return [r for r in audit.records(node.archive.engine) if r.event == name]


def test_start_after_an_unclean_stop_adopts_whole_files_and_sets_aside_the_rest(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    root = tmp_path / "archive"
    whole = left_behind(root, number=1, source_ae="CT_7")
    truncated = left_behind(root, number=2, cut=100)
    misnamed = left_behind(root, number=3)
    misnamed_to = misnamed.with_name("1.2.3.4.dcm")
    misnamed.rename(misnamed_to)
    truncated_sha, misnamed_sha = sha256(truncated), sha256(misnamed_to)

    node = start_node(make_config())  # no clean-stop marker: the archive is checked

    indexed = rows(node)
    whole_rel = str(whole.relative_to(root))
    assert list(indexed) == [whole_rel]
    assert indexed[whole_rel].sha256 == sha256(whole)  # type: ignore[attr-defined]
    assert indexed[whole_rel].calling_ae == "CT_7"  # type: ignore[attr-defined]
    (adopted,) = events(node, "unindexed-file-adopted")
    assert adopted.details["via"] == "recovery"
    aside = {r.details["path"]: r for r in events(node, "unindexed-file-quarantined")}
    assert set(aside) == {str(truncated.relative_to(root)), str(misnamed_to.relative_to(root))}
    for original, digest in ((truncated, truncated_sha), (misnamed_to, misnamed_sha)):
        assert not original.exists()
        assert sha256(root / ".quarantine" / "unindexed" / f"{digest}.dcm") == digest
    assert "malformed at byte" in aside[str(truncated.relative_to(root))].details["reason"]
    assert audit.verify_chain(node.archive.engine).ok

    # The truncated instance's name is free again: a whole copy now stores normally.
    again = ct_dataset(number=2, seed=2)
    again.SOPInstanceUID = truncated.stem
    with association(node.port) as assoc:
        assert assoc.send_c_store(again).Status == StorageStatus.SUCCESS
    assert str(truncated.relative_to(root)) in rows(node)


def test_after_a_clean_stop_a_new_copy_sets_an_unindexed_file_aside(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    config = make_config()
    start_node(config).stop(grace=2)
    assert (tmp_path / "archive" / ".clean-stop").exists()
    fresh = ct_dataset(number=5, seed=5)
    stale = left_behind(tmp_path / "archive", number=5, source_ae="OLD", cut=10, ds=fresh)
    stale_sha = sha256(stale)
    node = start_node(config)  # clean stop: no archive walk, the file is still there
    assert not (tmp_path / "archive" / ".clean-stop").exists()
    assert stale.exists() and rows(node) == {}
    with association(node.port) as assoc:
        assert assoc.send_c_store(fresh).Status == StorageStatus.SUCCESS
    (row,) = rows(node).values()
    assert sha256(stale) == row.sha256  # type: ignore[attr-defined]
    assert stale.read_bytes().endswith(encoded(fresh))
    assert (tmp_path / "archive" / ".quarantine" / "unindexed" / f"{stale_sha}.dcm").exists()
    assert len(events(node, "unindexed-file-quarantined")) == 1


def test_a_file_another_process_still_writes_is_waited_for(
    tmp_path: Path,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = start_node(make_config())
    monkeypatch.setattr(archive_module, "WRITER_WAIT", 0.3)
    ds = ct_dataset(number=9, seed=9)
    relpath = PurePosixPath(
        instance_relpath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    )
    # Another process's writer: its own FileStore, holding the file before its commit.
    other = FileStore(tmp_path / "archive").write_held(relpath, [b"not yet committed"])
    try:
        with association(node.port) as assoc:
            response = assoc.send_c_store(ds)
            assert response.Status == StorageStatus.FAILURE_OUT_OF_RESOURCES
            assert response.ErrorComment.startswith("another process is still storing")
        assert rows(node) == {}
        other.remove()  # that writer fails: its file goes, and the name is free
    finally:
        other.release()
    with association(node.port) as assoc:
        assert assoc.send_c_store(ds).Status == StorageStatus.SUCCESS
    assert list(rows(node)) == [str(relpath)]


def test_status_counts_what_is_on_disk_and_in_the_index(
    tmp_path: Path, start_node: Callable[..., Node], database: str
) -> None:
    data = config_dict(tmp_path, storage={"database": database})
    config_file = write_config(tmp_path / "node.yaml", data)
    node = start_node(load_config(config_file))
    with association(node.port) as assoc:
        assert assoc.send_c_store(ct_dataset(number=1, seed=1)).Status == StorageStatus.SUCCESS
    node.stop(grace=2)
    root = tmp_path / "archive"
    left_behind(root, number=2)
    (root / ".tmp" / "123-abc.part").write_bytes(b"partial")
    result = subprocess.run(
        [sys.executable, "-m", "node", "status", "-c", str(config_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        "on disk     2 instance files (1 without index row, 0 rows without file), "
        "0 quarantined, 1 temporary"
    ) in result.stdout.splitlines()
    assert "holds       1 patients, 1 studies, 1 series, 1 instances" in result.stdout


def test_a_resend_restores_an_archived_file_that_went_missing(node: Node) -> None:
    ds = ct_dataset(number=4, seed=4)
    with association(node.port) as assoc:
        assert assoc.send_c_store(ds).Status == StorageStatus.SUCCESS
    (row,) = rows(node).values()
    archived = node.archive.files.path(row.path)  # type: ignore[attr-defined]
    archived.unlink()  # lost behind the archive's back (a restore, an operator, a disk)
    with association(node.port) as assoc:
        assert assoc.send_c_store(ds).Status == StorageStatus.SUCCESS
    assert sha256(archived) == row.sha256  # type: ignore[attr-defined]
    (restored,) = events(node, "duplicate-identical")
    assert restored.details["restored_missing_file"] is True
    other = ct_dataset(number=4, seed=40)
    other.SOPInstanceUID = ds.SOPInstanceUID
    archived.unlink()
    with association(node.port) as assoc:  # other bytes never take the row's place
        assert assoc.send_c_store(other).Status == DUPLICATE_CONFLICT_STATUS
    assert not archived.exists()


def test_a_writer_killed_after_a_clean_stop_is_resolved_at_the_next_start(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    config = make_config()
    start_node(config).stop(grace=2)
    assert (tmp_path / "archive" / ".clean-stop").exists()
    # A command beside the stopped node (dicom-node retrieve) killed between file and row:
    # its temporary name still links the final file, its lock died with it.
    ds = ct_dataset(number=6, seed=6)
    relpath = instance_relpath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    meta = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, "CLI")
    held = FileStore(tmp_path / "archive").write_held(relpath, [meta, encoded(ds)])
    fd, held._fd = held._fd, None
    assert fd is not None
    os.close(fd)
    node = start_node(config)
    assert list(rows(node)) == [str(relpath)]
    assert len(events(node, "unindexed-file-adopted")) == 1
    assert list((tmp_path / "archive" / ".tmp").iterdir()) == []


def test_an_unindexed_copy_of_an_instance_archived_elsewhere_is_set_aside_once(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    config = make_config()
    first = start_node(config)
    ds = ct_dataset(number=7, seed=7)
    with association(first.port) as assoc:
        assert assoc.send_c_store(ds).Status == StorageStatus.SUCCESS
    first.stop(grace=2)
    moved = ct_dataset(number=7, seed=7, study_uid="1.2.3.99", series_uid="1.2.3.99.1")
    moved.SOPInstanceUID = ds.SOPInstanceUID
    (tmp_path / "archive" / ".clean-stop").unlink()  # as after a crash
    stray = left_behind(tmp_path / "archive", number=7, ds=moved)
    node = start_node(config)
    assert not stray.exists()
    (aside,) = events(node, "unindexed-file-quarantined")
    assert "its instance is archived as" in aside.details["reason"]
    assert events(node, "unindexed-file-adopted") == []
    with node.archive.engine.connect() as conn:
        assert conn.execute(select(duplicates)).all() == []
    assert len(rows(node)) == 1
