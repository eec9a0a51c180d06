"""Signed manifests: RSA, ECDSA and Ed25519; invalid signatures; trust; key loading."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import UsageError
from node.integrity import Reason, SidecarSigner, load_signer, verify_sidecar, write_sidecar
from node.integrity import sidecar as fmt
from node.integrity.signer import algorithm_for
from tests.unit.test_manifest_support import (
    KEY_TYPES,
    certificate,
    custody_records,
    make_dicom,
    make_signer,
    private_key,
    read_json,
    write_json,
    write_pem,
)

AE = "DICOM_NODE"
EXPECTED_ALGORITHM = {
    "rsa": "RSASSA-PKCS1-v1_5-SHA256",
    "ec-p256": "ECDSA-SHA256",
    "ec-p384": "ECDSA-SHA384",
    "ed25519": "Ed25519",
}


@pytest.fixture(params=KEY_TYPES)
def signed(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, SidecarSigner]:
    signer = make_signer(request.param)
    dcm = make_dicom(tmp_path)
    return dcm, write_sidecar(dcm, custody_records(tmp_path), AE, signer), signer


def edit(sidecar: Path, change: Any) -> None:
    manifest = read_json(sidecar)
    change(manifest)
    write_json(sidecar, manifest)


def test_each_key_type_signs_and_verifies(signed: tuple[Path, Path, SidecarSigner]) -> None:
    dcm, sidecar, signer = signed
    block = read_json(sidecar)["signature"]
    kind = next(k for k, v in EXPECTED_ALGORITHM.items() if v == signer.algorithm)
    assert block["algorithm"] == EXPECTED_ALGORITHM[kind]
    assert block["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    verdict = verify_sidecar(dcm, trust=[signer.certificate], require_signature=True)
    assert verdict.line == "Integrity verified"
    assert (verdict.signer, verdict.trusted) == (signer.subject, True)


def test_signature_covers_the_manifest_without_its_block(
    signed: tuple[Path, Path, SidecarSigner],
) -> None:
    _, sidecar, signer = signed
    m = read_json(sidecar)
    value = base64.b64decode(m["signature"]["value"])
    from node.integrity.signer import verify_signature

    assert verify_signature(signer.certificate, signer.algorithm, fmt.signed_bytes(m), value)
    assert b'"signature"' not in fmt.signed_bytes(m)


def test_forger_who_recomputes_every_hash_breaks_the_signature(
    signed: tuple[Path, Path, SidecarSigner],
) -> None:
    dcm, sidecar, signer = signed
    dcm.write_bytes(dcm.read_bytes() + b"forged")

    def forge(m: dict[str, Any]) -> None:
        m["file"]["size"], m["file"]["sha256"] = fmt.file_digest(dcm)
        m["manifest_sha256"] = fmt.manifest_hash(m)

    edit(sidecar, forge)
    verdict = verify_sidecar(dcm, trust=[signer.certificate])
    assert verdict.line == "Integrity check FAILED: signature invalid"
    assert verdict.signer == signer.subject


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_corrupted_signature_value(tmp_path: Path, kind: str) -> None:
    signer = make_signer(kind)
    dcm = make_dicom(tmp_path)
    sidecar = write_sidecar(dcm, custody_records(tmp_path), AE, signer)

    def flip(m: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(m["signature"]["value"]))
        raw[len(raw) // 2] ^= 0x40
        m["signature"]["value"] = base64.b64encode(raw).decode()

    edit(sidecar, flip)
    assert verify_sidecar(dcm, trust=[signer.certificate]).reason is Reason.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["signature"].update(value="not base64!"),
        lambda m: m["signature"].update(certificate="-----BEGIN CERTIFICATE-----\nxx\n"),
        lambda m: m["signature"].update(certificate="AAAA"),
        lambda m: m["signature"].update(algorithm="RSASSA-PSS-SHA256"),
    ],
    ids=["value", "PEM", "DER", "algorithm"],
)
def test_unreadable_signature_block_is_invalid(
    signed: tuple[Path, Path, SidecarSigner], change: Any
) -> None:
    dcm, sidecar, signer = signed
    edit(sidecar, change)
    verdict = verify_sidecar(dcm, trust=[signer.certificate])
    assert verdict.line == "Integrity check FAILED: signature invalid"


def test_certificate_swapped_for_another(signed: tuple[Path, Path, SidecarSigner]) -> None:
    dcm, sidecar, _ = signed
    other = make_signer("ec-p256", "someone else")
    edit(sidecar, lambda m: m["signature"].update(certificate=other.certificate_pem()))
    verdict = verify_sidecar(dcm, trust=[other.certificate])
    assert verdict.reason is Reason.SIGNATURE_INVALID


def test_signature_removed_while_required(signed: tuple[Path, Path, SidecarSigner]) -> None:
    dcm, sidecar, _ = signed
    edit(sidecar, lambda m: m.pop("signature"))
    assert verify_sidecar(dcm).ok  # the block is optional ...
    verdict = verify_sidecar(dcm, require_signature=True)  # ... unless required
    assert verdict.line == "Integrity check FAILED: signature missing"


def test_untrusted_signer(signed: tuple[Path, Path, SidecarSigner]) -> None:
    dcm, _, signer = signed
    for trust in ([], [make_signer("rsa", "a stranger").certificate]):
        verdict = verify_sidecar(dcm, trust=trust)
        assert verdict.line == "Integrity check FAILED: signer not trusted"
        assert (verdict.signer, verdict.trusted) == (signer.subject, False)


def test_signer_issued_by_a_trusted_ca(tmp_path: Path) -> None:
    ca_key = private_key("ec-p384")
    ca_cert = certificate(ca_key, "Manifest CA", ca=True)
    leaf_key = private_key("ed25519")
    signer = SidecarSigner(leaf_key, certificate(leaf_key, "exporter", issuer=(ca_key, ca_cert)))
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, custody_records(tmp_path), AE, signer)
    assert verify_sidecar(dcm, trust=[ca_cert]).ok
    other_ca = certificate(private_key("ec-p256"), "Manifest CA", ca=True)  # same name only
    assert verify_sidecar(dcm, trust=[other_ca]).reason is Reason.SIGNER_UNTRUSTED


def test_certificate_not_valid_when_the_manifest_was_created(tmp_path: Path) -> None:
    key = private_key("ec-p256")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    signer = SidecarSigner(key, certificate(key, "future", start=later))
    dcm = make_dicom(tmp_path)
    write_sidecar(dcm, [], AE, signer)
    verdict = verify_sidecar(dcm, trust=[signer.certificate])
    assert verdict.reason is Reason.SIGNER_UNTRUSTED
    assert "not valid when the manifest was created" in verdict.detail


def test_snapshot_edit_is_named_even_when_signed(signed: tuple[Path, Path, SidecarSigner]) -> None:
    dcm, sidecar, signer = signed
    edit(sidecar, lambda m: m["audit_snapshot"][0].update(event="nothing"))
    verdict = verify_sidecar(dcm, trust=[signer.certificate])
    assert verdict.reason is Reason.SNAPSHOT_MODIFIED


# --- loading signers ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_load_signer_from_pem(tmp_path: Path, kind: str) -> None:
    signer = make_signer(kind)
    loaded = load_signer(*write_pem(tmp_path, signer))
    assert loaded.algorithm == EXPECTED_ALGORITHM[kind]
    assert loaded.subject == signer.subject


def test_load_encrypted_key_needs_the_passphrase_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path, cert_path = write_pem(tmp_path, make_signer("ed25519"), password=b"s3cret")
    with pytest.raises(UsageError, match="encrypted"):
        load_signer(key_path, cert_path)
    with pytest.raises(UsageError, match="MANIFEST_PASS is not set"):
        load_signer(key_path, cert_path, "MANIFEST_PASS")
    monkeypatch.setenv("MANIFEST_PASS", "wrong")
    with pytest.raises(UsageError, match="wrong passphrase"):
        load_signer(key_path, cert_path, "MANIFEST_PASS")
    monkeypatch.setenv("MANIFEST_PASS", "s3cret")
    assert load_signer(key_path, cert_path, "MANIFEST_PASS").algorithm == "Ed25519"


def test_key_and_certificate_must_match(tmp_path: Path) -> None:
    key_path, _ = write_pem(tmp_path, make_signer("rsa"))
    other = tmp_path / "other.pem"
    other.write_bytes(make_signer("rsa").certificate.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(UsageError, match="does not match"):
        load_signer(key_path, other)


def test_unsupported_curve_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ValueError, match="secp256k1"):
        algorithm_for(key.public_key())
    with pytest.raises(ValueError, match="secp256k1"):
        SidecarSigner(key, certificate(key, "k1"))


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_signer(tmp_path / "none.pem", tmp_path / "none.cert")
