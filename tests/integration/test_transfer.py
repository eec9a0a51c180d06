"""PS3.17 Annex W case 2 end to end: a sender node ships a study and its Signed Manifest
to a partner node over real associations; the partner checks it. DCMTK storescu feeds the
sender, DCMTK storescp plays a partner that refuses compressed data, and dcmsign and
dciodvfy check the manifest."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.app import Node
from node.cli.main import main
from node.config import NodeConfig, parse_config
from node.signatures import create_key_pair
from node.storage import audit
from node.storage.index import study_instances
from node.transfer.queue import COMPLETED, PARTIAL, RETRYING
from tests.conftest import config_dict
from tests.helpers import STUDY_UID, ct_dataset, dataset_bytes, run, tool, write_part10
from tests.integration.peers import free_port

pytestmark = pytest.mark.dcmtk

SERIES = f"{STUDY_UID}.20"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy (a bounded wait, never a sleep)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.05)):
        found = probe()
        if found:
            return found
        tick.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Sites:
    """Configurations of a sender and partners, each in its own folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        sender_keys = root / "sender/keys"
        sender_keys.mkdir(parents=True)
        self.sender_cert = sender_keys / "signer.cert.pem"
        create_key_pair(sender_keys / "signer.key.pem", self.sender_cert, "SENDER test signer")

    def data(self, name: str, ae_title: str, **sections: Any) -> dict[str, Any]:
        data = config_dict(self.root / name, **sections)
        data["node"]["ae_title"] = ae_title
        return data

    def partner(
        self, ae_title: str = "SITE_B", *, trust_sender: bool = True, **more: Any
    ) -> NodeConfig:
        name = ae_title.lower()
        data = self.data(
            name,
            ae_title,
            manifests={"wait": "30s", "reports": str(self.root / name / "reports")},
            **more,
        )
        own = self.root / name / "keys/signer.cert.pem"
        create_key_pair(self.root / name / "keys/signer.key.pem", own, f"{ae_title} signer")
        data["signing"]["create_if_missing"] = False
        data["trust"] = [str(self.sender_cert if trust_sender else own)]
        return parse_config(data, self.root / name)

    def sender(
        self, partner_port: int, partner_ae: str = "SITE_B", ae_title: str = "SENDER", **more: Any
    ) -> tuple[NodeConfig, Path]:
        data = self.data("sender", ae_title, **more)
        data["signing"]["create_if_missing"] = False
        data["trust"] = [str(self.sender_cert)]
        data["partners"] = [
            {
                "name": "site-b",
                "ae_title": partner_ae,
                "host": "127.0.0.1",
                "port": partner_port,
                "retry": {"initial": "0.2s", "factor": 1.5, "maximum": "1s", "attempts": 50},
            }
        ]
        data.setdefault("transfers", {"poll_interval": "0.2s"})
        path = self.root / "sender.yaml"
        path.write_text(yaml.safe_dump(data))
        return parse_config(data, self.root / "sender", path), path


def study(count: int = 4) -> list[Dataset]:
    return [ct_dataset(series_uid=SERIES, number=i, seed=100 + i) for i in range(1, count + 1)]


