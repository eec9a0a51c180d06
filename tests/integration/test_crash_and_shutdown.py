"""A node killed with SIGKILL mid-send loses nothing it acknowledged; SIGTERM drains."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from node.config import parse_config
from node.schema import open_database
from node.storage import audit, index
from tests.conftest import config_dict
from tests.helpers import ct_dataset, sha256
from tests.integration.process import NodeProcess, write_config
from tests.integration.test_tls_availability import (
    PARTIAL_CLIENT_HELLO,
    client_context,
    tls_echo,
    tls_section,
)
from tests.pki import issue, make_ca


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom-path"])
def test_kill_9_during_large_send_loses_nothing_acknowledged(
    tmp_path: Path, fast_path: bool, database: str
) -> None:
    data = config_dict(tmp_path, node={"fast_path": fast_path}, storage={"database": database})
    config_file = write_config(tmp_path / "node.yaml", data)
    node = NodeProcess(config_file)
    acknowledged: list[str] = []
    enough = threading.Event()
    datasets = [ct_dataset(size=256, number=i, seed=i) for i in range(400)]

    def send() -> None:
        ae = AE(ae_title="CRASH_SCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
        assert assoc.is_established
        for ds in datasets:
            response = assoc.send_c_store(ds)
            if not assoc.is_established or "Status" not in response:
                break
            if response.Status == 0:
                acknowledged.append(str(ds.SOPInstanceUID))
            if len(acknowledged) >= 60:
                enough.set()
        enough.set()
        if assoc.is_established:
            assoc.abort()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert enough.wait(120), "the sender made no progress"
    node.kill()  # SIGKILL: no chance to clean up
    sender.join(60)
    assert 60 <= len(acknowledged) < len(datasets), "the kill did not land mid-send"

    restarted = NodeProcess(config_file)  # a restart also clears temporary files
    try:
        config = parse_config(data, tmp_path)
        engine = open_database(config.storage.database)
        study = index.study_instances(engine, datasets[0].StudyInstanceUID)
        by_uid = {row.sop_instance_uid: row for row in study}
        for uid in acknowledged:
            row = by_uid[uid]
            assert sha256(config.storage.archive / row.path) == row.sha256
        # Every indexed row has its file, and every archived file is indexed.
        root = config.storage.archive
        on_disk = {
            p.relative_to(root).as_posix()
            for p in root.rglob("*.dcm")
            if not p.relative_to(root).parts[0].startswith(".")
        }
        assert on_disk == {row.path for row in study}
        assert list((root / ".tmp").iterdir()) == []
        assert audit.verify_chain(engine).ok
        engine.dispose()
    finally:
        assert restarted.terminate() == 0


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    node = NodeProcess(write_config(tmp_path / "node.yaml", config_dict(tmp_path)))
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    assert assoc.send_c_store(ct_dataset()).Status == 0
    assoc.release()
    assert node.terminate() == 0
    assert any("stopped" in line for line in node.stderr_lines)
    assert not any("Traceback" in line for line in node.stderr_lines)
    # First start with create_if_missing: a development key, mode 0600, and a loud warning.
    key = tmp_path / "keys/signer.key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert any("DEVELOPMENT signing key" in line for line in node.stderr_lines)


@pytest.mark.parametrize("first", [b"", PARTIAL_CLIENT_HELLO], ids=["idle", "partial-hello"])
def test_sigterm_with_a_stalled_tls_connection_stops_within_shutdown_grace(
    tmp_path: Path, first: bytes
) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path / "pki")
    pki = {
        "ca": ca,
        "server": issue(tmp_path / "pki", "server", ca_key, ca_cert),
        "client": issue(tmp_path / "pki", "client", ca_key, ca_cert),
    }
    grace = 3
    data = config_dict(
        tmp_path, tls=tls_section(pki), node={"shutdown_grace": f"{grace}s", "acse_timeout": "5m"}
    )
    node = NodeProcess(write_config(tmp_path / "node.yaml", data))
    stalled = socket.create_connection(("127.0.0.1", node.port))
    try:
        stalled.sendall(first)
        # Served after the stalled connection was accepted (the backlog is in order).
        assert tls_echo(node.port, client_context(pki))
        try:
            code = node.terminate(timeout=grace + 5)  # interpreter exit included
        except subprocess.TimeoutExpired:
            node.kill()
            raise AssertionError("SIGTERM did not stop the node within shutdown_grace") from None
        assert code == 0
        assert not any("Traceback" in line for line in node.stderr_lines)
    finally:
        stalled.close()
