"""Orthanc as the external partner of a transfer (PS3.17 Annex W case 2): every
instance and the Signed Manifest reach it, and the manifest Orthanc returns still
verifies with DCMTK dcmsign and with dicom-node."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from node.app import Node
from node.cli.main import main
from tests.helpers import STUDY_UID, dataset_bytes, run, tool
from tests.integration.peers import OrthancServer
from tests.integration.test_transfer import Sites, storescu, study

pytestmark = [pytest.mark.orthanc, pytest.mark.dcmtk]


def test_send_to_orthanc_then_fetch_the_manifest_back(
    tmp_path: Path, start_node: Callable[..., Node], capsys: pytest.CaptureFixture[str]
) -> None:
    sites = Sites(tmp_path)
    with OrthancServer(tmp_path / "orthanc", aet="ORTHANC") as orthanc:
        config, path = sites.sender(orthanc.dicom_port, partner_ae="ORTHANC")
        sender = start_node(config)
        originals = study(3)
        files = storescu(sender, tmp_path / "in", originals)

        assert main(["send", STUDY_UID, "site-b", "-c", str(path)]) == 0, capsys.readouterr()
        (transfer,) = sender.transfers.queue.all()
        assert transfer.state == "completed"

        # Orthanc's REST API lists every instance of the study, plus the manifest.
        (study_id,) = orthanc.rest_get("/studies")
        instance_ids = orthanc.rest_get(f"/studies/{study_id}/instances")
        by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in instance_ids}
        expected = {str(ds.SOPInstanceUID) for ds in originals} | {transfer.manifest_uid}
        assert set(by_uid) == expected
        copies = tmp_path / "from-orthanc"
        copies.mkdir()
        for ds, source in zip(originals, files, strict=True):
            stored = copies / f"{ds.SOPInstanceUID}.dcm"
            stored.write_bytes(
                orthanc.rest_get_bytes(f"/instances/{by_uid[ds.SOPInstanceUID]}/file")
            )
            assert dataset_bytes(stored) == dataset_bytes(source)

        # The manifest fetched back from Orthanc still verifies.
        fetched = tmp_path / "manifest-from-orthanc.dcm"
        fetched.write_bytes(
            orthanc.rest_get_bytes(f"/instances/{by_uid[transfer.manifest_uid]}/file")
        )
    kos = dcmread(fetched)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113031"
    dcmsign = run(tool("dcmsign"), "--verify", "+rs", "+cf", sites.sender_cert, fetched)
    assert dcmsign.returncode == 0, dcmsign.stdout + dcmsign.stderr
    ours = run(
        sys.executable, "-m", "node", "verify", fetched, "--trust", sites.sender_cert,
        "--refs", copies,
    )  # fmt: skip
    assert "VERIFIED (1 signatures, 3 secure references)" in ours.stdout, ours.stdout
    assert ours.returncode == 0, ours.stdout + ours.stderr
