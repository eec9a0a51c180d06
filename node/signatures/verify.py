"""Verifying every DICOM Digital Signature of an object (PS3.3 C.12.1.1.3, PS3.15 C.1).

For each Digital Signatures Sequence item, at every level (PS3.3 C.12.1.1.3.1, DCMTK's
``verifyCurrent``): find the MAC Parameters item with its MAC ID Number, rebuild the MAC
stream from the listed elements as stored, append the signed fields of the item, hash,
and check the Signature with the public key of Certificate of Signer. Then check that the
Digital Signature DateTime lies within the certificate's validity, that the certificate is
valid now and chains to the trust store, and, when asked, that a profile is satisfied.

Signatures inside the Original Attributes Sequence are history copies and are skipped with
a note, as DCMTK does. All six MAC algorithms verify; RSA (PKCS #1 v1.5), ECDSA and DSA
signatures are accepted, the last two only outside the RSA profiles.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydicom.dataset import Dataset

from node.signatures import levels
from node.signatures.digests import DIGEST_INFO_PREFIX, UnsupportedAlgorithm
from node.signatures.encoding import NON_MAC_SYNTAXES, Encoded, encode_dataset, read_file
from node.signatures.keys import certificate_from_dicom, trim_der
from node.signatures.levels import level_facts
from node.signatures.macstream import (
    MAC_PARAMETERS_SEQUENCE,
    Stream,
    append_signature_fields,
    data_stream,
    select,
)
from node.signatures.profiles import Profile, format_tags, profile_problems

DIGITAL_SIGNATURES_SEQUENCE = 0xFFFAFFFA
MAC_ID, MAC_SYNTAX, MAC_ALGORITHM, ELEMENTS_SIGNED = 0x04000005, 0x04000010, 0x04000015, 0x04000020
SIGNATURE_UID, SIGNATURE_DATETIME = 0x04000100, 0x04000105
CERTIFICATE, SIGNATURE, PURPOSE_SEQUENCE = 0x04000115, 0x04000120, 0x04000401
CODE_VALUE, CODE_MEANING = 0x00080100, 0x00080104
CORRUPTED = "signature is invalid (document corrupted)"

# Hashes by digest size, to verify EC/DSA over a digest (RIPEMD-160 uses SHA-1's size).
_SAME_SIZE: dict[str, type[hashes.HashAlgorithm]] = {
    "RIPEMD160": hashes.SHA1, "MD5": hashes.MD5, "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512,
}  # fmt: skip


@dataclass(slots=True)
class SignatureResult:
    """One signature: who, what, and every problem found (none means verified)."""

    location: str
    uid: str
    top_level: bool
    mac_id: int | None = None
    purpose_code: str | None = None
    purpose_meaning: str | None = None
    signer: str | None = None
    algorithm: str | None = None
    elements_signed: int = 0
    signed_tags: list[int] = field(default_factory=list)
    signature: bytes = field(default=b"", repr=False)
    is_rsa: bool = False
    mac_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mac_ok and not self.problems

    @property
    def purpose(self) -> str:
        if self.purpose_code is None:
            return "-"
        return f"{self.purpose_code} ({self.purpose_meaning or '?'})"


@dataclass(slots=True)
class VerificationReport:
    """All signatures of one object, and the verdict."""

    signatures: list[SignatureResult]
    notes: list[str] = field(default_factory=list)
    required_profile: Profile | None = None
    profile_problems: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"{s.uid}: {p}" for s in self.signatures for p in s.problems]
        if not self.signatures:
            found.append("no digital signature")
        return found + self.profile_problems

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_file(
    path: Path,
    *,
    trust: Sequence[x509.Certificate] | None,
    require_profile: Profile | None = None,
    now: dt.datetime | None = None,
) -> VerificationReport:
    """Verify every signature of a stored file, from its bytes.

    ``trust=None`` skips the chain check (used right after signing); an empty list
    trusts nothing.
    """
    return verify_encoded(read_file(path), trust=trust, require_profile=require_profile, now=now)


def verify_dataset(
    ds: Dataset,
    *,
    trust: Sequence[x509.Certificate] | None,
    require_profile: Profile | None = None,
    now: dt.datetime | None = None,
) -> VerificationReport:
    """Verify a data set in memory (serialised as pydicom writes it; raw values as read)."""
    return verify_encoded(encode_dataset(ds), trust=trust, require_profile=require_profile, now=now)


def verify_encoded(
    encoded: Encoded,
    *,
    trust: Sequence[x509.Certificate] | None,
    require_profile: Profile | None = None,
    now: dt.datetime | None = None,
) -> VerificationReport:
    now = now or dt.datetime.now(dt.UTC)
    report = VerificationReport([], required_profile=require_profile)
    for place in levels.walk(encoded):
        signatures = levels.find(place.level, DIGITAL_SIGNATURES_SEQUENCE)
        if signatures is None or not signatures.items:
            continue
        where = levels.format_path(place.steps)
        if place.in_original_attributes:
            report.notes.append(f"{where}: signatures in Original Attributes Sequence skipped")
            continue
        for item in signatures.items:
            result = _verify_one(encoded, place, item)
            if result.mac_ok:
                _check_certificate(encoded, item, result, trust, now)
            report.signatures.append(result)
    if require_profile is not None:
        report.profile_problems = _profile_verdict(encoded, report, require_profile)
    return report


def signature_stream(encoded: Encoded, uid: str) -> bytes:
    """The exact MAC stream of an existing signature (what ``dcmsign --dump`` writes)."""
    for place in levels.walk(encoded):
        signatures = levels.find(place.level, DIGITAL_SIGNATURES_SEQUENCE)
        for item in (signatures.items or []) if signatures is not None else []:
            if levels.text(encoded, item, SIGNATURE_UID) == uid:
                parameters = _parameters(encoded, place.level, _mac_id(encoded, item))
                if parameters is None:
                    break
                signed = levels.find(parameters, ELEMENTS_SIGNED)
                tags = levels.attribute_tags(encoded, signed) if signed is not None else []
                stream = data_stream(encoded, select(place.level, tags).elements)
                append_signature_fields(stream, encoded, item)
                return stream.to_bytes()
    raise KeyError(uid)


def _verify_one(encoded: Encoded, place: levels.LevelAt, item: levels.Level) -> SignatureResult:
    uid = levels.text(encoded, item, SIGNATURE_UID) or "(no Digital Signature UID)"
    result = SignatureResult(levels.format_path(place.steps), uid, not place.steps)
    signature = levels.find(item, SIGNATURE)
    result.signature = encoded.value(signature) if signature is not None else b""
    _read_purpose(encoded, item, result)
    result.mac_id = _mac_id(encoded, item)
    parameters = _parameters(encoded, place.level, result.mac_id)
    if parameters is None:
        result.problems.append(f"no MAC Parameters item with MAC ID Number {result.mac_id}")
        return result
    result.algorithm = levels.text(encoded, parameters, MAC_ALGORITHM)
    syntax = levels.text(encoded, parameters, MAC_SYNTAX)
    signed = levels.find(parameters, ELEMENTS_SIGNED)
    if signed is None or signed.vr != "AT" or signed.value_end == signed.value_start:
        result.problems.append("Data Elements Signed is absent, empty or not AT")
        return result
    if not syntax or syntax in NON_MAC_SYNTAXES:
        result.problems.append(f"MAC Calculation Transfer Syntax {syntax!r} is not allowed")
        return result
    result.signed_tags = levels.attribute_tags(encoded, signed)
    selection = select(place.level, result.signed_tags)
    result.elements_signed = len(result.signed_tags)
    if selection.unsignable:
        result.problems.append(
            "listed elements are unsignable now (UN?): " + format_tags(selection.unsignable)
        )
        return result
    stream = data_stream(encoded, selection.elements)
    append_signature_fields(stream, encoded, item)
    try:
        certificate = _certificate(encoded, item)
        result.signer = certificate.subject.rfc4514_string()
        result.is_rsa = isinstance(certificate.public_key(), rsa.RSAPublicKey)
        result.mac_ok = _signature_valid(
            certificate, stream, result.algorithm or "", result.signature
        )
    except (UnsupportedAlgorithm, ValueError) as exc:
        result.problems.append(str(exc))
        return result
    if not result.mac_ok:
        detail = (
            f"; listed but absent: {format_tags(selection.missing)}" if selection.missing else ""
        )
        result.problems.append(CORRUPTED + detail)
    return result


def _read_purpose(encoded: Encoded, item: levels.Level, result: SignatureResult) -> None:
    purposes = levels.find(item, PURPOSE_SEQUENCE)
    if purposes is not None and purposes.items:
        code = purposes.items[0]
        result.purpose_code = levels.text(encoded, code, CODE_VALUE)
        result.purpose_meaning = levels.text(encoded, code, CODE_MEANING)


def _mac_id(encoded: Encoded, item: levels.Level) -> int | None:
    element = levels.find(item, MAC_ID)
    return levels.unsigned_short(encoded, element) if element is not None else None


def _parameters(encoded: Encoded, level: levels.Level, mac_id: int | None) -> levels.Level | None:
    sequence = levels.find(level, MAC_PARAMETERS_SEQUENCE)
    if sequence is None or mac_id is None:
        return None
    for item in sequence.items or []:
        if _mac_id(encoded, item) == mac_id:
            return item
    return None


def _certificate(encoded: Encoded, item: levels.Level) -> x509.Certificate:
    element = levels.find(item, CERTIFICATE)
    if element is None:
        raise ValueError("no Certificate of Signer")
    try:
        return certificate_from_dicom(encoded.value(element))
    except ValueError as exc:
        raise ValueError(f"Certificate of Signer is not an X.509 certificate: {exc}") from exc


def _signature_valid(
    certificate: x509.Certificate, stream: Stream, algorithm: str, signature: bytes
) -> bool:
    """PKCS #1 v1.5 DigestInfo compare for RSA (works for RIPEMD-160, pitfall 5); DER for EC."""
    digest = stream.digest(algorithm)
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            recovered = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
            return hmac.compare_digest(recovered, DIGEST_INFO_PREFIX[algorithm] + digest)
        prehashed = Prehashed(_SAME_SIZE[algorithm]())
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(trim_der(signature), digest, ec.ECDSA(prehashed))
            return True
        if isinstance(key, dsa.DSAPublicKey):
            key.verify(trim_der(signature), digest, prehashed)
            return True
    except (InvalidSignature, ValueError):
        return False
    raise ValueError(f"unsupported public key type {type(key).__name__}")


