"""Asymmetric signatures of integrity manifests: RSA, ECDSA and Ed25519.

Algorithms (the ``algorithm`` field of the signature block names one of them):

- ``RSASSA-PKCS1-v1_5-SHA256``: RSA keys. PKCS #1 v1.5 rather than PSS because it is
  deterministic and is what the node's DICOM RSA signatures use; PSS is not accepted.
- ``ECDSA-SHA256`` / ``ECDSA-SHA384`` / ``ECDSA-SHA512``: EC keys on P-256 / P-384 /
  P-521 respectively (the hash follows the curve size); the value is the DER
  ``ECDSA-Sig-Value``.
- ``Ed25519``: the pure EdDSA signature of the bytes (no pre-hash).

The verifier takes the algorithm from the block but checks that it is the one the
certificate's key type and curve call for, so a block cannot pick a weaker variant.

The node's DICOM key loader (:mod:`node.signatures.keys`) rejects Ed25519 because DICOM
signatures have no Ed25519 profile; manifests do, hence the small loader here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from node.errors import UsageError
from node.signatures.keys import load_certificate, read_private_key

SidecarKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

RSA_PKCS1_SHA256 = "RSASSA-PKCS1-v1_5-SHA256"
ED25519 = "Ed25519"
_EC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def algorithm_for(key: PublicKey) -> str:
    """The one signature algorithm a public key is used with (ValueError if unsupported)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_PKCS1_SHA256
    if isinstance(key, ec.EllipticCurvePublicKey):
        hash_type = _EC_HASHES.get(key.curve.name)
        if hash_type is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported (P-256, P-384, P-521)")
        return f"ECDSA-{hash_type().name.upper()}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ED25519
    raise ValueError(f"{type(key).__name__} keys cannot sign manifests")


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:  # pragma: no cover - every supported key has it
        return b""
    return bytes(
        public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass(frozen=True, slots=True)
class SidecarSigner:
    """A private key and the X.509 certificate of its public key."""

    key: SidecarKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if _public_der(self.key.public_key()) != _public_der(self.certificate.public_key()):
            raise UsageError("the signing key does not match its certificate")
        algorithm_for(self.key.public_key())  # refuse unsupported curves at load time

    @property
    def algorithm(self) -> str:
        return algorithm_for(self.key.public_key())

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(_EC_HASHES[key.curve.name]()))
        return key.sign(data)


def verify_signature(
    certificate: x509.Certificate, algorithm: str, data: bytes, value: bytes
) -> bool:
    """True when ``value`` is a valid ``algorithm`` signature of ``data`` by the certificate."""
    key = certificate.public_key()
    try:
        if not isinstance(
            key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        ):
            return False
        if algorithm != algorithm_for(key):
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(value, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(value, data, ec.ECDSA(_EC_HASHES[key.curve.name]()))
        else:
            key.verify(value, data)
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def load_signer(
    key_path: Path, cert_path: Path, passphrase_env: str | None = None
) -> SidecarSigner:
    """Load a PEM or DER private key (RSA, EC or Ed25519) and its certificate."""
    key = read_private_key(key_path, passphrase_env)
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise UsageError(f"{key_path}: only RSA, ECDSA and Ed25519 keys can sign manifests")
    try:
        return SidecarSigner(key, load_certificate(cert_path))
    except ValueError as exc:  # an unsupported curve
        raise UsageError(f"{key_path}: {exc}") from exc
