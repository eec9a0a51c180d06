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

A signature in the main data set is made from one encoding (:mod:`.dsencode`, which
writes pydicom's bytes) walked by :mod:`.rawscan`; :func:`sign_encoded` also returns that
encoding with the new sequences inserted, so a caller stores exactly the signed bytes
without encoding a large document again. Signing inside an item, normalising padding and
adding to existing signatures take the general path over the parsed tree.
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
from node.signatures import levels, rawscan
from node.signatures.digests import CREATABLE_ALGORITHMS, new_hash
from node.signatures.dsencode import encode_explicit_le
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
    Stream,
    append_signature_fields,
    data_stream,
    select,
    signable_tags,
)
from node.signatures.padding import needs_normalising, normalise
from node.signatures.profiles import (
    RSA_PROFILES,
    SOP_CLASS_UID,
    SR_CLASS_PREFIX,
    VERIFICATION_FLAG,
    VERIFYING_OBSERVERS,
    LevelFacts,
    Profile,
    format_tags,
    required_tags,
    signing_problems,
)
from node.signatures.purposes import VERIFICATION, Purpose
from node.storage.files import write_atomic

CERTIFICATE_TYPE = "X509_1993_SIG"
DIGITAL_SIGNATURES_SEQUENCE = 0xFFFAFFFA
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
    request = _request(ds, signer, profile, purpose, mac_algorithm, signing_time)
    if not item_path:
        fast = _sign_main_fast(ds, signer, request, tags)
        if fast is not None:
            return fast[0]
    return _sign_general(ds, signer, request, item_path, tags)


def sign_encoded(
    ds: Dataset,
    signer: Signer,
    *,
    profile: Profile | None = None,
    purpose: Purpose | None = None,
    mac_algorithm: str = "SHA256",
    tags: Collection[int] | None = None,
    signing_time: dt.datetime | None = None,
) -> tuple[SignatureInfo, bytes]:
    """Sign the main data set like :func:`sign_dataset`, and return the bytes to store.

    The bytes are the signed data set in Explicit VR Little Endian, File Meta excluded,
    exactly as pydicom would write ``ds`` now. The data set is encoded once: the MAC is
    computed over those bytes and the new MAC Parameters and Digital Signatures Sequences
    are inserted into them, so what is stored is what was signed.
    """
    request = _request(ds, signer, profile, purpose, mac_algorithm, signing_time)
    fast = _sign_main_fast(ds, signer, request, tags)
    if fast is not None:
        return fast
    info = _sign_general(ds, signer, request, None, tags)
    return info, _encode_bytes(ds)


@dataclass(frozen=True, slots=True)
class _Request:
    """A checked signing request: what profile, purpose, algorithm, time and MAC syntax."""

    profile: Profile
    purpose: Purpose | None
    algorithm: str
    when: dt.datetime
    syntax: str


def _request(
    ds: Dataset,
    signer: Signer,
    profile: Profile | None,
    purpose: Purpose | None,
    mac_algorithm: str,
    signing_time: dt.datetime | None,
) -> _Request:
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
    return _Request(profile, purpose, mac_algorithm, when, _mac_transfer_syntax(ds))


def _sign_general(
    ds: Dataset,
    signer: Signer,
    request: _Request,
    item_path: str | None,
    tags: Collection[int] | None,
) -> SignatureInfo:
    """Any level, from the parsed tree; normalises excess padding first (see padding)."""
    steps = levels.parse_path(item_path) if item_path else []
    encoded = _encode(ds)
    level = levels.resolve(encoded, steps)
    problems = signing_problems(request.profile, level_facts(encoded, level, top=not steps))
    if problems:
        raise UsageError("cannot sign: " + "; ".join(problems))
    chosen = _tags_to_sign(signable_tags(level), {e.tag for e in level}, tags, request.profile)
    signed_elements = select(level, chosen).elements
    if needs_normalising(encoded, signed_elements):
        # DCMTK drops excess trailing padding on reading (see node.signatures.padding).
        normalise(_dataset_at(ds, steps), encoded, signed_elements)
        encoded = _encode(ds)
        level = levels.resolve(encoded, steps)

    mac_id = _lowest_unused_mac_id(encoded)
    item = _signature_item(mac_id, request)
    stream = data_stream(encoded, select(level, chosen).elements)
    item_encoded = _encode(item)
    append_signature_fields(stream, item_encoded, item_encoded.elements)
    signature = _sign_digest(signer, stream.digest(request.algorithm), request.algorithm)
    parameters = _complete(item, signer, signature, mac_id, request, chosen)
    target = _dataset_at(ds, steps)
    _append(target, "MACParametersSequence", parameters)
    _append(target, "DigitalSignaturesSequence", item)
    return _info(item, mac_id, levels.format_path(steps), request, chosen, signature)


