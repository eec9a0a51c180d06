"""Helpers for the integrity-manifest tests: a Part 10 file, real audit records, signers.

No tests here; the module is named so that it sits with the tests it serves.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from node.integrity.signer import SidecarKey, SidecarSigner
from node.schema import open_database
from node.storage import audit
from node.storage.audit import AuditEvent, AuditRecord
from tests.helpers import STUDY_UID, ct_dataset, write_part10

KEY_TYPES = ("rsa", "ec-p256", "ec-p384", "ed25519")


def make_dicom(folder: Path, name: str = "CT_S1_I1_0000-001_export.dcm", seed: int = 0) -> Path:
    """A small CT Part 10 file (preamble, file meta, data set with pixel data)."""
    return write_part10(ct_dataset(size=16, seed=seed), folder / name)


def custody_records(folder: Path, sop_uid: str = "1.2.3.4") -> list[AuditRecord]:
    """Records as the node writes them: received, then exported, chained in a real log."""
    engine = open_database(f"sqlite:///{folder / 'audit.sqlite'}")
    try:
        with engine.begin() as conn:
            audit.append(conn, AuditEvent.ASSOCIATION_ACCEPTED, details={"calling_ae": "CT_1"})
            audit.append(
                conn,
                AuditEvent.INSTANCE_STORED,
                study_uid=STUDY_UID,
                sop_instance_uid=sop_uid,
                details={"calling_ae": "CT_1", "sha256": "ab" * 32, "size": 1234},
            )
            audit.append(
                conn,
                AuditEvent.EXPORTED,
                study_uid=STUDY_UID,
                sop_instance_uid=sop_uid,
                details={"path": "/out/x_export.dcm", "user": "alice", "größe": "ü"},
            )
        return audit.records(engine, study_uid=STUDY_UID)
    finally:
        engine.dispose()


def private_key(kind: str) -> SidecarKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def certificate(
    key: SidecarKey,
    cn: str,
    *,
    issuer: tuple[SidecarKey, x509.Certificate] | None = None,
    ca: bool = False,
    start: dt.datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed, or issued by ``issuer`` (key, certificate)."""
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signing_key, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


def make_signer(kind: str, cn: str | None = None) -> SidecarSigner:
    key = private_key(kind)
    return SidecarSigner(key, certificate(key, cn or f"{kind} signer"))


def write_pem(
    folder: Path, signer: SidecarSigner, password: bytes | None = None
) -> tuple[Path, Path]:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path, cert_path = folder / "signer.key.pem", folder / "signer.cert.pem"
    key_path.write_bytes(
        signer.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    cert_path.write_bytes(signer.certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8")
