"""Secure references to other instances (PS3.3 C.17.2.1, Table C.17-3; PS3.15 A.4).

Each Referenced SOP Sequence item of an evidence sequence may carry:

* a Referenced SOP Instance MAC Sequence (0400,0403), one item: MAC Calculation Transfer
  Syntax UID, MAC Algorithm, Data Elements Signed and MAC (0400,0404), the MAC computed the
  C.12.1.1.3 way over the referenced instance's top-level elements, unsigned and without
  any signature-item fields (brief 4.2). This node covers every signable top-level element,
  Pixel Data included, as ``dcmsign`` does by default;
* a Referenced Digital Signature Sequence (0400,0402): Digital Signature UID and the exact
  Signature bytes of a signature the referenced instance carries.

A reader checks the MAC by recomputing it, and a signature reference by finding that
signature in the instance, comparing the bytes, and verifying the signature.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from node.errors import UsageError
from node.signatures import levels
from node.signatures.digests import CREATABLE_ALGORITHMS, MAC_ALGORITHMS, UnsupportedAlgorithm
from node.signatures.encoding import NON_MAC_SYNTAXES, Encoded, encode_dataset, read_file
from node.signatures.macstream import data_stream, select, signable_tags
from node.signatures.verify import VerificationReport, verify_encoded

Lookup = Callable[[str], Path | None]
_DIGITAL_SIGNATURES = 0xFFFAFFFA
Instance = Path | Dataset
# Evidence sequences whose Referenced SOP items must carry a secure reference (A.4),
# then those where a reference is checked when present.
REQUIRED_IN = (0x0040A375, 0x0040A385)
CHECKED_IN = (*REQUIRED_IN, 0x0040A360, 0x0040A525)


@dataclass(slots=True)
class ReferenceCheck:
    """The result for one referenced instance: what passed and what failed."""

    sop_instance_uid: str
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.passed) and not self.problems


def reference_stream(instance: Instance) -> bytes:
    """The MAC stream of an instance's signable top-level elements (the dcmsign prefix)."""
    encoded = _encoded(instance)
    return data_stream(
        encoded, select(encoded.elements, signable_tags(encoded.elements)).elements
    ).to_bytes()


def mac_reference(instance: Instance, algorithm: str = "SHA256") -> Dataset:
    """The single item of a Referenced SOP Instance MAC Sequence (0400,0403)."""
    return _mac_item(_encoded(instance), instance, algorithm)


def signature_references(
    instance: Instance,
    trust: Sequence[x509.Certificate] | None,
    *,
    now: dt.datetime | None = None,
) -> list[Dataset]:
    """Referenced Digital Signature Sequence items for each verified main-level signature."""
    return _signature_items(_encoded(instance), trust, now)


def secure_references(
    instance: Path,
    algorithm: str,
    trust: Sequence[x509.Certificate] | None,
    *,
    now: dt.datetime | None = None,
) -> tuple[Dataset, list[Dataset]]:
    """Both kinds of secure reference (C.17-3a) from a single read of the instance file."""
    encoded = _encoded(instance)
    return _mac_item(encoded, instance, algorithm), _signature_items(encoded, trust, now)


def _mac_item(encoded: Encoded, instance: Instance, algorithm: str) -> Dataset:
    if algorithm not in CREATABLE_ALGORITHMS:
        raise UsageError(f"MAC algorithm must be one of {', '.join(CREATABLE_ALGORITHMS)}")
    tags = signable_tags(encoded.elements)
    item = Dataset()
    item.MACCalculationTransferSyntaxUID = _mac_syntax(encoded, instance)
    item.MACAlgorithm = algorithm
    item.DataElementsSigned = tags
    item.MAC = data_stream(encoded, select(encoded.elements, tags).elements).digest(algorithm)
    return item


def _signature_items(
    encoded: Encoded, trust: Sequence[x509.Certificate] | None, now: dt.datetime | None
) -> list[Dataset]:
    if levels.find(encoded.elements, _DIGITAL_SIGNATURES) is None:
        return []  # nothing to verify: most instances carry no signature of their own
    report = verify_encoded(encoded, trust=trust, now=now)
    items = []
    for result in report.signatures:
        if result.top_level and result.ok:
            item = Dataset()
            item.DigitalSignatureUID = result.uid
            item.Signature = result.signature  # exact stored bytes, pad included
            items.append(item)
    return items