def storescu(node: Node, folder: Path, datasets: list[Dataset], **syntax: Any) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = [write_part10(ds, folder / f"{ds.SOPInstanceUID}.dcm", **syntax) for ds in datasets]
    result = run(
        tool("storescu"), "-xs", "-aet", "CT_1", "-aec", node.config.node.ae_title,
        "127.0.0.1", node.port, *files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return files


def manifest_result(node: Node) -> Any:
    found = [m for m in _manifests(node) if m.state != "waiting"]
    return found[0] if found else None


def _manifests(node: Node) -> list[Any]:
    from node.signed_manifests.receiver import all_signed_manifests

    return all_signed_manifests(node.archive.engine)


def events(node: Node) -> list[str]:
    return [r.event for r in audit.records(node.archive.engine)]


def test_send_then_manifest_verified(
    tmp_path: Path, start_node: Callable[..., Node], capsys: pytest.CaptureFixture[str]
) -> None:
    sites = Sites(tmp_path)
    partner = start_node(sites.partner())
    config, path = sites.sender(partner.port)
    sender = start_node(config)
    originals = study()
    files = storescu(sender, tmp_path / "in", originals)

    assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "completed: 4 instances acknowledged, 0 refused" in out, out

    result = wait_for("the partner's verdict", lambda: manifest_result(partner))
    assert result.state == "verified", result
    assert result.calling_ae == "SENDER"
    assert result.referenced == 4
    report = json.loads(Path(result.report).read_text())
    assert report["result"] == "verified" and report["verified"] == 4
    assert report["missing"] == [] and report["altered"] == []

    # The partner holds the instances byte for byte, and the manifest.
    received = {r.sop_instance_uid: r for r in study_instances(partner.archive.engine, STUDY_UID)}
    for ds, source in zip(originals, files, strict=True):
        row = received.pop(str(ds.SOPInstanceUID))
        assert dataset_bytes(partner.archive.files.path(row.path)) == dataset_bytes(source)
    ((manifest_uid, manifest_row),) = received.items()
    assert manifest_uid == result.manifest_uid
    manifest = partner.archive.files.path(manifest_row.path)
    kos = dcmread(manifest)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113031"
    purpose = kos.DigitalSignaturesSequence[0].DigitalSignaturePurposeCodeSequence[0]
    assert purpose.CodeValue == "14"
    dcmsign = run(tool("dcmsign"), "--verify", "+rs", "+cf", sites.sender_cert, manifest)
    assert dcmsign.returncode == 0, dcmsign.stdout + dcmsign.stderr
    dciodvfy = run(tool("dciodvfy"), manifest)
    errors = [line for line in dciodvfy.stderr.splitlines() if line.startswith("Error")]
    assert errors == [], dciodvfy.stderr

    # Every step is a custody event on both sides.
    sent = events(sender)
    for event in ("transfer-queued", "manifest-built", "manifest-sent", "transfer-completed"):
        assert event in sent
    assert sent.count("instance-sent") == 4
    assert {"manifest-received", "manifest-verified"} <= set(events(partner))

    assert main(["manifests", "-c", str(_config_file(partner, tmp_path))]) == 0
    listing = capsys.readouterr().out
    assert f"{manifest_uid}  verified" in listing
    assert main(["status", "-c", str(path)]) == 0
    assert "to site-b: completed, 4 sent, 0 pending, 0 refused" in capsys.readouterr().out


def _config_file(node: Node, tmp_path: Path) -> Path:
    storage = node.config.storage
    path = tmp_path / f"{node.config.node.ae_title}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "archive": str(storage.archive),
                    "database": storage.database.removeprefix("sqlite:///"),
                }
            }
        )
    )
    return path


def test_partner_down_then_up_retry_delivers(
    tmp_path: Path, start_node: Callable[..., Node], capsys: pytest.CaptureFixture[str]
) -> None:
    sites = Sites(tmp_path)
    port = free_port()
    config, path = sites.sender(port)
    sender = start_node(config)
    storescu(sender, tmp_path / "in", study(3))

    assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert "not delivered yet" in out and "could not be reached" in out, out
    queue = sender.transfers.queue
    (transfer,) = queue.all()
    # The serving node may already be on its next attempt.
    assert transfer.state in (RETRYING, "sending") and transfer.attempts >= 1
    assert queue.counts(transfer.transfer_id).sent == 0  # nothing marked sent without Success
    assert main(["status", "-c", str(path)]) == 0
    assert "last error:" in capsys.readouterr().out

    partner = start_node(_with_port(sites.partner(), port))
    done = wait_for(
        "the retry to deliver",
        lambda: (t := queue.get(transfer.transfer_id)) and t.state == COMPLETED and t,
    )
    assert done.attempts >= 2
    result = wait_for("the partner's verdict", lambda: manifest_result(partner))
    assert result.state == "verified"
    assert "transfer-attempt-failed" in events(sender)


