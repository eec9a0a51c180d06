"""``dicom-node retrieve`` by WADO URL from real Q/R SCPs: DCMTK dcmqrscp and Orthanc.

C-GET and C-MOVE, an object the source does not hold, a source that refuses us, a
C-MOVE destination the source does not know, C-MOVE while the node is not serving, and
the MAC check against a signed KOS of the archive on arrival.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from node.app import Node
from node.config import NodeConfig, parse_config
from node.documents.codes import SIGNED_COMPLETE_ACQUISITION_CONTENT
from node.documents.kos import KosRequest, Reference, build_kos, patient_study_from
from node.documents.publish import encode_explicit_le
from node.retrieve.client import RetrieveRequest, find_series, retrieve
from node.schema import open_database
from node.signatures import Profile, create_key_pair, load_signer, mac_reference, sign_dataset
from node.signatures.purposes import SOURCE
from node.storage import audit
from node.storage.archive import Archive, Custody, ReceivedInstance
from node.storage.files import FileStore
from node.storage.index import find_instance
from tests.conftest import config_dict
from tests.helpers import SERIES_UID, STUDY_UID, ct_dataset, dataset_bytes, run, write_part10
from tests.integration.peers import DcmQrScp, OrthancServer, free_port
from tests.integration.process import write_config

WADO = "http://wado.example.org/wado"
NODE_AE = "DICOM_NODE"


def wado_url(ds: Dataset, **extra: str) -> str:
    query = (
        f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
        f"&objectUID={ds.SOPInstanceUID}"
    )
    return f"{WADO}?{query}" + "".join(f"&{k}={v}" for k, v in extra.items())


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    """Three CT images of one series, as Part 10 files (the source's copies)."""
    return [
        write_part10(ct_dataset(number=i, seed=i), tmp_path / "source" / f"ct{i}.dcm")
        for i in range(3)
    ]


@pytest.fixture
def peers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def node_yaml(tmp_path: Path, source_ae: str, port: int, node_port: int = 0, **more: Any) -> Path:
    """The CLI's configuration: our archive, one source, our listening port."""
    sources = [{"name": "pacs", "ae_title": source_ae, "host": "127.0.0.1", "port": port}]
    data = config_dict(tmp_path, node={"port": node_port}, sources=sources, **more)
    return write_config(tmp_path / "node.yaml", data)


def cli(config: Path, *args: str | Path) -> Any:
    return run(sys.executable, "-m", "node", "retrieve", "-c", config, *args)


@pytest.fixture
def local_archive(tmp_path: Path) -> Iterator[Archive]:
    """The archive the CLI writes to (configured by ``node_yaml``), opened here too."""
    files = FileStore(tmp_path / "archive")
    files.prepare()
    archive = Archive(files, open_database(f"sqlite:///{tmp_path / 'node.sqlite'}"))
    yield archive
    archive.engine.dispose()


def archived(archive: Archive, uid: str) -> Path:
    with archive.engine.connect() as conn:
        row = find_instance(conn, uid)
    assert row is not None, f"{uid} is not in the index"
    return archive.files.path(row.path)


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def events(archive: Archive, name: str) -> list[audit.AuditRecord]:
    return [r for r in audit.records(archive.engine) if r.event == name]


@pytest.mark.dcmtk
def test_get_by_wado_url(
    tmp_path: Path, study: list[Path], peers: ExitStack, local_archive: Archive
) -> None:
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study))
    config = node_yaml(tmp_path, qr.aet, qr.port)
    urls = [wado_url(dcmread(p), contentType="image/jpeg", rows="256") for p in study[:2]]
    result = cli(config, *urls, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr + qr.log()
    wanted = [uid_of(p) for p in study[:2]]
    for uid in wanted:
        assert f"stored    {uid}" in result.stdout
    assert "C-GET series " + SERIES_UID + " (2 objects): Success" in result.stdout
    assert "2 completed, 0 failed" in result.stdout
    assert "2 of 2 objects retrieved intact from pacs (QRSCP) by C-GET" in result.stdout
    # dcmqrscp returns no SOP Class UID in C-FIND: the broad set of contexts was used.
    assert "proposing up to 63 common storage SOP classes" in result.stderr
    assert "rows ignored: rendering parameters do not apply" in result.stderr
    archive = local_archive
    for source, uid, url in zip(study, wanted, urls, strict=False):
        stored = archived(archive, uid)
        assert dataset_bytes(stored) == dataset_bytes(source), "data set changed on the way"
        assert (tmp_path / "out" / f"{uid}.dcm").read_bytes() == stored.read_bytes()
        (received,) = [r for r in events(archive, "instance-stored") if r.sop_instance_uid == uid]
        assert received.details["via"] == "C-GET"
        assert received.details["calling_ae"] == "QRSCP"
        assert received.details["wado_url"] == url
        (custody,) = [r for r in events(archive, "retrieved") if r.sop_instance_uid == uid]
        assert custody.details["method"] == "get"
        assert custody.details["source_ae"] == "QRSCP"
        assert custody.details["wado_url"] == url
    with archive.engine.connect() as conn:
        assert find_instance(conn, uid_of(study[2])) is None, "only the named objects"
    assert audit.verify_chain(archive.engine).ok


@pytest.mark.dcmtk
def test_get_from_cda_links_with_sop_class_hint(
    tmp_path: Path, study: list[Path], peers: ExitStack
) -> None:
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study))
    config = node_yaml(tmp_path, qr.aet, qr.port)
    links = "\n".join(
        f'<linkHtml href="{wado_url(dcmread(p)).replace("&", "&amp;")}">image</linkHtml>'
        for p in study
    )
    cda = tmp_path / "report.xml"
    cda.write_text(
        f'<?xml version="1.0"?>\n<ClinicalDocument><text>{links}</text></ClinicalDocument>'
    )
    result = cli(config, "--file", cda, "--sop-class", CTImageStorage)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(3 objects): Success" in result.stdout
    assert "common storage SOP classes" not in result.stderr, "the hint must be used"
    again = cli(config, "--file", cda, "--sop-class", CTImageStorage)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("duplicate ") == 3


