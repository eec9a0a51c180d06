"""Creating DICOM Digital Signatures (PS3.3 C.12.1.1.3, PS3.15 Annex C).

Each signature gets its own MAC Parameters item with the lowest MAC ID Number not yet
used anywhere in the SOP Instance (the number must be unique within it), as DCMTK does.
By default every signable element of the level is signed, which covers what any profile
requires.

The MAC is computed over the Explicit VR Little Endian encoding that pydicom will write,
taken from a serialisation of the data set (raw elements are copied byte for byte), so
the stored object and its signature agree by construction. Objects stored as Implicit VR
Little Endian are converted to Explicit VR Little Endian first, keeping every value byte
for byte, like ``dcmsign`` does: an implicit-VR object cannot carry a MAC (pitfall 2).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.errors import NodeError, OperationFailed, UsageError
from node.identity import new_uid
from node.signatures import levels
from node.signatures.digests import CREATABLE_ALGORITHMS
from node.signatures.encoding import (
    Encoded,
    EncodingError,
    encode_dataset,
    explicit_bytes,
)
from node.signatures.encoding import read_file as read_encoded
from node.signatures.keys import Signer
from node.signatures.levels import level_facts
from node.signatures.macstream import (
    MAC_PARAMETERS_SEQUENCE,
    append_signature_fields,
    data_stream,
    select,
    signable_tags,
)
from node.signatures.padding import needs_normalising, normalise
from node.signatures.profiles import (
    RSA_PROFILES,
    SR_CLASS_PREFIX,
    Profile,
    format_tags,
    required_tags,
    signing_problems,
)
from node.signatures.purposes import VERIFICATION, Purpose
from node.storage.files import write_atomic

CERTIFICATE_TYPE = "X509_1993_SIG"
_PAD = b"\0"


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """What was signed: enough to report it and to reference it later."""

    uid: str
    mac_id: int
    location: str
    algorithm: str
    elements_signed: int
    purpose: Purpose | None
    signature: bytes = field(repr=False)


def default_profile(ds: Dataset, signer: Signer) -> Profile:
    """SR and KOS get the SR profile (PS3.15 A.4); other objects the Base RSA profile."""
    if not isinstance(signer.key, rsa.RSAPrivateKey):
        return Profile.NONE
    sop_class = str(ds.get("SOPClassUID", ""))
    return Profile.SR if sop_class.startswith(SR_CLASS_PREFIX) else Profile.BASE


def load_for_signing(path: Path) -> Dataset:
    """Read a file so that it can be signed; implicit VR becomes explicit (values kept)."""
    encoded = read_encoded(path)
    if encoded.explicit:
        return dcmread(path)
    meta = read_file_meta_info(path)
    ds = read_dataset(io.BytesIO(explicit_bytes(encoded)), False, True)
    ds.file_meta = FileMetaDataset(meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def sign_dataset(
    ds: Dataset,
    signer: Signer,
    *,
    profile: Profile | None = None,
    purpose: Purpose | None = None,
    mac_algorithm: str = "SHA256",
    item_path: str | None = None,
    tags: Collection[int] | None = None,
    signing_time: dt.datetime | None = None,
) -> SignatureInfo:
    """Add one signature to ``ds`` in memory; save it afterwards with its transfer syntax.

    ``tags`` limits the signed elements (the profile's required ones are added); by
    default every signable element of the level is signed. ``item_path`` signs inside
    an item. The data set must be saved as Explicit VR Little Endian, or in its
    encapsulated or deflated syntax, which is what ``file_meta`` then says.
    """
    if mac_algorithm not in CREATABLE_ALGORITHMS:
        raise UsageError(f"MAC algorithm must be one of {', '.join(CREATABLE_ALGORITHMS)}")
    profile = profile or default_profile(ds, signer)
    if profile in RSA_PROFILES and not isinstance(signer.key, rsa.RSAPrivateKey):
        raise UsageError(f"the {profile} profile needs an RSA key")
    if profile is Profile.SR_VERIFICATION:
        purpose = VERIFICATION
    elif profile is Profile.SR and purpose is None:
        raise UsageError("the SR profile needs a signature purpose (C.4)")
    when = (signing_time or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    _check_certificate(signer, when)
    syntax = _mac_transfer_syntax(ds)

    steps = levels.parse_path(item_path) if item_path else []
    encoded = _encode(ds)
    level = levels.resolve(encoded, steps)
    problems = signing_problems(profile, level_facts(encoded, level, top=not steps))
    if problems:
        raise UsageError("cannot sign: " + "; ".join(problems))
    chosen = _tags_to_sign(level, tags, profile)
    signed_elements = select(level, chosen).elements
    if needs_normalising(encoded, signed_elements):
        # DCMTK drops excess trailing padding on reading (see node.signatures.padding).
        normalise(_dataset_at(ds, steps), encoded, signed_elements)
        encoded = _encode(ds)
        level = levels.resolve(encoded, steps)

    mac_id = _lowest_unused_mac_id(encoded)
    item = Dataset()
    item.MACIDNumber = mac_id
    item.DigitalSignatureUID = new_uid()
    item.DigitalSignatureDateTime = when.strftime("%Y%m%d%H%M%S.%f+0000")
    item.CertificateType = CERTIFICATE_TYPE
    if purpose is not None:
        item.DigitalSignaturePurposeCodeSequence = Sequence([purpose.code_item()])

    stream = data_stream(encoded, select(level, chosen).elements)
    item_encoded = _encode(item)
    append_signature_fields(stream, item_encoded, item_encoded.elements)
    signature = _sign_digest(signer, stream.digest(mac_algorithm), mac_algorithm)

    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    item.CertificateOfSigner = der + _PAD * (len(der) % 2)
    item.Signature = signature
    parameters = Dataset()
    parameters.MACIDNumber = mac_id
    parameters.MACCalculationTransferSyntaxUID = syntax
    parameters.MACAlgorithm = mac_algorithm
    parameters.DataElementsSigned = list(chosen)

    target = _dataset_at(ds, steps)
    _append(target, "MACParametersSequence", parameters)
    _append(target, "DigitalSignaturesSequence", item)
    return SignatureInfo(
        uid=str(item.DigitalSignatureUID),
        mac_id=mac_id,
        location=levels.format_path(steps),
        algorithm=mac_algorithm,
        elements_signed=len(chosen),
        purpose=purpose,
        signature=signature,
    )


def sign_file(source: Path, target: Path, signer: Signer, **options: object) -> SignatureInfo:
    """Sign a file and write the result to ``target`` (replaced atomically).

    Options are those of :func:`sign_dataset`. The written file is read back and the new
    signature verified, so a mismatch between the MAC and the stored bytes cannot go out.
    """
    from node.signatures.verify import verify_file

    ds = load_for_signing(source)
    info = sign_dataset(ds, signer, **options)  # type: ignore[arg-type]
    _write_atomically(ds, target)
    report = verify_file(target, trust=None)
    mine = [s for s in report.signatures if s.uid == info.uid]
    if not mine or not mine[0].mac_ok:
        target.unlink(missing_ok=True)
        raise OperationFailed(f"{target}: the new signature does not verify; file removed")
    return info


def _write_atomically(ds: Dataset, target: Path) -> None:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    write_atomic(target, buffer.getvalue())


def _encode(ds: Dataset) -> Encoded:
    try:
        return encode_dataset(ds)
    except (EncodingError, ValueError) as exc:
        raise NodeError(f"cannot encode the data set for its MAC: {exc}") from exc


def _mac_transfer_syntax(ds: Dataset) -> str:
    """The syntax recorded in (0400,0010): the stored one, always of the explicit LE family."""
    implicit, _ = ds.original_encoding
    if implicit:
        raise UsageError("the data set is Implicit VR; read it with load_for_signing()")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax == ExplicitVRBigEndian:
        raise UsageError("Explicit VR Big Endian objects cannot be signed")
    if syntax in ("", ImplicitVRLittleEndian):
        if meta is not None and syntax:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian  # how it must now be saved
        return str(ExplicitVRLittleEndian)
    return syntax


def _tags_to_sign(level: levels.Level, tags: Collection[int] | None, profile: Profile) -> list[int]:
    signable = signable_tags(level)
    if tags is None:
        return signable
    present = {e.tag for e in level}
    wanted = set(tags) | (required_tags(profile, present) & present)
    bad = sorted(t for t in wanted if t not in signable)
    if bad:
        raise UsageError("cannot sign absent or unsignable elements: " + format_tags(bad))
    return [t for t in signable if t in wanted]


def _lowest_unused_mac_id(encoded: Encoded) -> int:
    used: set[int] = set()
    for place in levels.walk(encoded):
        parameters = levels.find(place.level, MAC_PARAMETERS_SEQUENCE)
        for item in (parameters.items or []) if parameters is not None else []:
            number = levels.find(item, 0x04000005)
            value = levels.unsigned_short(encoded, number) if number is not None else None
            if value is not None:
                used.add(value)
    mac_id = 0
    while mac_id in used:
        mac_id += 1
    if mac_id > 0xFFFF:
        raise UsageError("no MAC ID Number left")
    return mac_id


def _check_certificate(signer: Signer, when: dt.datetime) -> None:
    cert = signer.certificate
    if when < cert.not_valid_before_utc:
        raise UsageError(f"the certificate is not valid before {cert.not_valid_before_utc}")
    if when > cert.not_valid_after_utc:
        raise UsageError(f"the certificate expired on {cert.not_valid_after_utc}")


def _sign_digest(signer: Signer, digest: bytes, algorithm: str) -> bytes:
    """RSASSA-PKCS1-v1_5 for RSA (PS3.15 C.1); DER (r, s), even-padded, for EC and DSA."""
    prehashed = Prehashed(_HASHES[algorithm]())
    key = signer.key
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, padding.PKCS1v15(), prehashed)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        der = key.sign(digest, ec.ECDSA(prehashed))
    elif isinstance(key, dsa.DSAPrivateKey):
        der = key.sign(digest, prehashed)
    else:  # pragma: no cover - Signer accepts only the three types
        raise UsageError("unsupported key type")
    return der + _PAD * (len(der) % 2)


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


def _dataset_at(ds: Dataset, steps: list[levels.Step]) -> Dataset:
    # Indexing converts only the sequences on the path; their items stay raw.
    for tag, index in steps:
        ds = ds[tag].value[index]
    return ds


def _append(ds: Dataset, keyword: str, item: Dataset) -> None:
    if keyword in ds:
        getattr(ds, keyword).append(item)
    else:
        setattr(ds, keyword, Sequence([item]))
