"""``dicom-node verify-manifest``: the exact line, the exit status, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.main import main
from node.integrity import write_sidecar
from tests.unit.test_manifest_support import custody_records, make_dicom, make_signer, write_pem

AE = "DICOM_NODE"


@pytest.fixture(autouse=True)
def _no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A recipient has no node configuration: run where config/node.yaml does not exist.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DICOM_NODE_CONFIG", raising=False)


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str], str]:
    code = main(["verify-manifest", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_verified_and_failed_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dcm = make_dicom(tmp_path)
    sidecar = write_sidecar(dcm, custody_records(tmp_path), AE)
    code, lines, _ = run(capsys, dcm)
    assert (code, lines[0]) == (0, "Integrity verified")
    assert "not a deliberate forger" in lines[1]
    assert run(capsys, dcm, sidecar)[:2] == (0, lines)
    assert run(capsys, sidecar)[0] == 0  # the sidecar alone names its file

    code, lines, _ = run(capsys, dcm, "--require-signature")
    assert (code, lines[0]) == (1, "Integrity check FAILED: signature missing")

    dcm.write_bytes(dcm.read_bytes()[:-1] + b"\x01")
    code, lines, err = run(capsys, dcm)
    assert (code, lines[0], err) == (1, "Integrity check FAILED: file hash mismatch", "")


def test_signed_trusted_and_untrusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = make_signer("ec-p256", "Export Signer")
    _, cert = write_pem(tmp_path, signer)
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, custody_records(tmp_path), AE, signer)

    code, lines, _ = run(capsys, dcm, "--trust", cert, "--require-signature")
    assert code == 0
    assert lines[:2] == ["Integrity verified", "  signed by CN=Export Signer (trusted)"]

    code, lines, _ = run(capsys, dcm)
    assert code == 1
    assert lines[:2] == [
        "Integrity check FAILED: signer not trusted",
        "  signed by CN=Export Signer (NOT trusted)",
    ]


def test_trust_from_the_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = make_signer("rsa")
    key, cert = write_pem(tmp_path, signer)
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, [], AE, signer)
    config = tmp_path / "node.yaml"
    config.write_text(f"signing: {{key: {key}, certificate: {cert}}}\ntrust: [{cert}]\n")
    assert run(capsys, dcm, "-c", config)[0] == 0


@pytest.mark.parametrize("content", [b"{not json", b"\x00\x01", b"[1, 2]", b"{}"])
def test_malformed_sidecar_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, [], AE).write_bytes(content)
    code, lines, err = run(capsys, dcm)
    assert (code, lines[0]) == (1, "Integrity check FAILED: sidecar missing or malformed")
    assert "Traceback" not in err


def test_missing_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, tmp_path / "absent.dcm")
    assert (code, lines[0]) == (1, "Integrity check FAILED: sidecar missing or malformed")


def test_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "export"
    records = custody_records(tmp_path)
    files = [make_dicom(folder, f"CT_S1_I{i}_x_export.dcm", seed=i) for i in (1, 2, 3)]
    for dcm in files:
        write_sidecar(dcm, records, AE)
    write_index(folder, [*(f.name for f in files), "lonely_export.dcm"])
    code, lines, _ = run(capsys, folder)
    assert code == 1  # the index lists a file that is not there
    assert "lonely_export.dcm: Integrity check FAILED: file missing or unreadable" in lines
    write_index(folder, [f.name for f in files])
    code, lines, _ = run(capsys, folder)
    assert code == 0
    assert lines[-2:] == ["3 files verified", "Integrity verified"]

    files[1].write_bytes(files[1].read_bytes() + b"x")
    (folder / "lonely_export.dcm").write_bytes(b"no sidecar")
    code, lines, _ = run(capsys, folder)
    assert code == 1
    assert f"{files[1].name}: Integrity check FAILED: file hash mismatch" in lines
    assert "lonely_export.dcm: Integrity check FAILED: sidecar missing or malformed" in lines
    assert lines[-1] == "Integrity check FAILED: 2 of 4 files failed"

    assert run(capsys, folder, folder / "x.sig")[0] == 2  # a folder takes no sidecar
    empty = tmp_path / "empty"
    empty.mkdir()
    code, lines, _ = run(capsys, empty)
    assert (code, lines[0].split(":")[0]) == (1, "Integrity check FAILED")


def write_index(folder: Path, names: list[str], *, complete: bool = True) -> Path:
    """An export index as node.integrity.export writes it (only what the check reads)."""
    index = folder / "1.2.3_index.json"
    data = {"format": "dicom-node-export-index", "version": 2, "complete": complete}
    index.write_text(json.dumps({**data, "files": [{"file": n} for n in names]}))
    return index


def test_folder_without_a_complete_index_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "export"
    records = custody_records(tmp_path)
    files = [make_dicom(folder, f"CT_S1_I{i}_x_export.dcm", seed=i) for i in (1, 2, 3)]
    for dcm in files:
        write_sidecar(dcm, records, AE)
    # Every pair verifies on its own, but no index says the export finished.
    code, lines, _ = run(capsys, folder)
    assert code == 1
    for dcm in files:
        assert f"{dcm.name}: Integrity check FAILED: not in the export index" in lines
    assert lines[-1] == "Integrity check FAILED: 3 of 3 files failed"

    index = write_index(folder, [f.name for f in files], complete=False)
    code, lines, _ = run(capsys, folder)
    assert code == 1
    assert f"{index.name}: Integrity check FAILED: export incomplete" in lines
    assert lines[-1] == "Integrity check FAILED: 1 of 4 files failed"

    index.write_text("{not json")
    code, lines, _ = run(capsys, folder)
    assert code == 1
    assert f"{index.name}: Integrity check FAILED: export index malformed" in lines

    write_index(folder, [f.name for f in files])
    assert run(capsys, folder)[0] == 0


def test_bad_trust_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, [], AE)
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    code, _, err = run(capsys, dcm, "--trust", bogus)
    assert code == 2
    assert "not an X.509 certificate" in err


def test_console_entry_point_runs(tmp_path: Path) -> None:
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, [], AE)
    result = subprocess.run(
        [sys.executable, "-m", "node", "verify-manifest", str(dcm)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Integrity verified"