def _check_certificate(
    encoded: Encoded,
    item: levels.Level,
    result: SignatureResult,
    trust: Sequence[x509.Certificate] | None,
    now: dt.datetime,
) -> None:
    certificate = _certificate(encoded, item)
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    signed_at = parse_datetime(levels.text(encoded, item, SIGNATURE_DATETIME) or "")
    if signed_at is None:
        result.problems.append("Digital Signature DateTime is absent or invalid")
    elif signed_at < start:
        result.problems.append("certificate was not yet valid at signature creation date")
    elif signed_at > end:
        result.problems.append("certificate had expired at signature creation date")
    if trust is None:
        return
    if now > end:
        result.problems.append(f"certificate expired on {end:%Y-%m-%d %H:%M:%S} UTC")
    elif now < start:
        result.problems.append(f"certificate is not valid before {start:%Y-%m-%d %H:%M:%S} UTC")
    if not is_trusted(certificate, trust):
        result.problems.append(
            "certificate is not trusted (not in the trust store and not issued by a trusted CA)"
        )


def is_trusted(certificate: x509.Certificate, trust: Sequence[x509.Certificate]) -> bool:
    """The certificate is in the store, or a CA certificate of the store issued it."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    for anchor in trust:
        if anchor.public_bytes(serialization.Encoding.DER) == der:
            return True
    for anchor in trust:
        if anchor.subject != certificate.issuer or not _is_ca(anchor):
            continue
        try:
            certificate.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return certificate.version is x509.Version.v1  # legacy roots carry no extensions
    return bool(constraints.value.ca)


def parse_datetime(value: str) -> dt.datetime | None:
    """A DT value (PS3.5 6.2) in UTC; without an offset it is taken as UTC."""
    text = value.strip()
    offset = dt.timedelta(0)
    if len(text) >= 5 and text[-5] in "+-" and text[-4:].isdigit():
        sign = 1 if text[-5] == "+" else -1
        offset = sign * dt.timedelta(hours=int(text[-4:-2]), minutes=int(text[-2:]))
        text = text[:-5]
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) < 4 or len(whole) > 14 or len(whole) % 2:
        return None
    padded = whole + "0101000000"[len(whole) - 4 :]
    try:
        moment = dt.datetime.strptime(padded, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    return (moment + dt.timedelta(microseconds=micro) - offset).replace(tzinfo=dt.UTC)


def _profile_verdict(encoded: Encoded, report: VerificationReport, wanted: Profile) -> list[str]:
    """At least one verified top-level signature must satisfy the profile.

    Like dcmsign ``+rs``, an SR whose Verification Flag is VERIFIED needs the SR
    verification profile (C.4: purpose 5 covering the verification attributes).
    """
    facts = level_facts(encoded, encoded.elements, top=True)
    if wanted is Profile.SR and facts.verification_flag == "VERIFIED":
        wanted = Profile.SR_VERIFICATION
    problems: list[str] = []
    if wanted in (Profile.SR, Profile.SR_VERIFICATION):
        bare = [s.uid for s in report.signatures if s.purpose_code is None]
        if bare:
            problems.append("signatures without purpose code (C.4): " + ", ".join(bare))
    best: list[str] | None = None
    for result in report.signatures:
        if not (result.top_level and result.ok):
            continue
        found = profile_problems(
            wanted,
            facts,
            signed=result.signed_tags,
            algorithm=result.algorithm or "",
            is_rsa=result.is_rsa,
            purpose_code=result.purpose_code,
        )
        if not found:
            return problems
        best = best if best is not None and len(best) <= len(found) else found
    detail = "; ".join(best) if best else "no verified signature in the main data set"
    return [*problems, f"no signature satisfies the {wanted} profile: {detail}"]
