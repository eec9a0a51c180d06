"""Our Q/R SCP against real peers: DCMTK findscu, movescu (to a storescp), getscu.

The archive holds two patients: Doe (study A: series 1 with three CT images in Explicit
VR Little Endian, the first with group length elements, series 2 with two in Implicit
VR) and Roe (study B, one image, 2023). Retrieved files are compared with the archived
ones data set byte for byte; the destinations run in bit-preserving mode.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from node.app import Node
from node.config import NodeConfig
from node.storage.audit import AuditEvent, records
from node.storage.database import instances
from tests.helpers import ct_dataset, dataset_bytes, run, tool, write_part10
from tests.integration.peers import free_port

pytestmark = pytest.mark.dcmtk

QR_PEER = {"ae_title": "QRSCU", "host": "127.0.0.1", "roles": ["query", "retrieve"]}
STORE_PEER = {"ae_title": "STORESCU", "host": "127.0.0.1", "roles": ["store"]}


def dcmtk(
    name: str,
    node: Node,
    *options: str | Path,
    keys: tuple[str, ...] = (),
    files: tuple[Path, ...] = (),
    aet: str = "QRSCU",
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK SCU verbosely against ``node`` with ``-k`` keys (and files to send)."""
    args = [a for key in keys for a in ("-k", key)]
    called = ("-aet", aet, "-aec", "DICOM_NODE")
    return run(tool(name), "-v", *called, *options, *args, "127.0.0.1", node.port, *files)


class StoreSCP:
    """DCMTK storescp in bit-preserving mode: files hold the data sets as received."""

    def __init__(self, directory: Path, ae_title: str = "DEST") -> None:
        self.directory = directory
        self.ae_title = ae_title
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [tool("storescp"), "+B", "-aet", ae_title, "-od", str(directory), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        self._wait_listening(30)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"storescp exited with {self.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pause.wait(0.05)
        raise AssertionError("storescp did not listen in time")

    def received(self) -> dict[str, bytes]:
        """SOP Instance UID -> data set bytes of every received file."""
        return _by_uid(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _by_uid(paths: Iterator[Path] | list[Path]) -> dict[str, bytes]:
    out = {}
    for path in paths:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        out[uid] = dataset_bytes(path)
    return out


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "dest")
    yield scp
    scp.stop()


class Stored:
    """The UIDs of the stored test data."""

    def __init__(self) -> None:
        self.study_a = generate_uid(None)
        self.series_a1 = generate_uid(None)
        self.series_a2 = generate_uid(None)
        self.study_b = generate_uid(None)
        self.series_b1 = generate_uid(None)
        self.sop: dict[str, list[str]] = {}


@pytest.fixture
def qr_node(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], dest: StoreSCP
) -> Node:
    destination = {"ae_title": dest.ae_title, "host": "127.0.0.1", "port": dest.port}
    peers = [QR_PEER, STORE_PEER, {**destination, "roles": ["store"]}]
    return start_node(make_config(peers=peers))


@pytest.fixture
def archive(qr_node: Node, tmp_path: Path) -> Stored:
    uids = Stored()
    files: list[Path] = []
    doe = {"PatientName": "Doe^Jane", "PatientID": "PID-1", "StudyDate": "20240315"}
    series = (
        (uids.series_a1, 1, 3, ExplicitVRLittleEndian),
        (uids.series_a2, 2, 2, ImplicitVRLittleEndian),
    )
    for series_uid, number, count, syntax in series:
        for i in range(1, count + 1):
            ds = ct_dataset(
                study_uid=uids.study_a, series_uid=series_uid, number=i, seed=10 * number + i, **doe
            )
            ds.SeriesNumber = number
            uids.sop.setdefault(series_uid, []).append(str(ds.SOPInstanceUID))
            files.append(write_part10(ds, tmp_path / f"in/{series_uid}/{i}.dcm", syntax))
    # Group lengths (gggg,0000) are kept as received; pydicom would drop them on encoding.
    with_lengths = tmp_path / "in/group-lengths.dcm"
    run(tool("dcmconv"), "+g", files[0], with_lengths, check=True)
    files[0] = with_lengths
    roe = ct_dataset(
        study_uid=uids.study_b,
        series_uid=uids.series_b1,
        seed=99,
        PatientName="Roe^Richard",
        PatientID="PID-2",
        StudyDate="20230101",
        AccessionNumber="ACC2",
        Modality="MR",
    )
    uids.sop[uids.series_b1] = [str(roe.SOPInstanceUID)]
    files.append(write_part10(roe, tmp_path / "in/roe.dcm"))
    result = dcmtk("storescu", qr_node, files=tuple(files), aet="STORESCU")
    assert result.returncode == 0, result.stderr
    with qr_node.archive.engine.connect() as conn:
        assert len(conn.execute(select(instances)).all()) == 6
    return uids


