"""PS3.17 Annex W case 1 end to end: MPPS over DICOM, images by DCMTK storescu, and the
signed KOS checked by dciodvfy, dcmsign and our own verifier."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, generate_uid

from node.app import Node
from node.config import NodeConfig
from node.documents.acquisition_kos import derived_uid
from node.mpps.acquisition import INCOMPLETE, KOS_BUILT
from node.storage import audit
from node.storage.index import study_instances
from tests.helpers import STUDY_UID, ct_dataset, run, tool, write_part10
from tests.integration.mpps_scu import MppsClient, create_attributes, final_attributes

pytestmark = pytest.mark.dcmtk


def text_sr(series_uid: str) -> Dataset:
    """A non-image composite instance (Basic Text SR) of the same study."""
    ds = Dataset()
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "SR"
    ds.PatientID = "PID-1"
    ds.PatientName = "Doe^Jane"
    ds.ValueType = "CONTAINER"
    return ds


def acquisition(series_count: int = 2, per_series: int = 2) -> dict[str, list[Dataset]]:
    series: dict[str, list[Dataset]] = {}
    for s in range(series_count):
        uid = f"{STUDY_UID}.{s + 10}"
        series[uid] = [
            ct_dataset(series_uid=uid, number=i, seed=s * 10 + i) for i in range(per_series)
        ]
    series[f"{STUDY_UID}.99"] = [text_sr(f"{STUDY_UID}.99")]
    return series


def send(node: Node, folder: Path, datasets: list[Dataset]) -> None:
    files = [write_part10(ds, folder / f"{ds.SOPInstanceUID}.dcm") for ds in datasets]
    result = run(
        tool("storescu"), "-aet", "CT_1", "-aec", "DICOM_NODE", "127.0.0.1", node.port, *files
    )
    assert result.returncode == 0, result.stderr


def write_config(path: Path, node: Node) -> Path:
    """A configuration file for CLI commands on this node's archive and index."""
    storage = node.config.storage
    database = storage.database.removeprefix("sqlite:///")
    path.write_text(f"storage: {{archive: '{storage.archive}', database: '{database}'}}\n")
    return path


def wait_state(node: Node, mpps_uid: str, states: set[str], timeout: float = 60) -> str:
    """Wait for the acquisition to reach a state (a bounded wait on the node's database)."""
    ready = threading.Event()
    state = ""
    for _ in range(int(timeout / 0.05)):
        acq = node.workflow.tracker.get(mpps_uid)
        state = acq.state if acq else ""
        if state in states:
            return state
        ready.wait(0.05)
    raise AssertionError(f"acquisition {mpps_uid} stayed {state!r}")


def start_procedure(node: Node) -> tuple[MppsClient, str]:
    client = MppsClient(node.port)
    status, uid = client.create(create_attributes())
    assert status.Status == 0
    return client, uid


def kos_path(node: Node, mpps_uid: str) -> Path:
    kos_uid = derived_uid("kos", mpps_uid)
    (row,) = [
        r for r in study_instances(node.archive.engine, STUDY_UID) if r.sop_instance_uid == kos_uid
    ]
    return node.archive.files.path(row.path)


def check_kos(node: Node, mpps_uid: str, series: dict[str, list[Dataset]], tmp_path: Path) -> Path:
    path = kos_path(node, mpps_uid)
    kos = dcmread(path)
    assert kos.Modality == "KO"
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113035"
    listed = {ds.SOPInstanceUID for group in series.values() for ds in group}
    referenced = {
        sop.ReferencedSOPInstanceUID
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
        for sop in s.ReferencedSOPSequence
    }
    assert referenced == listed
    for study in kos.CurrentRequestedProcedureEvidenceSequence:
        for s in study.ReferencedSeriesSequence:
            assert s.RetrieveAETitle == "DICOM_NODE"
            for sop in s.ReferencedSOPSequence:
                assert sop.ReferencedSOPInstanceMACSequence[0].MACAlgorithm == "SHA256"
    assert kos.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == mpps_uid
    purpose = kos.DigitalSignaturesSequence[0].DigitalSignaturePurposeCodeSequence[0]
    assert purpose.CodeValue == "14"
    cert = node.config.signing.certificate
    dcmsign = run(tool("dcmsign"), "--verify", "+rs", "+cf", cert, path)
    assert dcmsign.returncode == 0, dcmsign.stdout + dcmsign.stderr
    dciodvfy = run(tool("dciodvfy"), path)
    errors = [line for line in dciodvfy.stderr.splitlines() if line.startswith("Error")]
    assert errors == [], dciodvfy.stderr
    refs = run(
        sys.executable,
        "-m", "node", "verify", path, "--trust", cert, "--refs", node.archive.files.root,
    )  # fmt: skip
    assert refs.returncode == 0, refs.stdout + refs.stderr
    assert Path(f"{path}.sig").is_file()
    return path


def test_completed_after_images(node: Node, tmp_path: Path) -> None:
    series = acquisition()
    client, uid = start_procedure(node)
    send(node, tmp_path, [ds for group in series.values() for ds in group])
    assert client.set(uid, final_attributes(series)).Status == 0
    client.close()
    assert wait_state(node, uid, {KOS_BUILT, "failed"}) == KOS_BUILT
    check_kos(node, uid, series, tmp_path)


