"""``dicom-node keys init``, ``sign`` and ``verify``: output and exit statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydicom.sequence import Sequence

from node.cli.main import main
from node.signatures import mac_reference
from tests.conftest import config_dict
from tests.unit.signature_samples import certificate, ct_image, kos, reference_to, rsa_key, save
from tests.unit.signature_samples import write_keys as write_key_files


@pytest.fixture(autouse=True)
def no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Run where config/node.yaml does not exist, with no DICOM_NODE_CONFIG.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DICOM_NODE_CONFIG", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_keys_init_sign_and_verify_without_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "keys", "init", "--dir", "keys", "--subject", "CLI Signer")
    assert status == 0 and "keys/signer.key.pem" in out
    ct = save(ct_image(), tmp_path / "ct.dcm")
    key, cert = "keys/signer.key.pem", "keys/signer.cert.pem"
    status, out, _ = run(
        capsys,
        "sign",
        ct,
        "signed.dcm",
        "--key",
        key,
        "--cert",
        cert,
        "--purpose",
        "5",
        "--mac",
        "SHA384",
    )
    assert status == 0 and "profile=base" in out and "purpose=5 (Verification" in out
    status, out, _ = run(capsys, "verify", "signed.dcm", "--trust", cert)
    assert status == 0, out
    line = out.splitlines()[0]
    for part in (
        "UID=2.25.",
        "purpose=5 (Verification Signature)",
        'signer="CN=CLI Signer"',
        "alg=SHA384",
        "elements=",
        " OK",
    ):
        assert part in line
    assert out.splitlines()[-1] == "signed.dcm: VERIFIED (1 signatures)"
    status, out, _ = run(capsys, "verify", "signed.dcm")
    assert status == 1 and "not trusted" in out and "FAILED" in out.splitlines()[-1]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "verify", "missing.dcm", "--trust", "x.pem")
    assert status == 2 and "no such file" in err
    ct = save(ct_image(), tmp_path / "ct.dcm")
    status, _, err = run(capsys, "sign", ct, "out.dcm", "--key", "k.pem")
    assert status == 2 and "--key and --cert together" in err
    status, _, err = run(capsys, "sign", ct, "out.dcm", "--key", "k.pem", "--cert", "c.pem")
    assert status == 2 and "not found" in err and "Traceback" not in err


def test_tampered_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = rsa_key()
    files = write_key_files(tmp_path / "k", key, certificate(key, "T"))
    ct = save(ct_image(), tmp_path / "ct.dcm")
    assert (
        run(capsys, "sign", ct, "s.dcm", "--key", files.key_path, "--cert", files.cert_path)[0] == 0
    )
    signed = tmp_path / "s.dcm"
    signed.write_bytes(signed.read_bytes().replace(b"Doe^John", b"Doe^Joan"))
    status, out, _ = run(capsys, "verify", signed, "--trust", files.cert_path)
    assert status == 1 and "document corrupted" in out


def test_configuration_defaults_sr_profile_and_refs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_key()
    files = write_key_files(tmp_path / "k", key, certificate(key, "Cfg"), passphrase=b"pw-123")
    monkeypatch.setenv("NODE_KEY_PASS", "pw-123")
    signing = {
        "key": str(files.key_path),
        "certificate": str(files.cert_path),
        "passphrase_env": "NODE_KEY_PASS",
        "create_if_missing": False,
        "mac_algorithm": "SHA512",
    }
    data = config_dict(tmp_path, signing=signing, trust=[str(files.cert_path)])
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(data))
    instance = ct_image()
    stored = save(instance, tmp_path / "store" / "ct.dcm")
    reference = reference_to(instance)
    reference.ReferencedSOPInstanceMACSequence = Sequence([mac_reference(stored)])
    document = save(kos(references=[reference]), tmp_path / "kos.dcm")

    status, out, err = run(capsys, "sign", "-c", config, document, "kos_signed.dcm")
    assert status == 0, err
    assert "profile=sr" in out and "purpose=1 (Author's Signature)" in out and "SHA512" in out
    assert "pw-123" not in out + err
    status, out, _ = run(
        capsys,
        "verify",
        "-c",
        config,
        "kos_signed.dcm",
        "--require-profile",
        "sr",
        "--refs",
        tmp_path / "store",
    )
    assert status == 0, out
    assert f"reference {instance.SOPInstanceUID}: OK" in out
    stored.write_bytes(stored.read_bytes().replace(b"Doe^John", b"Doe^Jack"))
    status, out, _ = run(
        capsys, "verify", "-c", config, "kos_signed.dcm", "--refs", tmp_path / "store"
    )
    assert status == 1 and "MAC mismatch" in out
    status, out, _ = run(capsys, "verify", "-c", config, stored, "--require-profile", "sr")
    assert status == 1