@pytest.mark.dcmtk
def test_move_by_wado_url(
    tmp_path: Path,
    study: list[Path],
    peers: ExitStack,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
) -> None:
    node = start_node(make_config())
    known = {"node": (NODE_AE, "127.0.0.1", node.port)}
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study, hosts=known))
    config = node_yaml(tmp_path, qr.aet, qr.port, node_port=node.port)
    urls = [wado_url(dcmread(p)) for p in study]
    result = cli(config, *urls, "--method", "move")
    assert result.returncode == 0, result.stdout + result.stderr + qr.log()
    assert "C-MOVE series " + SERIES_UID + " (3 objects): Success" in result.stdout
    assert "3 completed, 0 failed" in result.stdout
    archive = node.archive
    for source, url in zip(study, urls, strict=True):
        uid = uid_of(source)
        assert f"stored    {uid}" in result.stdout
        assert dataset_bytes(archived(archive, uid)) == dataset_bytes(source)
        (received,) = [r for r in events(archive, "instance-stored") if r.sop_instance_uid == uid]
        assert received.details["calling_ae"] == "QRSCP"
        (custody,) = [r for r in events(archive, "retrieved") if r.sop_instance_uid == uid]
        assert (custody.details["method"], custody.details["wado_url"]) == ("move", url)
    assert audit.verify_chain(archive.engine).ok


@pytest.mark.dcmtk
def test_object_the_source_does_not_hold(
    tmp_path: Path, study: list[Path], peers: ExitStack, local_archive: Archive
) -> None:
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study))
    config = node_yaml(tmp_path, qr.aet, qr.port)
    absent = ct_dataset(number=9)  # same series, never given to the source
    result = cli(config, wado_url(dcmread(study[0])), wado_url(absent))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"stored    {uid_of(study[0])}" in result.stdout
    assert f"missing   {absent.SOPInstanceUID}  not found at the source" in result.stdout
    assert "1 of 2 objects retrieved intact" in result.stdout
    assert "retrieve FAILED" in result.stdout
    archive = local_archive
    (failed,) = events(archive, "retrieve-failed")
    assert failed.sop_instance_uid == absent.SOPInstanceUID
    assert failed.details["outcome"] == "missing"


@pytest.mark.dcmtk
@pytest.mark.parametrize("method", ["get", "move"])
def test_source_refuses_our_calling_ae(
    tmp_path: Path,
    study: list[Path],
    peers: ExitStack,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    method: str,
) -> None:
    node = start_node(make_config())  # serving, so a C-MOVE gets as far as the source
    # Only the AE "OTHER_AE" may associate; dcmqrscp refuses us.
    other = {"other": ("OTHER_AE", "localhost", free_port())}
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study, hosts=other, peers=["other"]))
    config = node_yaml(tmp_path, qr.aet, qr.port, node_port=node.port)
    result = cli(config, wado_url(dcmread(study[0])), "--method", method)
    assert result.returncode == 1, result.stdout + result.stderr
    # dcmqrscp gives "Called AE title not recognised" for any access refusal.
    assert result.stderr.strip() == (
        f"dicom-node: pacs (QRSCP@127.0.0.1:{qr.port}) rejected the association "
        "(Called AE title not recognised)"
    )
    assert result.stdout == ""


@pytest.mark.dcmtk
def test_wrong_called_ae(tmp_path: Path, study: list[Path], peers: ExitStack) -> None:
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study))
    config = node_yaml(tmp_path, "NOT_QRSCP", qr.port)
    result = cli(config, wado_url(dcmread(study[0])))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"dicom-node: pacs (NOT_QRSCP@127.0.0.1:{qr.port}) rejected the association "
        "(Called AE title not recognised)"
    )