def check_reference(
    reference: Dataset,
    instance: Instance,
    *,
    trust: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> ReferenceCheck:
    """Check a Referenced SOP Sequence item's secure references against the instance."""
    encoded = _encoded(instance)
    main = encoded.elements
    wanted = str(reference.get("ReferencedSOPInstanceUID", ""))
    check = ReferenceCheck(wanted)
    actual = levels.text(encoded, main, 0x00080018)
    if actual != wanted:
        check.problems.append(f"the instance is {actual}, not {wanted}")
        return check
    sop_class = str(reference.get("ReferencedSOPClassUID", ""))
    if sop_class and levels.text(encoded, main, 0x00080016) != sop_class:
        check.problems.append("SOP Class UID differs from the reference")
    macs = reference.get("ReferencedSOPInstanceMACSequence") or []
    signatures = reference.get("ReferencedDigitalSignatureSequence") or []
    if len(macs) > 1:
        check.problems.append("Referenced SOP Instance MAC Sequence has more than one item")
    for item in macs:
        _check_mac(item, encoded, check)
    report = verify_encoded(encoded, trust=trust, now=now) if signatures else None
    for item in signatures:
        _check_signature(item, report, check)
    if not macs and not signatures:
        check.problems.append("no secure reference (MAC or signature)")
    return check


def check_document_references(
    document: Instance,
    lookup: Lookup,
    *,
    trust: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> list[ReferenceCheck]:
    """Check every secure reference of an SR/KOS; ``lookup`` finds instances by UID.

    Items of the Current Requested Procedure Evidence and Pertinent Other Evidence
    sequences must carry a secure reference (PS3.15 A.4); Predecessor and Identical
    Documents references are checked when present.
    """
    ds = dcmread(document) if isinstance(document, Path) else document
    checks = []
    for tag, reference in _referenced_sop_items(ds):
        has_reference = "ReferencedSOPInstanceMACSequence" in reference or (
            "ReferencedDigitalSignatureSequence" in reference
        )
        if not has_reference and tag not in REQUIRED_IN:
            continue
        uid = str(reference.get("ReferencedSOPInstanceUID", ""))
        path = lookup(uid)
        if path is None:
            checks.append(ReferenceCheck(uid, problems=["referenced instance not found"]))
            continue
        checks.append(check_reference(reference, path, trust=trust, now=now))
    return checks


def directory_lookup(directory: Path) -> Lookup:
    """A lookup over every DICOM file under ``directory`` (by SOP Instance UID)."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    found: dict[str, Path] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            header = dcmread(path, stop_before_pixels=True, specific_tags=[0x00080018])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = header.get("SOPInstanceUID")
        if uid:
            found.setdefault(str(uid), path)
    return found.get


def _referenced_sop_items(ds: Dataset) -> Iterator[tuple[int, Dataset]]:
    for tag in CHECKED_IN:
        for study in ds[tag].value if tag in ds else []:
            for series in study.get("ReferencedSeriesSequence") or []:
                for reference in series.get("ReferencedSOPSequence") or []:
                    yield tag, reference


def _check_mac(item: Dataset, encoded: Encoded, check: ReferenceCheck) -> None:
    algorithm = str(item.get("MACAlgorithm", ""))
    syntax = str(item.get("MACCalculationTransferSyntaxUID", ""))
    stored = item.get("MAC")
    signed = item.get("DataElementsSigned")
    tags = [int(signed)] if isinstance(signed, int) else [int(t) for t in signed or []]
    if algorithm not in MAC_ALGORITHMS:
        check.problems.append(f"MAC Algorithm {algorithm!r} is not one of the six terms")
        return
    if not syntax or syntax in NON_MAC_SYNTAXES or not stored or signed is None:
        check.problems.append("incomplete Referenced SOP Instance MAC item")
        return
    selection = select(encoded.elements, tags)
    if selection.unsignable:
        check.problems.append("MAC lists unsignable elements")
        return
    try:
        actual = data_stream(encoded, selection.elements).digest(algorithm)
    except UnsupportedAlgorithm as exc:
        check.problems.append(str(exc))
        return
    if hmac.compare_digest(actual, bytes(stored)):
        check.passed.append(f"MAC {algorithm} over {len(tags)} elements")
    else:
        missing = (
            f" (absent: {len(selection.missing)} listed elements)" if selection.missing else ""
        )
        check.problems.append(f"MAC mismatch: the instance was altered{missing}")


def _check_signature(
    item: Dataset, report: VerificationReport | None, check: ReferenceCheck
) -> None:
    uid = str(item.get("DigitalSignatureUID", ""))
    expected = bytes(item.get("Signature") or b"")
    found = [s for s in report.signatures if s.uid == uid] if report is not None else []
    if not found:
        check.problems.append(f"signature {uid} is not in the instance")
    elif found[0].signature != expected:
        check.problems.append(f"signature {uid} differs from the referenced bytes")
    elif not found[0].ok:
        check.problems.append(f"signature {uid}: " + "; ".join(found[0].problems))
    else:
        check.passed.append(f"signature {uid}")


def _encoded(instance: Instance) -> Encoded:
    return read_file(instance) if isinstance(instance, Path) else encode_dataset(instance)


def _mac_syntax(encoded: Encoded, instance: Instance) -> str:
    """Native data: Explicit VR LE; encapsulated Pixel Data keeps its own syntax (C.12.1.1.3)."""
    if not any(element.fragments is not None for element in encoded.elements):
        return str(ExplicitVRLittleEndian)
    syntax = encoded.transfer_syntax
    if syntax is None and isinstance(instance, Dataset):
        meta = getattr(instance, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else None
    if not syntax:
        raise UsageError("encapsulated Pixel Data but no transfer syntax is known")
    return syntax
