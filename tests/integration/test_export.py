"""``dicom-node export`` end to end: store over DICOM, export, audit, verify the folder."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.app import Node
from node.config import parse_config
from node.integrity import export_study
from node.schema import open_database
from node.storage import audit
from tests.conftest import config_dict
from tests.helpers import STUDY_UID, ct_dataset, sha256
from tests.integration.process import write_config
from tests.integration.scu import association, store_status
from tests.pki import issue, make_ca

SECOND_SERIES = STUDY_UID + ".2"


def cli(config: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *map(str, args), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def store_study(port: int) -> list[Any]:
    sent = [ct_dataset(number=n, seed=n) for n in (1, 2)]
    sent.append(ct_dataset(number=7, seed=7, series_uid=SECOND_SERIES, SeriesNumber=2))
    with association(port) as assoc:
        for ds in sent:
            assert store_status(assoc, ds) == 0
    return sent


def test_export_signed_study_and_verify_the_folder(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    _, ca_key, ca_cert = make_ca(tmp_path / "pki")
    leaf = issue(tmp_path / "pki", "exporter", ca_key, ca_cert)
    data = config_dict(
        tmp_path,
        signing={"key": str(leaf.key), "certificate": str(leaf.cert), "create_if_missing": False},
        trust=[str(tmp_path / "pki" / "ca.cert.pem")],
    )
    node = start_node(parse_config(data, tmp_path))
    sent = store_study(node.port)
    config = write_config(tmp_path / "node.yaml", data)
    out = tmp_path / "out"

    result = cli(config, "export", STUDY_UID, out)
    assert result.returncode == 0, result.stderr
    assert "exported 3 files" in result.stdout
    assert "signed by CN=exporter" in result.stdout
    assert result.stderr == ""  # piped: no progress lines, no warning

    tails = [ds.SOPInstanceUID[-8:].replace(".", "-") for ds in sent]
    expected = [
        f"CT_S1_I1_{tails[0]}_export.dcm",
        f"CT_S1_I2_{tails[1]}_export.dcm",
        f"CT_S2_I7_{tails[2]}_export.dcm",
    ]
    assert sorted(p.name for p in out.glob("*.dcm")) == expected
    assert sorted(p.name for p in out.glob("*.dcm.sig")) == [n + ".sig" for n in expected]

    index = json.loads((out / f"{STUDY_UID}_index.json").read_text())
    assert index["study_uid"] == STUDY_UID
    assert [f["file"] for f in index["files"]] == expected
    for entry in index["files"]:
        assert entry["sha256"] == sha256(out / entry["file"])
        assert entry["sidecar_sha256"] == sha256(out / entry["sidecar"])

    engine = open_database(parse_config(data, tmp_path).storage.database)
    try:
        exports = [r for r in audit.records(engine) if r.event == "exported"]
        assert audit.verify_chain(engine).ok
    finally:
        engine.dispose()
    assert [r.sop_instance_uid for r in exports] == [ds.SOPInstanceUID for ds in sent]
    first = exports[0]
    assert first.details["path"] == str((out / expected[0]).resolve())
    assert first.details["sha256"] == sha256(out / expected[0])
    assert first.details["user"]
    assert first.details["signed_by"] == "CN=exporter"

    manifest = json.loads((out / (expected[0] + ".sig")).read_text())
    snapshot = manifest["audit_snapshot"]
    assert [r["event"] for r in snapshot] == ["instance-stored", "exported"]
    assert {r["sop_instance_uid"] for r in snapshot} == {sent[0].SOPInstanceUID}
    assert snapshot[-1]["hash"] == first.hash  # the export record itself is in the snapshot
    assert snapshot[0]["details"]["calling_ae"] == "TEST_SCU"

    verified = cli(config, "verify-manifest", out, "--require-signature")
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.splitlines()[-1] == "Integrity verified"
    assert "signed by CN=exporter (trusted)" in verified.stdout

    single = cli(config, "verify-manifest", out / expected[2], out / (expected[2] + ".sig"))
    assert (single.returncode, single.stdout.splitlines()[0]) == (0, "Integrity verified")

    untrusted = cli(
        config, "verify-manifest", out / expected[0], "--trust", leaf.cert.parent / "other.pem"
    )
    assert untrusted.returncode == 2  # a trust file that does not exist is a usage error

    tampered = out / expected[1]
    content = bytearray(tampered.read_bytes())
    content[200] ^= 0xFF
    tampered.write_bytes(content)
    failed = cli(config, "verify-manifest", out)
    assert failed.returncode == 1
    assert f"{expected[1]}: Integrity check FAILED: file hash mismatch" in failed.stdout
    assert failed.stdout.splitlines()[-1] == "Integrity check FAILED: 1 of 3 files failed"
    assert "Traceback" not in failed.stderr

    (out / expected[0]).unlink()
    (out / (expected[0] + ".sig")).unlink()
    gone = cli(config, "verify-manifest", out)
    assert f"{expected[0]}: Integrity check FAILED: file missing or unreadable" in gone.stdout

    again = cli(config, "export", STUDY_UID, out)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_export_without_a_key_is_unsigned_with_a_warning(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    data = config_dict(tmp_path)
    node = start_node(parse_config(data, tmp_path))
    # The node made a development key at start; without it (create_if_missing allows
    # that in the configuration) the export must fall back to unsigned manifests.
    (tmp_path / "keys/signer.key.pem").unlink()
    store_study(node.port)
    config = write_config(tmp_path / "node.yaml", data)
    out = tmp_path / "out"

    result = cli(config, "export", STUDY_UID, out)
    assert result.returncode == 0, result.stderr
    assert "warning: no signing key" in result.stderr
    assert result.stdout.splitlines()[-1] == "unsigned"
    sidecars = sorted(out.glob("*.dcm.sig"))
    assert len(sidecars) == 3
    assert all("signature" not in json.loads(p.read_text()) for p in sidecars)

    assert cli(config, "verify-manifest", out).returncode == 0
    required = cli(config, "verify-manifest", out, "--require-signature")
    assert required.returncode == 1
    assert "Integrity check FAILED: signature missing" in required.stdout


def test_export_of_an_unknown_or_invalid_study_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.yaml", config_dict(tmp_path))
    unknown = cli(config, "export", "1.2.3.999", tmp_path / "out")
    assert unknown.returncode == 2
    assert "not in the archive" in unknown.stderr
    assert not (tmp_path / "out").exists()
    invalid = cli(config, "export", "../etc", tmp_path / "out")
    assert invalid.returncode == 2
    assert "not a valid Study Instance UID" in invalid.stderr


def test_an_interrupted_export_does_not_verify(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    data = config_dict(tmp_path)
    node = start_node(parse_config(data, tmp_path))
    store_study(node.port)
    config = write_config(tmp_path / "node.yaml", data)
    out = tmp_path / "out"

    class Interrupted(Exception):
        pass

    def stop_after_one(done: int, total: int) -> None:
        if done == 1:
            raise Interrupted  # as a Ctrl-C or a crash would, between two files

    with pytest.raises(Interrupted):
        export_study(
            node.archive.engine,
            node.config.storage.archive,
            STUDY_UID,
            out,
            ae_title="DICOM_NODE",
            progress=stop_after_one,
        )
    assert len(list(out.glob("*.dcm.sig"))) == 1
    index = f"{STUDY_UID}_index.json"
    listed = json.loads((out / index).read_text())
    assert (listed["complete"], len(listed["files"])) == (False, 3)

    result = cli(config, "verify-manifest", out)
    assert result.returncode == 1, result.stdout
    assert f"{index}: Integrity check FAILED: export incomplete" in result.stdout
    assert result.stdout.count("Integrity check FAILED: file missing or unreadable") == 2
    assert result.stdout.splitlines()[-1] == "Integrity check FAILED: 3 of 4 files failed"

    # The same folder without its index (what an export cut short used to leave).
    (out / index).unlink()
    bare = cli(config, "verify-manifest", out)
    assert bare.returncode == 1, bare.stdout
    assert "Integrity check FAILED: not in the export index" in bare.stdout
    assert bare.stdout.splitlines()[-1] == "Integrity check FAILED: 1 of 1 files failed"

    complete = cli(config, "export", STUDY_UID, tmp_path / "again")
    assert complete.returncode == 0, complete.stderr
    assert json.loads((tmp_path / "again" / index).read_text())["complete"] is True
    trust = tmp_path / "keys/signer.cert.pem"  # the development key signed this export
    assert cli(config, "verify-manifest", tmp_path / "again", "--trust", trust).returncode == 0