def test_completed_before_images_and_one_kos_only(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path, database: str
) -> None:
    """On SQLite and on PostgreSQL: the KOS is built once, whichever arrives last."""
    node = start_node(make_config(storage={"database": database}))
    series = acquisition()
    everything = [ds for group in series.values() for ds in group]
    client, uid = start_procedure(node)
    assert client.set(uid, final_attributes(series)).Status == 0
    send(node, tmp_path / "a", everything[:2])
    assert node.workflow.tracker.get(uid).state == "waiting"
    send(node, tmp_path / "b", everything[2:])
    assert wait_state(node, uid, {KOS_BUILT, "failed"}) == KOS_BUILT
    client.close()
    check_kos(node, uid, series, tmp_path)
    # Checking again never yields a second KOS; a late instance is recorded.
    assert node.workflow.tracker.check(uid) == KOS_BUILT
    late = ct_dataset(series_uid=next(iter(series)), number=50, seed=50)
    send(node, tmp_path / "late", [late])
    assert node.store.worker.drain(timeout=30)  # late arrivals are noted after the answer
    events = [r.event for r in audit.records(node.archive.engine)]
    assert events.count("kos-built") == 1
    assert "late-arrival" in events


def test_discontinued_yields_no_kos(node: Node, tmp_path: Path) -> None:
    series = acquisition(1, 1)
    client, uid = start_procedure(node)
    send(node, tmp_path, [ds for group in series.values() for ds in group])
    assert client.set(uid, final_attributes(series, "DISCONTINUED")).Status == 0
    client.close()
    assert node.workflow.tracker.get(uid) is None
    kos = [
        r
        for r in study_instances(node.archive.engine, STUDY_UID)
        if r.sop_class_uid.endswith(".59")
    ]
    assert kos == []


def test_timeout_with_a_missing_instance(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path
) -> None:
    node = start_node(make_config(acquisition={"completion_timeout": "1s"}))
    series = acquisition(1, 3)
    everything = [ds for group in series.values() for ds in group]
    client, uid = start_procedure(node)
    assert client.set(uid, final_attributes(series)).Status == 0
    send(node, tmp_path, everything[:-1])
    client.close()
    assert wait_state(node, uid, {INCOMPLETE, KOS_BUILT}) == INCOMPLETE
    acq = node.workflow.tracker.get(uid)
    assert acq.missing == [everything[-1].SOPInstanceUID]
    assert "acquisition-incomplete" in [r.event for r in audit.records(node.archive.engine)]
    status = run(
        sys.executable, "-m", "node", "status", "-c", write_config(tmp_path / "n.yaml", node)
    )
    assert f"acquisition {uid}: incomplete" in status.stdout
    assert everything[-1].SOPInstanceUID in status.stdout
    kos = [
        r
        for r in study_instances(node.archive.engine, STUDY_UID)
        if r.sop_class_uid.endswith(".59")
    ]
    assert kos == []


def test_wait_survives_a_restart(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path
) -> None:
    config = make_config()
    node = start_node(config)
    series = acquisition(1, 2)
    everything = [ds for group in series.values() for ds in group]
    client, uid = start_procedure(node)
    assert client.set(uid, final_attributes(series)).Status == 0
    client.close()
    send(node, tmp_path / "a", everything[:1])
    node.stop(grace=2)
    restarted = start_node(config)
    assert restarted.workflow.tracker.get(uid).state == "waiting"
    send(restarted, tmp_path / "b", everything[1:])
    assert wait_state(restarted, uid, {KOS_BUILT, "failed"}) == KOS_BUILT
    check_kos(restarted, uid, series, tmp_path)


def test_an_incomplete_acquisition_is_never_seen_without_its_custody_record(
    make_config: Callable[..., NodeConfig], start_node, tmp_path: Path, monkeypatch
) -> None:
    """The deadline's verdict and its audit record commit together (one transaction)."""
    from node.mpps import reads

    node = start_node(make_config(acquisition={"completion_timeout": "1h"}))
    series = acquisition(1, 2)
    everything = [ds for group in series.values() for ds in group]
    client, uid = start_procedure(node)
    assert client.set(uid, final_attributes(series)).Status == 0
    send(node, tmp_path, everything[:-1])
    client.close()
    seen: list[tuple[str, bool]] = []
    real = reads.missing_listed_by

    database = node.config.storage.database.removeprefix("sqlite:///")

    def observed(conn, mpps_uid):  # type: ignore[no-untyped-def]
        # What another reader sees (its own connection, plain reads: the node's engine
        # would queue behind the writer) while the deadline's verdict is being written.
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as other:
            (state,) = other.execute(
                "SELECT state FROM acquisitions WHERE mpps_uid = ?", (mpps_uid,)
            ).fetchone()
            (records,) = other.execute(
                "SELECT count(*) FROM audit_log WHERE event = 'acquisition-incomplete'"
            ).fetchone()
        seen.append((state, records > 0))
        return real(conn, mpps_uid)

    monkeypatch.setattr(reads, "missing_listed_by", observed)
    assert node.workflow.tracker.expire(uid) == INCOMPLETE
    assert seen, "the deadline never looked for missing instances"
    assert all(recorded or state != INCOMPLETE for state, recorded in seen), seen
    assert "acquisition-incomplete" in [r.event for r in audit.records(node.archive.engine)]
