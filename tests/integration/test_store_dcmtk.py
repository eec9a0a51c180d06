"""DCMTK echoscu/storescu against a running node: bytes, index rows and access control."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1
from sqlalchemy import select

from node.app import Node
from node.config import NodeConfig
from node.storage.database import audit_log, instances
from tests.helpers import ct_dataset, dataset_bytes, run, sha256, tool, write_part10

pytestmark = pytest.mark.dcmtk


def storescu(node: Node, *files: Path, aet: str = "STORESCU", aec: str = "DICOM_NODE", options=()):
    return run(
        tool("storescu"), "-v", *options, "-aet", aet, "-aec", aec, "127.0.0.1", node.port, *files
    )


def stored_rows(node: Node) -> dict[str, object]:
    with node.archive.engine.connect() as conn:
        return {r.sop_instance_uid: r for r in conn.execute(select(instances))}


def test_echoscu_succeeds(node: Node) -> None:
    result = run(tool("echoscu"), "-aec", "DICOM_NODE", "127.0.0.1", node.port)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ids=["explicit", "implicit"],
)
def test_storescu_stores_byte_identical(node: Node, tmp_path: Path, syntax) -> None:
    sources = [
        write_part10(ct_dataset(number=i, seed=i), tmp_path / f"in/{i}.dcm", syntax)
        for i in range(3)
    ]
    result = storescu(node, *sources)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 3
    rows = stored_rows(node)
    assert len(rows) == 3
    for source in sources:
        uid = ct_dataset_uid(source)
        row = rows[uid]
        stored = node.archive.files.path(row.path)
        assert dataset_bytes(stored) == dataset_bytes(source)
        assert row.sha256 == sha256(stored)
        assert row.size == stored.stat().st_size
        assert row.transfer_syntax_uid == syntax
        assert row.calling_ae == "STORESCU"
        assert row.peer_address == "127.0.0.1"
        assert len(row.association_id) == 32


def ct_dataset_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_storescu_compressed_file_kept_compressed(node: Node, tmp_path: Path) -> None:
    plain = write_part10(ct_dataset(bits=8), tmp_path / "plain.dcm")
    jpeg = tmp_path / "jpeg.dcm"
    run(tool("dcmcjpeg"), "+e1", plain, jpeg, check=True)
    result = storescu(node, jpeg, options=["-xs"])  # propose JPEG Lossless SV1
    assert result.returncode == 0, result.stderr
    (row,) = stored_rows(node).values()
    assert row.transfer_syntax_uid == JPEGLosslessSV1
    stored = node.archive.files.path(row.path)
    assert dataset_bytes(stored) == dataset_bytes(jpeg)
    # The stored file is readable by DCMTK as the same JPEG object.
    dump = run(tool("dcmdump"), "+P", "0002,0010", stored, check=True)
    assert "JPEGLossless" in dump.stdout


def test_wrong_called_ae_is_rejected(node: Node, tmp_path: Path) -> None:
    source = write_part10(ct_dataset(), tmp_path / "a.dcm")
    result = storescu(node, source, aec="SOMEONE_ELSE")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stderr
    assert stored_rows(node) == {}


def test_unlisted_calling_ae_is_rejected(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path
) -> None:
    node = start_node(make_config(peers=[{"ae_title": "CT_1", "host": "127.0.0.1"}]))
    source = write_part10(ct_dataset(), tmp_path / "a.dcm")
    rejected = storescu(node, source, aet="INTRUDER")
    assert rejected.returncode != 0
    assert "Calling AE Title Not Recognized" in rejected.stderr
    accepted = storescu(node, source, aet="CT_1")
    assert accepted.returncode == 0, accepted.stderr
    assert len(stored_rows(node)) == 1
    with node.archive.engine.connect() as conn:
        events = [r.event for r in conn.execute(select(audit_log).order_by(audit_log.c.seq))]
    assert events[0] == "association-rejected"
    assert "instance-stored" in events


def test_listed_ae_from_another_host_is_rejected(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path
) -> None:
    node = start_node(make_config(peers=[{"ae_title": "CT_1", "host": "192.0.2.7"}]))
    source = write_part10(ct_dataset(), tmp_path / "a.dcm")
    result = storescu(node, source, aet="CT_1")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    assert stored_rows(node) == {}
