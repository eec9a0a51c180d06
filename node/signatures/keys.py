"""Signing keys and X.509 certificates (PS3.15 C.1: Certificate Type ``X509_1993_SIG``).

The passphrase of an encrypted key is read from an environment variable whose *name* is
configured (``signing.passphrase_env``), so it never appears on a command line or in a log.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from node.errors import NodeError, UsageError

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey
KEY_FILE = "signer.key.pem"
CERT_FILE = "signer.cert.pem"
DEFAULT_SUBJECT = "dicom-node development signer"
# Back-dating avoids "certificate not yet valid at signature creation date" (pitfall 6).
BACKDATE = dt.timedelta(minutes=1)
DEV_VALIDITY = dt.timedelta(days=3 * 365)


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key and the certificate that carries its public key."""

    key: SigningKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if _public_der(self.key.public_key()) != _public_der(self.certificate.public_key()):
            raise UsageError("the private key does not match the certificate")

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def load_signer(key: Path, certificate: Path, passphrase_env: str | None = None) -> Signer:
    """Load a PEM (or DER) key and certificate; see :func:`load_private_key`."""
    return Signer(load_private_key(key, passphrase_env), load_certificate(certificate))


def read_private_key(path: Path, passphrase_env: str | None = None) -> PrivateKeyTypes:
    """Read a PEM or DER private key of any type; an encrypted one needs the passphrase
    variable to be set. Shared by DICOM signatures and integrity manifests."""
    data = _read(path, "signing key")
    passphrase = None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise UsageError(f"{path}: environment variable {passphrase_env} is not set")
        passphrase = value.encode()
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, passphrase)
        return serialization.load_der_private_key(data, passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise UsageError(
                f"{path}: the key is encrypted; name the variable holding its passphrase "
                "in signing.passphrase_env"
            ) from exc
        raise UsageError(f"{path}: the key is not encrypted; unset passphrase_env") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path}: cannot load the key (wrong passphrase or format)") from exc


def load_private_key(path: Path, passphrase_env: str | None = None) -> SigningKey:
    """Load a key that can sign DICOM objects (RSA, ECDSA or DSA)."""
    key = read_private_key(path, passphrase_env)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey):
        raise UsageError(f"{path}: only RSA, ECDSA and DSA keys can sign DICOM objects")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM or DER file."""
    return load_certificates(path)[0]


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a bundle), or the one of a DER file."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise UsageError(f"{path}: not an X.509 certificate") from exc


def load_trust(paths: tuple[Path, ...] | list[Path]) -> list[x509.Certificate]:
    """The trust store: every certificate of every listed file."""
    store: list[x509.Certificate] = []
    for path in paths:
        store.extend(load_certificates(path))
    return store


def der_length(data: bytes) -> int:
    """The length of the DER element at the start of ``data`` (ITU-T X.690 8.1.3)."""
    if len(data) < 2:
        raise ValueError("too short for DER")
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise ValueError("unsupported DER length")
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def trim_der(data: bytes) -> bytes:
    """Cut a padded DER value (odd DER lengths are stored with a 0x00 pad, pitfall 4)."""
    return data[: der_length(data)]


def certificate_from_dicom(value: bytes) -> x509.Certificate:
    """Parse Certificate of Signer (0400,0115), tolerating the even-length pad byte."""
    return x509.load_der_x509_certificate(trim_der(value))


def init_keys(directory: Path, subject: str = DEFAULT_SUBJECT) -> tuple[Path, Path]:
    """Make ``signer.key.pem`` and ``signer.cert.pem`` in ``directory``; refuse to overwrite."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    create_key_pair(key_path, cert_path, subject)
    return key_path, cert_path


def create_key_pair(key_path: Path, cert_path: Path, subject: str = DEFAULT_SUBJECT) -> None:
    """An RSA-3072 key (mode 0600) and a self-signed certificate, back-dated one minute."""
    for path in (key_path, cert_path):
        if path.exists():
            raise UsageError(f"{path} already exists; not overwriting it")
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    certificate = self_signed_certificate(key, subject)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 at once: a chmod after writing would leave a readable window.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def self_signed_certificate(
    key: SigningKey,
    subject: str,
    *,
    not_before: dt.datetime | None = None,
    validity: dt.timedelta = DEV_VALIDITY,
) -> x509.Certificate:
    """A self-signed X.509 v3 signature certificate for ``key``."""
    start = not_before or dt.datetime.now(dt.UTC) - BACKDATE
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    return bytes(
        public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: {what} file not found") from exc
    except OSError as exc:
        raise NodeError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
