"""Keys, certificates, trust files and CID 7007 purposes."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from node.errors import UsageError
from node.signatures import PURPOSES, init_keys, load_signer, load_trust, purpose
from node.signatures.keys import certificate_from_dicom, der_length, trim_der
from tests.unit.signature_samples import certificate, rsa_key, write_keys


def test_init_keys_makes_a_private_backdated_rsa3072_pair(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    key_path, cert_path = init_keys(tmp_path / "keys", "Unit Signer")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    signer = load_signer(key_path, cert_path)
    assert isinstance(signer.key, rsa.RSAPrivateKey) and signer.key.key_size == 3072
    assert signer.subject == "CN=Unit Signer"
    assert signer.certificate.not_valid_before_utc <= before - dt.timedelta(seconds=59)
    with pytest.raises(UsageError, match="already exists"):
        init_keys(tmp_path / "keys")


def test_encrypted_key_needs_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_key()
    files = write_keys(tmp_path, key, certificate(key, "Enc"), passphrase=b"s3cret")
    with pytest.raises(UsageError, match="passphrase_env"):
        load_signer(files.key_path, files.cert_path)
    with pytest.raises(UsageError, match="SIGNING_PASS is not set"):
        load_signer(files.key_path, files.cert_path, "SIGNING_PASS")
    monkeypatch.setenv("SIGNING_PASS", "wrong")
    with pytest.raises(UsageError, match="wrong passphrase") as caught:
        load_signer(files.key_path, files.cert_path, "SIGNING_PASS")
    assert "wrong" not in str(caught.value).replace("wrong passphrase", "")
    monkeypatch.setenv("SIGNING_PASS", "s3cret")
    assert load_signer(files.key_path, files.cert_path, "SIGNING_PASS").subject == "CN=Enc"


def test_key_and_certificate_must_match(tmp_path: Path) -> None:
    key = rsa_key()
    files = write_keys(tmp_path, key, certificate(rsa_key(), "Other"))
    with pytest.raises(UsageError, match="does not match"):
        load_signer(files.key_path, files.cert_path)


def test_trust_bundle_and_padded_der(tmp_path: Path) -> None:
    certs = [certificate(rsa_key(), f"CA {n}") for n in range(2)]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    assert [c.subject for c in load_trust([bundle])] == [c.subject for c in certs]
    der = certs[0].public_bytes(Encoding.DER)
    assert der_length(der + b"\0") == len(der)
    assert trim_der(der + b"\0") == der
    assert certificate_from_dicom(der + b"\0") == certs[0]
    assert der_length(bytes([0x30, 0x03, 1, 2, 3, 0])) == 5


def test_all_eighteen_purposes_by_number_and_name() -> None:
    assert len(PURPOSES) == 18
    for number, code in enumerate(PURPOSES, start=1):
        assert purpose(number) is code
        assert purpose(str(number)) is code
        assert purpose(code.meaning) is code
        assert purpose(code.meaning.upper()) is code
    assert purpose("author").meaning == "Author's Signature"
    assert purpose("Transcriptionist/Recorder").value == "4"
    assert purpose("administrative (error/edit)").value == "17"
    item = purpose(14).code_item()
    assert (item.CodeValue, item.CodingSchemeDesignator) == ("14", "ASTM-sigpurpose")
    for bad in ("0", "19", "nonsense"):
        with pytest.raises(UsageError):
            purpose(bad)