def test_queued_transfer_survives_a_restart(
    tmp_path: Path, start_node: Callable[..., Node], capsys: pytest.CaptureFixture[str]
) -> None:
    sites = Sites(tmp_path)
    port = free_port()
    config, path = sites.sender(port)
    first = start_node(config)
    storescu(first, tmp_path / "in", study(2))
    first.stop(grace=2)

    # Queued while no node serves; the next serving node finds it in the database.
    assert main(["send", STUDY_UID, "site-b", "--queue-only", "-c", str(path)]) == 0
    assert "queued for site-b" in capsys.readouterr().out
    second = start_node(config)
    wait_for(
        "a failed attempt",
        lambda: [t for t in second.transfers.queue.all() if t.attempts >= 1],
    )
    second.stop(grace=2)

    partner = start_node(_with_port(sites.partner(), port))
    third = start_node(config)
    (done,) = wait_for(
        "delivery after the restart",
        lambda: [t for t in third.transfers.queue.all() if t.state == COMPLETED],
    )
    assert done.attempts >= 2
    assert wait_for("the verdict", lambda: manifest_result(partner)).state == "verified"


def _with_port(config: NodeConfig, port: int) -> NodeConfig:
    return config.model_copy(update={"node": config.node.model_copy(update={"port": port})})