@pytest.mark.dcmtk
def test_move_destination_unknown_to_the_source(
    tmp_path: Path,
    study: list[Path],
    peers: ExitStack,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
) -> None:
    node = start_node(make_config())
    # The source knows some other AE at our address, but not our AE title.
    elsewhere = {"node": ("SOMEONE_ELSE", "127.0.0.1", node.port)}
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study, hosts=elsewhere))
    config = node_yaml(tmp_path, qr.aet, qr.port, node_port=node.port)
    uid = uid_of(study[0])
    result = cli(config, wado_url(dcmread(study[0])), "--method", "move")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"failed    {uid}  C-MOVE Failure 0xA801 (Move destination unknown)" in result.stdout
    assert "retrieve FAILED" in result.stdout
    with node.archive.engine.connect() as conn:
        assert find_instance(conn, uid) is None


def test_move_when_the_node_is_not_serving(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there, not even the source
    config = node_yaml(tmp_path, "QRSCP", free_port(), node_port=port)
    url = f"{WADO}?requestType=WADO&studyUID={STUDY_UID}&seriesUID={SERIES_UID}&objectUID=1.2.3"
    result = cli(config, url, "--method", "move")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"dicom-node: the node is not serving on 127.0.0.1:{port}; start `dicom-node serve` "
        "first (C-MOVE delivers to our storage SCP)"
    )


def test_usage_errors(tmp_path: Path) -> None:
    config = node_yaml(tmp_path, "QRSCP", free_port())
    bad = f"{WADO}?requestType=WADO&studyUID={STUDY_UID}&seriesUID={SERIES_UID}"
    result = cli(config, bad, bad + "&objectUID=1.2.3&rows=x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dicom-node: {bad}: parameter objectUID is missing (required by PS3.18)",
        f"dicom-node: {bad}&objectUID=1.2.3&rows=x: parameter rows must be a positive "
        "integer, not 'x'",
    ]
    good = bad + "&objectUID=1.2.3"
    assert cli(config, good, "--source", "nope").returncode == 2
    assert cli(config).returncode == 2
    (tmp_path / "empty.txt").write_text("# nothing\n")
    empty = cli(config, "--file", tmp_path / "empty.txt")
    assert empty.returncode == 2 and "no WADO-URI" in empty.stderr
    two = config_dict(
        tmp_path,
        sources=[
            {"name": "a", "ae_title": "A", "host": "127.0.0.1", "port": 1},
            {"name": "b", "ae_title": "B", "host": "127.0.0.1", "port": 2},
        ],
    )
    several = cli(write_config(tmp_path / "two.yaml", two), good)
    assert several.returncode == 2 and "choose one with --source" in several.stderr


@pytest.mark.dcmtk
def test_api_find_series_and_whole_series(
    tmp_path: Path, study: list[Path], peers: ExitStack, local_archive: Archive
) -> None:
    """The Python API other features use: list a study's series, fetch a whole series."""
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=study))
    sources = [{"name": "pacs", "ae_title": qr.aet, "host": "127.0.0.1", "port": qr.port}]
    config = parse_config(config_dict(tmp_path, sources=sources), tmp_path)
    source = config.sources[0]
    assert find_series(config, source, STUDY_UID) == [(SERIES_UID, "CT")]
    assert find_series(config, source, STUDY_UID, modality="KO") == []
    seen: list[str] = []
    report = retrieve(
        config,
        local_archive,
        source,
        [RetrieveRequest(STUDY_UID, SERIES_UID)],
        "get",
        progress=lambda result: seen.append(result.sop_instance_uid),
    )
    assert report.ok, [o.message for o in report.objects]
    assert sorted(seen) == sorted(uid_of(p) for p in study)
    assert [r.status.completed for r in report.requests] == [3]


def signed_kos(config: NodeConfig, archive: Archive, originals: list[Path]) -> str:
    """A KOS with a Referenced SOP Instance MAC per original, signed, in our archive."""
    references = []
    for path in originals:
        ds = dcmread(path, stop_before_pixels=True)
        references.append(
            Reference(
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                mac_items=[mac_reference(path)],
            )
        )
    kos_uid = generate_uid()
    kos = build_kos(
        KosRequest(
            title=SIGNED_COMPLETE_ACQUISITION_CONTENT,
            sop_instance_uid=kos_uid,
            series_uid=generate_uid(),
            series_number=99,
            references=references,
            patient_study=patient_study_from(originals[0]),
            retrieve_ae_title="QRSCP",
            device_uid=generate_uid(),
            device_name="TEST",
        )
    )
    signer = load_signer(config.signing.key, config.signing.certificate)
    sign_dataset(kos, signer, profile=Profile.SR, purpose=SOURCE, mac_algorithm="SHA256")
    archive.store(
        ReceivedInstance(
            sop_class_uid=str(kos.SOPClassUID),
            sop_instance_uid=kos_uid,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            dataset=encode_explicit_le(kos),
            custody=Custody("TEST", "local", "test"),
        )
    )
    return kos_uid


