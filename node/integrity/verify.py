"""Verifying a file against its integrity manifest: one :class:`Verdict`, never an exception.

Checks, in this order; the first that fails gives the reason:

1. the sidecar exists, is strict JSON (no duplicate keys, no NaN), of this format and
   version, with every field of the right type -- else "sidecar missing or malformed";
2. ``manifest_sha256`` matches the manifest -- else "manifest modified";
3. ``audit_snapshot_sha256`` matches the snapshot, every record matches its own chain
   hash, and consecutive records are linked -- else "audit snapshot modified";
4. the manifest names this file -- else "sidecar belongs to another file";
5. the file can be read -- else "file missing or unreadable"; its size and SHA-256 are
   those of the manifest -- else "file hash mismatch";
6. with a signature block: the signature verifies with the certificate it carries --
   else "signature invalid"; that certificate is in the trust store or issued by a CA of
   it, and was valid when the manifest was created -- else "signer not trusted".
   Without one, ``require_signature`` gives "signature missing".

Steps 1-5 only detect accidents: whoever edits the file can recompute every hash. Step 6
is what stops a forger who does not hold a trusted signer's key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from node.integrity import sidecar as fmt
from node.integrity.signer import verify_signature
from node.signatures.verify import is_trusted
from node.storage.audit import record_hash

MAX_SIDECAR_BYTES = 64 << 20  # far above any real snapshot; refuses absurd inputs early
_HEX = frozenset("0123456789abcdef")


class Reason(enum.StrEnum):
    """Why verification failed: the text after ``Integrity check FAILED:``."""

    SIDECAR_MALFORMED = "sidecar missing or malformed"
    MANIFEST_MODIFIED = "manifest modified"
    SNAPSHOT_MODIFIED = "audit snapshot modified"
    OTHER_FILE = "sidecar belongs to another file"
    FILE_MISSING = "file missing or unreadable"
    FILE_HASH = "file hash mismatch"
    SIGNATURE_MISSING = "signature missing"
    SIGNATURE_INVALID = "signature invalid"
    SIGNER_UNTRUSTED = "signer not trusted"
    # Folder checks (node.integrity.folder): the export as a whole.
    INDEX_MALFORMED = "export index malformed"
    EXPORT_INCOMPLETE = "export incomplete"
    NOT_INDEXED = "not in the export index"


VERIFIED = "Integrity verified"
FAILED = "Integrity check FAILED"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one verification.

    ``signer`` is the subject of the certificate in the signature block (None when the
    manifest is unsigned or the block unreadable); ``trusted`` is known only once the
    signature itself verified.
    """

    reason: Reason | None
    detail: str = ""
    signer: str | None = None
    trusted: bool | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def signed(self) -> bool:
        return self.signer is not None

    @property
    def line(self) -> str:
        """Exactly ``Integrity verified`` or ``Integrity check FAILED: <reason>``."""
        return VERIFIED if self.reason is None else f"{FAILED}: {self.reason}"


