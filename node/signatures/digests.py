"""The six MAC Algorithm Defined Terms (PS3.3 C.12.1.1.3, PS3.15 C.1).

Every validator must accept all six (PS3.15 C.1); the node creates only SHA-2 MACs
(``node.config.MacAlgorithm``). ``cryptography`` has no RIPEMD-160, so digests come from
hashlib and RSA signatures are checked against the PKCS #1 DigestInfo (RFC 8017 9.2).
"""

from __future__ import annotations

import hashlib
from typing import Any

from node.errors import NodeError

# DigestInfo DER prefixes: SEQUENCE { AlgorithmIdentifier, OCTET STRING digest }.
DIGEST_INFO_PREFIX = {
    "RIPEMD160": bytes.fromhex("3021300906052b2403020105000414"),
    "MD5": bytes.fromhex("3020300c06082a864886f70d020505000410"),
    "SHA1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "SHA256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
MAC_ALGORITHMS = tuple(DIGEST_INFO_PREFIX)
CREATABLE_ALGORITHMS = ("SHA256", "SHA384", "SHA512")

_HASHLIB_NAMES = {
    "RIPEMD160": "ripemd160",
    "MD5": "md5",
    "SHA1": "sha1",
    "SHA256": "sha256",
    "SHA384": "sha384",
    "SHA512": "sha512",
}


class UnsupportedAlgorithm(NodeError):
    """A MAC Algorithm that is not one of the six Defined Terms, or not available here."""


def new_hash(algorithm: str) -> Any:
    """A hashlib object for a MAC Algorithm term."""
    name = _HASHLIB_NAMES.get(algorithm)
    if name is None:
        raise UnsupportedAlgorithm(f"unknown MAC Algorithm {algorithm!r}")
    try:
        return hashlib.new(name)
    except ValueError as exc:  # RIPEMD-160 may sit in OpenSSL's legacy provider
        raise UnsupportedAlgorithm(f"{algorithm} is not available in this OpenSSL") from exc


def digest(algorithm: str, data: bytes) -> bytes:
    hasher = new_hash(algorithm)
    hasher.update(data)
    return bytes(hasher.digest())


def digest_size(algorithm: str) -> int:
    return int(new_hash(algorithm).digest_size)