@pytest.mark.dcmtk
def test_mac_checked_against_a_signed_kos_on_arrival(
    tmp_path: Path, study: list[Path], peers: ExitStack, local_archive: Archive
) -> None:
    key, cert = tmp_path / "keys/signer.key.pem", tmp_path / "keys/signer.cert.pem"
    create_key_pair(key, cert, "KOS test signer")
    archive = local_archive
    config = parse_config(config_dict(tmp_path, trust=[str(cert)]), tmp_path)
    kos_uid = signed_kos(config, archive, study[:2])
    # The source holds the first object intact and an altered copy of the second.
    altered = dcmread(study[1])
    pixels = bytearray(altered.PixelData)
    pixels[0] ^= 0xFF
    altered.PixelData = bytes(pixels)
    served = [study[0], write_part10(altered, tmp_path / "altered" / "ct1.dcm")]
    qr = peers.enter_context(DcmQrScp(tmp_path / "qr", files=served))
    config_file = node_yaml(tmp_path, qr.aet, qr.port, trust=[str(cert)])

    intact = cli(config_file, wado_url(dcmread(study[0])))
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert f"MAC verified against KOS {kos_uid} (KOS signature verified" in intact.stdout

    changed = cli(config_file, wado_url(dcmread(study[1])))
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert f"MAC MISMATCH against KOS {kos_uid}: MAC mismatch" in changed.stdout
    assert "retrieve FAILED" in changed.stdout
    (custody,) = [r for r in events(archive, "retrieved") if r.sop_instance_uid == uid_of(study[1])]
    assert any("MISMATCH" in text for text in custody.details["kos_checks"])


@pytest.mark.orthanc
@pytest.mark.parametrize("method", ["get", "move"])
def test_orthanc_source(
    tmp_path: Path,
    study: list[Path],
    peers: ExitStack,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    method: str,
) -> None:
    node = start_node(make_config())
    modalities = {"node": (NODE_AE, "127.0.0.1", node.port)}
    orthanc = peers.enter_context(OrthancServer(tmp_path / "orthanc", modalities=modalities))
    for path in study:
        assert orthanc.upload(path)["Status"] == "Success"
    assert len(orthanc.rest_get("/instances")) == 3
    config = node_yaml(tmp_path, orthanc.aet, orthanc.dicom_port, node_port=node.port)
    urls = [wado_url(dcmread(p)) for p in study[:2]]
    result = cli(config, *urls, "--method", method)
    assert result.returncode == 0, result.stdout + result.stderr + orthanc.log()
    assert f"C-{method.upper()} series {SERIES_UID} (2 objects): Success" in result.stdout
    for source, url in zip(study, urls, strict=False):
        uid = uid_of(source)
        assert f"stored    {uid}" in result.stdout
        assert dataset_bytes(archived(node.archive, uid)) == dataset_bytes(source)
        (custody,) = [r for r in events(node.archive, "retrieved") if r.sop_instance_uid == uid]
        assert (custody.details["method"], custody.details["wado_url"]) == (method, url)
    if method == "get":  # Orthanc returns SOP Class UID in C-FIND: no broad set needed
        assert "common storage SOP classes" not in result.stderr


@pytest.mark.orthanc
def test_get_keeps_each_object_in_its_stored_syntax(
    tmp_path: Path, peers: ExitStack, local_archive: Archive
) -> None:
    """Implicit VR, Explicit VR and Deflated objects of one class, from Orthanc: one
    context per syntax, so each arrives as the source holds it, data set byte for byte."""
    syntaxes = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
    sources = [
        write_part10(ct_dataset(number=i, seed=40 + i), tmp_path / f"source/ct{i}.dcm", syntax)
        for i, syntax in enumerate(syntaxes)
    ]
    orthanc = peers.enter_context(OrthancServer(tmp_path / "orthanc"))
    for path in sources:
        assert orthanc.upload(path)["Status"] == "Success"
    config = node_yaml(tmp_path, orthanc.aet, orthanc.dicom_port)
    result = cli(config, *(wado_url(dcmread(p)) for p in sources))
    assert result.returncode == 0, result.stdout + result.stderr + orthanc.log()
    assert "3 completed, 0 failed" in result.stdout, result.stdout
    for source, syntax in zip(sources, syntaxes, strict=True):
        stored = archived(local_archive, uid_of(source))
        assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        assert dataset_bytes(stored) == dataset_bytes(source), f"{syntax.name} changed"