def test_instance_altered_on_partner_side_is_reported(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    sites = Sites(tmp_path)
    partner = start_node(sites.partner())
    config, path = sites.sender(partner.port)
    sender = start_node(config)
    originals = study(3)
    storescu(sender, tmp_path / "in", originals)
    # The partner already holds a different copy of one instance under the same UID; it
    # keeps that copy (and answers a warning), so what it holds differs from what was sent.
    altered = originals[1].copy()
    altered.PatientName = "Tampered^Copy"
    storescu(partner, tmp_path / "altered", [altered])

    assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0
    result = wait_for("the partner's verdict", lambda: manifest_result(partner))
    assert result.state == "altered"
    assert list(result.altered) == [str(altered.SOPInstanceUID)]
    assert "MAC" in " ".join(result.altered[str(altered.SOPInstanceUID)])
    report = json.loads(Path(result.report).read_text())
    assert report["altered"][0]["sop_instance_uid"] == altered.SOPInstanceUID
    assert "manifest-check-failed" in events(partner)


def _manifest_file(sender: Node) -> Path:
    (transfer,) = sender.transfers.queue.all()
    rows = [
        r
        for r in study_instances(sender.archive.engine, STUDY_UID)
        if r.sop_instance_uid == transfer.manifest_uid
    ]
    return sender.archive.files.path(rows[0].path)


def _storescp_partner(tmp_path: Path) -> tuple[Any, int, Path]:
    import subprocess

    port = free_port()
    out = tmp_path / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        [tool("storescp"), "-aet", "SITE_B", "-od", str(out), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepting() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait_for("storescp to listen", accepting, timeout=20)
    return proc, port, out


def test_refused_instance_is_reported_not_retried(
    tmp_path: Path, start_node: Callable[..., Node], capsys: pytest.CaptureFixture[str]
) -> None:
    """storescp accepts no JPEG: that instance is refused for good, the rest gets a manifest."""
    sites = Sites(tmp_path)
    proc, port, out = _storescp_partner(tmp_path)
    try:
        config, path = sites.sender(port)
        sender = start_node(config)
        plain = study(2)
        storescu(sender, tmp_path / "in", plain)
        jpeg = ct_dataset(series_uid=SERIES, number=9, seed=9, bits=8)
        source = write_part10(jpeg, tmp_path / "raw.dcm")
        compressed = tmp_path / "jpeg.dcm"
        run(tool("dcmcjpeg"), source, compressed, check=True)
        assert dcmread(compressed).file_meta.TransferSyntaxUID.is_compressed
        result = run(
            tool("storescu"), "-aet", "CT_1", "-aec", "SENDER", "-xs", "127.0.0.1",
            sender.port, compressed,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

        assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 1
        text = capsys.readouterr()
        assert "partial: 2 instances acknowledged, 1 refused" in text.out, text.out
        assert f"refused {jpeg.SOPInstanceUID}: no accepted presentation context" in text.err
        (transfer,) = sender.transfers.queue.all()
        assert transfer.state == PARTIAL
        kos = dcmread(_manifest_file(sender))
        referenced = {
            sop.ReferencedSOPInstanceUID
            for st in kos.CurrentRequestedProcedureEvidenceSequence
            for se in st.ReferencedSeriesSequence
            for sop in se.ReferencedSOPSequence
        }
        assert referenced == {str(ds.SOPInstanceUID) for ds in plain}
        # storescp got the two instances and the manifest, last.
        assert len(list(out.iterdir())) == 3
        assert "instance-refused" in events(sender)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_missing_then_late_arrival_then_incomplete(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    """A manifest that arrives alone waits; late instances are checked as they come."""
    sites = Sites(tmp_path)
    proc, port, _ = _storescp_partner(tmp_path)
    try:
        config, path = sites.sender(port)
        sender = start_node(config)
        originals = study(3)
        files = storescu(sender, tmp_path / "in", originals)
        assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    manifest = _manifest_file(sender)

    # Site C gets the manifest first, then one instance late; the third never comes.
    partner = start_node(sites.partner("SITE_C"))
    _store_files(partner, [manifest])
    wait_for(
        "the manifest to wait",
        lambda: [m for m in _manifests(partner) if m.state == "waiting" and len(m.missing) == 3],
    )
    _store_files(partner, [files[0]])
    wait_for(
        "the late arrival to be checked",
        lambda: [m for m in _manifests(partner) if len(m.missing) == 2],
    )
    (current,) = _manifests(partner)
    assert current.state == "waiting"
    # The wait ends (run the deadline job now rather than waiting 30 s).
    assert partner.manifests.expire(current.manifest_uid) == "incomplete"
    (final,) = _manifests(partner)
    assert sorted(final.missing) == sorted(str(ds.SOPInstanceUID) for ds in originals[1:])
    report = json.loads(Path(final.report).read_text())
    assert report["result"] == "incomplete" and len(report["missing"]) == 2


def test_late_arrivals_complete_the_set(tmp_path: Path, start_node: Callable[..., Node]) -> None:
    sites = Sites(tmp_path)
    proc, port, _ = _storescp_partner(tmp_path)
    try:
        config, path = sites.sender(port)
        sender = start_node(config)
        files = storescu(sender, tmp_path / "in", study(2))
        assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    partner = start_node(sites.partner("SITE_C"))
    _store_files(partner, [_manifest_file(sender)])
    wait_for("the manifest", lambda: _manifests(partner))
    _store_files(partner, files)
    result = wait_for("the verdict", lambda: manifest_result(partner))
    assert result.state == "verified"


def test_untrusted_signer_is_rejected(tmp_path: Path, start_node: Callable[..., Node]) -> None:
    sites = Sites(tmp_path)
    partner = start_node(sites.partner(trust_sender=False))
    config, path = sites.sender(partner.port)
    sender = start_node(config)
    storescu(sender, tmp_path / "in", study(2))
    assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0
    result = wait_for("the partner's verdict", lambda: manifest_result(partner))
    assert result.state == "untrusted"
    assert "not trusted" in result.detail


def _store_files(node: Node, files: list[Path]) -> None:
    result = run(
        tool("storescu"), "-aet", "SENDER", "-aec", node.config.node.ae_title,
        "127.0.0.1", node.port, *files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_rule_sends_the_study_when_its_acquisition_kos_is_built(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    from tests.integration.mpps_scu import MppsClient, create_attributes, final_attributes

    sites = Sites(tmp_path)
    partner = start_node(sites.partner())
    rules = [
        {"when": "acquisition-kos", "from": "CT_2", "partner": "site-b"},
        {"when": "acquisition-kos", "from": "CT_1", "partner": "site-b"},
    ]
    config, _ = sites.sender(
        partner.port, ae_title="DICOM_NODE", transfers={"poll_interval": "0.2s", "rules": rules}
    )
    sender = start_node(config)
    originals = study(3)
    client = MppsClient(sender.port)
    status, mpps_uid = client.create(create_attributes())
    assert status.Status == 0
    storescu(sender, tmp_path / "in", originals)
    assert client.set(mpps_uid, final_attributes({SERIES: originals})).Status == 0
    client.close()

    queue = sender.transfers.queue
    (transfer,) = wait_for(
        "the rule's transfer",
        lambda: [t for t in queue.all() if t.state == COMPLETED],
    )
    assert transfer.trigger == f"rule:acquisition-kos:{mpps_uid}"
    assert len(queue.all()) == 1  # the CT_2 rule did not fire, the CT_1 rule fired once
    assert queue.counts(transfer.transfer_id).sent == 4  # three images and the 113035 KOS
    result = wait_for("the partner's verdict", lambda: manifest_result(partner))
    assert result.state == "verified" and result.referenced == 4