class _Fail(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def verify_sidecar(
    dcm_path: Path,
    sidecar_path: Path | None = None,
    *,
    trust: Sequence[x509.Certificate] = (),
    require_signature: bool = False,
) -> Verdict:
    """Verify ``dcm_path`` against its sidecar (default: ``<dcm_path>.sig`` beside it)."""
    sidecar = sidecar_path or fmt.sidecar_path(dcm_path)
    try:
        manifest = _load(sidecar)
        _check_manifest(manifest)
        _check_snapshot(manifest["audit_snapshot"], manifest["audit_snapshot_sha256"])
        _check_file(dcm_path, manifest["file"])
        return _check_signature(manifest, trust, require_signature)
    except _Fail as failure:
        return Verdict(failure.reason, failure.detail)
    except Exception as exc:  # a verifier answers FAILED, never a traceback
        return Verdict(Reason.SIDECAR_MALFORMED, f"unexpected content: {type(exc).__name__}")


def _load(sidecar: Path) -> dict[str, Any]:
    try:
        if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
            raise _Fail(Reason.SIDECAR_MALFORMED, f"{sidecar} is implausibly large")
        raw = sidecar.read_bytes()
    except FileNotFoundError as exc:
        raise _Fail(Reason.SIDECAR_MALFORMED, f"{sidecar} not found") from exc
    except OSError as exc:
        raise _Fail(Reason.SIDECAR_MALFORMED, f"{sidecar}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Fail(Reason.SIDECAR_MALFORMED, f"{sidecar} is not valid JSON: {exc}") from exc
    _check_structure(value)
    return value  # type: ignore[no-any-return]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key would let a reader and the verifier see different manifests.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _malformed(detail: str) -> _Fail:
    return _Fail(Reason.SIDECAR_MALFORMED, detail)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_structure(m: object) -> None:
    if not isinstance(m, dict):
        raise _malformed("the sidecar is not a JSON object")
    if m.get("format") != fmt.FORMAT:
        raise _malformed(f"format is not {fmt.FORMAT!r}")
    if not _is_int(m.get("version")) or m["version"] != fmt.VERSION:
        raise _malformed(
            f"unsupported version {m.get('version')!r} (this node reads {fmt.VERSION})"
        )
    if m.get("algorithm") != fmt.ALGORITHM:
        raise _malformed(f"algorithm is not {fmt.ALGORITHM}")
    file = m.get("file")
    if not (
        isinstance(file, dict)
        and isinstance(file.get("name"), str)
        and _is_int(file.get("size"))
        and _is_hex64(file.get("sha256"))
    ):
        raise _malformed("file must hold name, size and a SHA-256")
    if not isinstance(m.get("audit_snapshot"), list):
        raise _malformed("audit_snapshot must be a list of records")
    for key in ("audit_snapshot_sha256", "manifest_sha256"):
        if not _is_hex64(m.get(key)):
            raise _malformed(f"{key} must be 64 lowercase hex digits")
    for key in ("created", "ae_title"):
        if not isinstance(m.get(key), str):
            raise _malformed(f"{key} must be a string")
    if _created(m) is None:
        raise _malformed("created is not an ISO 8601 date-time")
    block = m.get("signature")
    if block is not None and not (
        isinstance(block, dict)
        and all(isinstance(block.get(k), str) for k in ("algorithm", "certificate", "value"))
    ):
        raise _malformed("signature must hold algorithm, certificate and value strings")


def _created(m: Mapping[str, Any]) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(m["created"])
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _check_manifest(m: Mapping[str, Any]) -> None:
    if fmt.manifest_hash(m) != m["manifest_sha256"]:
        raise _Fail(Reason.MANIFEST_MODIFIED, "manifest_sha256 does not match the manifest")


def _check_snapshot(snapshot: list[Any], expected: str) -> None:
    if fmt.snapshot_hash(snapshot) != expected:
        raise _Fail(Reason.SNAPSHOT_MODIFIED, "the snapshot does not match audit_snapshot_sha256")
    # The hash matched, so the records are as written; a record that does not match its
    # own chain hash was rewritten together with both manifest hashes.
    previous: Mapping[str, Any] | None = None
    for position, rec in enumerate(snapshot):
        if not _record_consistent(rec):
            raise _Fail(Reason.SNAPSHOT_MODIFIED, f"record {position + 1} does not match its hash")
        if (
            previous is not None
            and rec["seq"] == previous["seq"] + 1
            and rec["prev_hash"] != previous["hash"]
        ):
            raise _Fail(
                Reason.SNAPSHOT_MODIFIED, f"record seq {rec['seq']} is not linked to the one before"
            )
        previous = rec


def _record_consistent(rec: object) -> bool:
    if not isinstance(rec, dict) or not _is_int(rec.get("seq")):
        return False
    if not isinstance(rec.get("details"), dict) or not _is_hex64(rec.get("prev_hash")):
        return False
    computed = record_hash(
        rec["seq"],
        rec.get("recorded_at"),  # type: ignore[arg-type]
        rec.get("event"),  # type: ignore[arg-type]
        rec.get("study_uid"),
        rec.get("sop_instance_uid"),
        rec["details"],
        rec["prev_hash"],
    )
    return computed == rec.get("hash")


def _check_file(dcm_path: Path, described: Mapping[str, Any]) -> None:
    if described["name"] != dcm_path.name:
        raise _Fail(
            Reason.OTHER_FILE,
            f"the manifest describes {described['name']!r}, not {dcm_path.name!r}",
        )
    try:
        size, digest = fmt.file_digest(dcm_path)
    except OSError as exc:
        raise _Fail(Reason.FILE_MISSING, f"{dcm_path}: {exc.strerror or exc}") from exc
    if size != described["size"]:
        raise _Fail(
            Reason.FILE_HASH, f"size is {size} bytes, the manifest says {described['size']}"
        )
    if digest != described["sha256"]:
        raise _Fail(
            Reason.FILE_HASH, f"SHA-256 is {digest}, the manifest says {described['sha256']}"
        )


def _check_signature(
    m: Mapping[str, Any], trust: Sequence[x509.Certificate], require_signature: bool
) -> Verdict:
    block = m.get("signature")
    if block is None:
        if require_signature:
            raise _Fail(Reason.SIGNATURE_MISSING, "the manifest is unsigned")
        return Verdict(None, "unsigned: detects corruption, not a deliberate forger")
    certificate = _certificate(block["certificate"])
    signer = certificate.subject.rfc4514_string()
    try:
        value = base64.b64decode(block["value"], validate=True)
    except (binascii.Error, ValueError):
        return Verdict(Reason.SIGNATURE_INVALID, "the signature value is not base64", signer)
    if not verify_signature(certificate, block["algorithm"], fmt.signed_bytes(m), value):
        return Verdict(
            Reason.SIGNATURE_INVALID, "the signature does not match the manifest", signer
        )
    problem = _trust_problem(certificate, _created(m), trust)
    if problem:
        return Verdict(Reason.SIGNER_UNTRUSTED, problem, signer, trusted=False)
    return Verdict(None, "", signer, trusted=True)


def _certificate(text: str) -> x509.Certificate:
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise _Fail(
            Reason.SIGNATURE_INVALID, "the certificate in the signature block cannot be read"
        ) from exc


def _trust_problem(
    certificate: x509.Certificate, created: dt.datetime | None, trust: Sequence[x509.Certificate]
) -> str | None:
    if not is_trusted(certificate, trust):
        return "not in the trust store and not issued by a trusted CA"
    if created is None or not (
        certificate.not_valid_before_utc <= created <= certificate.not_valid_after_utc
    ):
        return "the certificate was not valid when the manifest was created"
    return None