def _sign_main_fast(
    ds: Dataset, signer: Signer, request: _Request, tags: Collection[int] | None
) -> tuple[SignatureInfo, bytes] | None:
    """The main level from one encoding of ``ds``; None where the general path must sign.

    That is when the bytes need the general parser, when a signed string value has excess
    padding to normalise, or when the object already carries MAC Parameters (the new MAC
    ID Number must avoid theirs) or signatures in its main data set.
    """
    data = _encode_bytes(ds)
    try:
        scanned = rawscan.scan(data, check_padding=True)
    except rawscan.NotFast:
        return None
    if (
        scanned.nested_mac_parameters
        or scanned.index(MAC_PARAMETERS_SEQUENCE) is not None
        or scanned.index(DIGITAL_SIGNATURES_SEQUENCE) is not None
    ):
        return None
    facts = LevelFacts(
        present=frozenset(scanned.tags),
        top_level=True,
        sop_class_uid=scanned.text(SOP_CLASS_UID) or "",
        verification_flag=scanned.text(VERIFICATION_FLAG),
        verifying_observers=scanned.item_count(VERIFYING_OBSERVERS),
    )
    problems = signing_problems(request.profile, facts)
    if problems:
        raise UsageError("cannot sign: " + "; ".join(problems))
    chosen = _tags_to_sign(scanned.signable_tags(), facts.present, tags, request.profile)
    selected = scanned.select(chosen)[0]
    if any(i in scanned.padded for i in selected):
        return None

    mac_id = 0  # no MAC Parameters anywhere in the object
    item = _signature_item(mac_id, request)
    hasher = new_hash(request.algorithm)
    for piece in scanned.pieces(selected):
        hasher.update(piece)
    item_encoded = _encode(item)
    fields = Stream()
    append_signature_fields(fields, item_encoded, item_encoded.elements)
    for piece in fields.finish().pieces:
        hasher.update(piece)
    signature = _sign_digest(signer, bytes(hasher.digest()), request.algorithm)
    parameters = _complete(item, signer, signature, mac_id, request, chosen)
    stored = _insert_signature(ds, scanned, parameters, item)
    _append(ds, "MACParametersSequence", parameters)
    _append(ds, "DigitalSignaturesSequence", item)
    return _info(item, mac_id, levels.format_path([]), request, chosen, signature), stored


def _insert_signature(
    ds: Dataset, scanned: rawscan.Scanned, parameters: Dataset, item: Dataset
) -> bytes:
    """The data set's bytes with the two new sequences inserted in tag order.

    They are encoded on their own (under the data set's character set, which items
    inherit) and placed before the first element with a greater tag; every other byte
    stays as it was, which is what encoding the whole data set again would give.
    """
    extra = Dataset()
    if "SpecificCharacterSet" in ds:
        extra.SpecificCharacterSet = ds.SpecificCharacterSet
    extra.MACParametersSequence = Sequence([parameters])
    extra.DigitalSignaturesSequence = Sequence([item])
    encoded = _encode_bytes(extra)
    tops = rawscan.scan(encoded)
    ends = [*tops.starts[1:], len(encoded)]
    pieces = {
        tag: encoded[start:end]
        for tag, start, end in zip(tops.tags, tops.starts, ends, strict=True)
    }
    data = scanned.buffer
    out = bytearray()
    at = 0
    for tag in (MAC_PARAMETERS_SEQUENCE, DIGITAL_SIGNATURES_SEQUENCE):
        after = [start for t, start in zip(scanned.tags, scanned.starts, strict=True) if t > tag]
        cut = after[0] if after else len(data)
        out += data[at:cut]
        out += pieces[tag]
        at = cut
    out += data[at:]
    return bytes(out)


def _signature_item(mac_id: int, request: _Request) -> Dataset:
    """A Digital Signatures Sequence item without certificate and signature yet."""
    item = Dataset()
    item.MACIDNumber = mac_id
    item.DigitalSignatureUID = new_uid()
    item.DigitalSignatureDateTime = request.when.strftime("%Y%m%d%H%M%S.%f+0000")
    item.CertificateType = CERTIFICATE_TYPE
    if request.purpose is not None:
        item.DigitalSignaturePurposeCodeSequence = Sequence([request.purpose.code_item()])
    return item


def _complete(
    item: Dataset,
    signer: Signer,
    signature: bytes,
    mac_id: int,
    request: _Request,
    chosen: list[int],
) -> Dataset:
    """Fill in the signature item; return its MAC Parameters item."""
    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    item.CertificateOfSigner = der + _PAD * (len(der) % 2)
    item.Signature = signature
    parameters = Dataset()
    parameters.MACIDNumber = mac_id
    parameters.MACCalculationTransferSyntaxUID = request.syntax
    parameters.MACAlgorithm = request.algorithm
    parameters.DataElementsSigned = list(chosen)
    return parameters


def _info(
    item: Dataset,
    mac_id: int,
    location: str,
    request: _Request,
    chosen: list[int],
    signature: bytes,
) -> SignatureInfo:
    return SignatureInfo(
        uid=str(item.DigitalSignatureUID),
        mac_id=mac_id,
        location=location,
        algorithm=request.algorithm,
        elements_signed=len(chosen),
        purpose=request.purpose,
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


def _encode_bytes(ds: Dataset) -> bytes:
    try:
        return encode_explicit_le(ds)
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


def _tags_to_sign(
    signable: list[int], present: Collection[int], tags: Collection[int] | None, profile: Profile
) -> list[int]:
    if tags is None:
        return signable
    wanted = set(tags) | (required_tags(profile, present) & set(present))
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