def archived(node: Node, *series_uids: str) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of the archived files of the given series."""
    with node.archive.engine.connect() as conn:
        rows = conn.execute(
            select(instances.c.path).where(instances.c.series_uid.in_(series_uids))
        ).all()
    return _by_uid([node.archive.files.path(r.path) for r in rows])


def findscu(node: Node, out: Path, *keys: str, model: str = "-S", aet: str = "QRSCU") -> Any:
    out.mkdir(parents=True, exist_ok=True)
    result = dcmtk("findscu", node, model, "-X", "-od", out, keys=keys, aet=aet)
    responses = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return result, responses


def test_find_patient_level_with_wildcard(qr_node: Node, archive: Stored, tmp_path: Path) -> None:
    result, found = findscu(
        qr_node,
        tmp_path / "f",
        "QueryRetrieveLevel=PATIENT",
        "PatientName=DOE*",
        "PatientID",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )
    assert result.returncode == 0, result.stderr
    assert len(found) == 1
    (patient,) = found
    assert patient.PatientID == "PID-1"
    assert str(patient.PatientName) == "Doe^Jane"
    assert patient.NumberOfPatientRelatedInstances == 5
    assert patient.QueryRetrieveLevel == "PATIENT"
    assert patient.RetrieveAETitle == "DICOM_NODE"
    assert "StudyInstanceUID" not in patient  # only what was asked for


def test_find_study_level_date_range_and_uid_list(
    qr_node: Node, archive: Stored, tmp_path: Path
) -> None:
    keys = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", "ModalitiesInStudy")
    _, in_2024 = findscu(qr_node, tmp_path / "a", *keys[:-1], "StudyDate=20240101-20241231")
    assert [ds.StudyInstanceUID for ds in in_2024] == [archive.study_a]
    assert in_2024[0].StudyDate == "20240315"
    both = f"StudyInstanceUID={archive.study_a}\\{archive.study_b}"
    _, listed = findscu(
        qr_node, tmp_path / "b", "QueryRetrieveLevel=STUDY", both, "ModalitiesInStudy"
    )
    assert {ds.StudyInstanceUID: ds.ModalitiesInStudy for ds in listed} == {
        archive.study_a: "CT",
        archive.study_b: "MR",
    }
    _, nothing = findscu(qr_node, tmp_path / "c", *keys[:-1], "StudyDate=20250101-")
    assert nothing == []


def test_find_series_and_image_levels(qr_node: Node, archive: Stored, tmp_path: Path) -> None:
    _, series = findscu(
        qr_node,
        tmp_path / "s",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study_a}",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    )
    assert [(ds.SeriesInstanceUID, ds.NumberOfSeriesRelatedInstances) for ds in series] == [
        (archive.series_a1, 3),
        (archive.series_a2, 2),
    ]
    _, images = findscu(
        qr_node,
        tmp_path / "i",
        "QueryRetrieveLevel=IMAGE",
        "PatientID=PID-1",
        f"StudyInstanceUID={archive.study_a}",
        f"SeriesInstanceUID={archive.series_a2}",
        "SOPInstanceUID",
        "InstanceNumber",
        model="-P",
    )
    assert [ds.SOPInstanceUID for ds in images] == archive.sop[archive.series_a2]
    assert [ds.InstanceNumber for ds in images] == [1, 2]


def test_find_without_level_is_refused(qr_node: Node, archive: Stored, tmp_path: Path) -> None:
    result, found = findscu(qr_node, tmp_path / "x", "StudyInstanceUID")
    assert found == []
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr, (
        result.stderr
    )


def movescu(node: Node, destination: str, *keys: str, aet: str = "QRSCU") -> Any:
    return dcmtk("movescu", node, "-S", "-aem", destination, keys=keys, aet=aet)


def test_move_study_to_peer_byte_identical(qr_node: Node, archive: Stored, dest: StoreSCP) -> None:
    result = movescu(
        qr_node, dest.ae_title, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study_a}"
    )
    assert result.returncode == 0, result.stderr
    assert "Received Final Move Response (Success)" in result.stderr, result.stderr
    expected = archived(qr_node, archive.series_a1, archive.series_a2)
    received = dest.received()
    assert len(expected) == 5
    first = expected[archive.sop[archive.series_a1][0]]
    assert first.startswith(b"\x08\x00\x00\x00UL")  # (0008,0000) Group Length, kept
    assert received == expected  # every instance, data set bytes untouched (both syntaxes)
    events = records(qr_node.archive.engine, study_uid=archive.study_a)
    sent = [r for r in events if r.event == AuditEvent.INSTANCE_SENT]
    assert {r.sop_instance_uid for r in sent} == set(expected)
    assert all(r.details["destination_ae"] == "DEST" for r in sent)
    assert all(r.details["calling_ae"] == "QRSCU" for r in sent)
    (served,) = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_MOVE_SERVED]
    assert served.details["completed"] == 5
    assert served.details["failed"] == 0
    assert served.details["outcome"] == "served"


def test_move_unknown_destination_is_refused(
    qr_node: Node, archive: Stored, dest: StoreSCP
) -> None:
    result = movescu(
        qr_node, "NOWHERE", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study_a}"
    )
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in result.stderr, result.stderr
    assert dest.received() == {}


def test_move_patient_root_series(qr_node: Node, archive: Stored, dest: StoreSCP) -> None:
    keys = (
        "QueryRetrieveLevel=SERIES",
        "PatientID=PID-2",
        f"StudyInstanceUID={archive.study_b}",
        f"SeriesInstanceUID={archive.series_b1}",
    )
    result = dcmtk("movescu", qr_node, "-P", "-aem", "DEST", keys=keys)
    assert "Received Final Move Response (Success)" in result.stderr, result.stderr
    assert dest.received() == archived(qr_node, archive.series_b1)


def test_get_series_byte_identical(qr_node: Node, archive: Stored, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    keys = (
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study_a}",
        f"SeriesInstanceUID={archive.series_a1}",
    )
    result = dcmtk("getscu", qr_node, "-S", "+B", "-od", out, keys=keys)
    assert result.returncode == 0, result.stderr
    assert "Received C-GET Response (Success)" in result.stderr, result.stderr
    assert "Number of Completed Suboperations : 3" in result.stderr, result.stderr
    received = _by_uid(sorted(out.iterdir()))
    assert received == archived(qr_node, archive.series_a1)  # group lengths included
    assert len(received) == 3
    (served,) = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_GET_SERVED]
    assert (served.details["matched"], served.details["completed"]) == (3, 3)


def test_roles_are_enforced(qr_node: Node, archive: Stored, dest: StoreSCP, tmp_path: Path) -> None:
    result, found = findscu(
        qr_node, tmp_path / "r", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", aet="STORESCU"
    )
    assert found == []
    # 0x0124 Refused: Not Authorized (PS3.7 C.5); DCMTK 3.6.7 has no name for it in C-FIND.
    assert "Final Find Response (Unknown Status: 0x124)" in result.stderr, result.stderr
    moved = movescu(
        qr_node,
        dest.ae_title,
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={archive.study_a}",
        aet="STORESCU",
    )
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in moved.stderr, moved.stderr
    assert dest.received() == {}
    served = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_MOVE_SERVED]
    assert served[-1].details["outcome"] == "refused: peer has no retrieve role"
    study = ("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study_a}")
    got = dcmtk("getscu", qr_node, "-S", "-od", tmp_path, keys=study, aet="STORESCU")
    assert "Unknown Status: 0x124" in got.stderr, got.stderr
    assert not list(tmp_path.glob("CT*"))


def test_move_without_unique_key_is_refused(qr_node: Node, archive: Stored, dest: StoreSCP) -> None:
    result = movescu(qr_node, dest.ae_title, "QueryRetrieveLevel=SERIES", "SeriesInstanceUID=1.2")
    assert "Final Move Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr, (
        result.stderr
    )
    assert dest.received() == {}


def test_get_cancel_stops_sub_operations(qr_node: Node, archive: Stored) -> None:
    """The C-GET SCU cancels while the first sub-operation is in progress (PS3.4 C.4.3.3)."""
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    received: list[str] = []
    message_id = 7

    def on_store(event: Any) -> int:
        if not received:  # cancel before answering the first C-STORE
            get_context = next(
                cx.context_id
                for cx in event.assoc.accepted_contexts
                if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
            )
            event.assoc.send_c_cancel(message_id, get_context)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        qr_node.port,
        ae_title="DICOM_NODE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = archive.study_a
    try:
        responses = list(
            assoc.send_c_get(
                identifier, StudyRootQueryRetrieveInformationModelGet, msg_id=message_id
            )
        )
    finally:
        assoc.release()
    final, _ = responses[-1]
    assert final.Status == 0xFE00
    assert final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfRemainingSuboperations == 4
    assert len(received) == 1
    (served,) = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_GET_SERVED]
    assert served.details["outcome"] == "cancelled after 1 sub-operations"


def test_move_reports_sub_operations_the_destination_cannot_take(
    qr_node: Node, archive: Stored, dest: StoreSCP, tmp_path: Path
) -> None:
    """storescp accepts no JPEG: that instance fails, is listed, and nothing is transcoded."""
    plain = ct_dataset(
        study_uid=archive.study_b,
        series_uid=archive.series_b1,
        number=2,
        bits=8,
        seed=5,
        PatientName="Roe^Richard",
        PatientID="PID-2",
        StudyDate="20230101",
        Modality="MR",
    )
    jpeg = tmp_path / "jpeg.dcm"
    run(tool("dcmcjpeg"), "+e1", write_part10(plain, tmp_path / "plain.dcm"), jpeg, check=True)
    stored = dcmtk("storescu", qr_node, "-xs", files=(jpeg,), aet="STORESCU")
    assert stored.returncode == 0, stored.stderr
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", qr_node.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = archive.study_b
    identifier.SeriesInstanceUID = archive.series_b1
    try:
        responses = list(
            assoc.send_c_move(identifier, dest.ae_title, StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    final, failed = responses[-1]
    assert final.Status == 0xB000  # sub-operations complete, one or more failures
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert failed.FailedSOPInstanceUIDList == plain.SOPInstanceUID
    assert dest.received() == {
        uid: data
        for uid, data in archived(qr_node, archive.series_b1).items()
        if uid != plain.SOPInstanceUID
    }
    served = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_MOVE_SERVED]
    assert served[-1].details["failed_sop_instance_uids"] == [plain.SOPInstanceUID]


def store_jpeg_series(node: Node, archive: Stored, tmp_path: Path, count: int = 2) -> str:
    """``count`` JPEG Lossless SV1 CT images (DCMTK dcmcjpeg) in a new series of study A."""
    series_uid = generate_uid(None)
    files = []
    for i in range(1, count + 1):
        plain = ct_dataset(
            study_uid=archive.study_a,
            series_uid=series_uid,
            number=i,
            bits=8,
            seed=70 + i,
            PatientName="Doe^Jane",
            PatientID="PID-1",
            StudyDate="20240315",
        )
        source = write_part10(plain, tmp_path / f"jpeg-in/plain{i}.dcm")
        jpeg = tmp_path / f"jpeg-in/jpeg{i}.dcm"
        run(tool("dcmcjpeg"), "+e1", source, jpeg, check=True)
        files.append(jpeg)
    stored = dcmtk("storescu", node, "-xs", files=tuple(files), aet="STORESCU")
    assert stored.returncode == 0, stored.stderr
    rows = archived(node, series_uid)
    assert len(rows) == count
    with node.archive.engine.connect() as conn:
        syntaxes = conn.execute(
            select(instances.c.transfer_syntax_uid).where(instances.c.series_uid == series_uid)
        ).scalars()
        assert set(syntaxes) == {JPEG_LOSSLESS_SV1}
    return series_uid


JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def test_get_prefer_lossless_gets_jpeg_objects_byte_identical(
    qr_node: Node, archive: Stored, tmp_path: Path
) -> None:
    """getscu +xs proposes JPEG Lossless first in its one CT context: that one is accepted."""
    series_uid = store_jpeg_series(qr_node, archive, tmp_path)
    out = tmp_path / "got"
    out.mkdir()
    keys = (
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study_a}",
        f"SeriesInstanceUID={series_uid}",
    )
    result = dcmtk("getscu", qr_node, "-S", "+xs", "+B", "-od", out, keys=keys)
    assert result.returncode == 0, result.stderr
    assert "Received C-GET Response (Success)" in result.stderr, result.stderr
    assert "Number of Completed Suboperations : 2" in result.stderr, result.stderr
    received = _by_uid(sorted(out.iterdir()))
    assert received == archived(qr_node, series_uid)
    for path in out.iterdir():
        assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
            JPEG_LOSSLESS_SV1
        )


def test_get_uncompressed_only_cannot_have_jpeg_objects(
    qr_node: Node, archive: Stored, tmp_path: Path
) -> None:
    """Default getscu: uncompressed syntaxes only. JPEG objects fail (never transcoded),
    are listed as failed; the uncompressed objects of the same request still arrive."""
    series_uid = store_jpeg_series(qr_node, archive, tmp_path)
    jpeg_uids = set(archived(qr_node, series_uid))
    out = tmp_path / "got"
    out.mkdir()
    keys = ("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study_a}")
    result = dcmtk("getscu", qr_node, "-S", "+B", "-od", out, keys=keys)
    assert "Number of Completed Suboperations : 5" in result.stderr, result.stderr
    assert "Number of Failed Suboperations    : 2" in result.stderr, result.stderr
    received = _by_uid(sorted(out.iterdir()))
    assert set(received) == set(archived(qr_node, archive.series_a1, archive.series_a2))
    (served,) = [r for r in records(qr_node.archive.engine) if r.event == AuditEvent.C_GET_SERVED]
    assert set(served.details["failed_sop_instance_uids"]) == jpeg_uids
