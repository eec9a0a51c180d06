"""Test-time keys and certificates (nothing is committed): a CA and leaves it signs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Issued:
    key: Path
    cert: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def make_ca(
    folder: Path, cn: str = "Test CA"
) -> tuple[Issued, rsa.RSAPrivateKey, x509.Certificate]:
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    paths = Issued(folder / "ca.key.pem", folder / "ca.cert.pem")
    _write_key(key, paths.key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths, key, cert


def issue(
    folder: Path,
    name: str,
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    *,
    valid_from: dt.timedelta = dt.timedelta(minutes=-5),
    valid_for: dt.timedelta = dt.timedelta(days=1, minutes=5),
) -> Issued:
    """A leaf signed by the CA, valid from ``now + valid_from`` for ``valid_for``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.UTC) + valid_from
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Issued(folder / f"{name}.key.pem", folder / f"{name}.cert.pem")
    _write_key(key, paths.key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths
