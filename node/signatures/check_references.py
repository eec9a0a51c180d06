"""Checking secure references to other instances (PS3.3 C.17.2.1, Table C.17-3a; PS3.15 A.4).

A reader checks a Referenced SOP Instance MAC Sequence item by recomputing the MAC the
PS3.3 C.12.1.1.3 way over the elements it lists, and a Referenced Digital Signature
Sequence item by finding that signature in the referenced instance, comparing the exact
bytes, and verifying the signature. Making the references is
:mod:`node.signatures.references`.

A document's references are read from its bytes (:mod:`node.signatures.levels`), the
referenced instances scanned by :mod:`node.signatures.rawscan` where possible;
``check_references`` and the document-level check spread instances over a few threads
(:mod:`.parallel`).
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

from node.errors import UsageError
from node.signatures import levels, rawscan
from node.signatures.digests import MAC_ALGORITHMS, UnsupportedAlgorithm
from node.signatures.encoding import NON_MAC_SYNTAXES, Encoded, read_file
from node.signatures.macstream import data_stream, select
from node.signatures.parallel import map_ordered
from node.signatures.references import (
    ELEMENTS_SIGNED,
    MAC,
    MAC_ALGORITHM,
    MAC_SYNTAX,
    Instance,
    read_encoded,
    read_scanned,
)
from node.signatures.verify import VerificationReport, verify_encoded

Lookup = Callable[[str], Path | None]
_REFERENCED_SERIES, _REFERENCED_SOP = 0x00081115, 0x00081199
_REFERENCED_CLASS, _REFERENCED_INSTANCE = 0x00081150, 0x00081155
_MAC_SEQUENCE, _SIGNATURE_SEQUENCE = 0x04000403, 0x04000402
_SIGNATURE_UID, _SIGNATURE = 0x04000100, 0x04000120
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


def check_reference(
    reference: Dataset,
    instance: Instance,
    *,
    trust: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> ReferenceCheck:
    """Check a Referenced SOP Sequence item's secure references against the instance."""
    return _check(_facts_of_dataset(reference), instance, trust, now)


@dataclass(frozen=True, slots=True)
class _MacFacts:
    """One Referenced SOP Instance MAC item as the reference states it."""

    algorithm: str
    syntax: str
    mac: bytes | None
    tags: list[int] | None


@dataclass(frozen=True, slots=True)
class _ReferenceFacts:
    """What a Referenced SOP Sequence item states, read from a data set or stored bytes."""

    sop_class_uid: str
    sop_instance_uid: str
    macs: list[_MacFacts]
    signatures: list[tuple[str, bytes]]  # (Digital Signature UID, Signature)
    secured: bool  # either secure-reference sequence is present, even empty


def _check(
    facts: _ReferenceFacts,
    instance: Instance,
    trust: Sequence[x509.Certificate] | None,
    now: dt.datetime | None,
) -> ReferenceCheck:
    stored = _Stored.read(instance)
    wanted = facts.sop_instance_uid
    check = ReferenceCheck(wanted)
    actual = stored.text(0x00080018)
    if actual != wanted:
        check.problems.append(f"the instance is {actual}, not {wanted}")
        return check
    if facts.sop_class_uid and stored.text(0x00080016) != facts.sop_class_uid:
        check.problems.append("SOP Class UID differs from the reference")
    if len(facts.macs) > 1:
        check.problems.append("Referenced SOP Instance MAC Sequence has more than one item")
    for mac in facts.macs:
        _check_mac(mac, stored, check)
    report = stored.verification(trust, now) if facts.signatures else None
    for uid, signature in facts.signatures:
        _check_signature(uid, signature, report, check)
    if not facts.macs and not facts.signatures:
        check.problems.append("no secure reference (MAC or signature)")
    return check


def check_references(
    pairs: Sequence[tuple[Dataset, Instance]],
    *,
    trust: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> list[ReferenceCheck]:
    """:func:`check_reference` of each (Referenced SOP item, instance), in order, threaded."""
    jobs = [(_facts_of_dataset(reference), instance) for reference, instance in pairs]
    return map_ordered(lambda job: _check(job[0], job[1], trust, now), jobs)


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
    Documents references are checked when present. A document file is read from its
    bytes (no pydicom objects for its thousand items); look-ups run in the caller's
    thread, the checks on a few threads.
    """
    if isinstance(document, Path):
        encoded = read_file(document)
        found = [(tag, _facts_of_level(encoded, item)) for tag, item in _evidence_items(encoded)]
    else:
        found = [(tag, _facts_of_dataset(item)) for tag, item in _referenced_sop_items(document)]
    checks: list[ReferenceCheck | None] = []
    jobs: list[tuple[_ReferenceFacts, Path]] = []
    slots: list[int] = []
    for tag, facts in found:
        if not facts.secured and tag not in REQUIRED_IN:
            continue
        path = lookup(facts.sop_instance_uid)
        if path is None:
            problem = "referenced instance not found"
            checks.append(ReferenceCheck(facts.sop_instance_uid, problems=[problem]))
            continue
        slots.append(len(checks))
        checks.append(None)
        jobs.append((facts, path))
    results = map_ordered(lambda job: _check(job[0], job[1], trust, now), jobs)
    for slot, check in zip(slots, results, strict=True):
        checks[slot] = check
    return [check for check in checks if check is not None]


@dataclass(slots=True)
class _Stored:
    """A referenced instance as read for checking: scanned when possible, else parsed."""

    instance: Instance
    scanned: rawscan.Scanned | None
    encoded: Encoded | None

    @classmethod
    def read(cls, instance: Instance) -> _Stored:
        scanned = read_scanned(instance)
        return cls(instance, scanned, None if scanned is not None else read_encoded(instance))

    def parsed(self) -> Encoded:
        if self.encoded is None:
            self.encoded = read_encoded(self.instance)
        return self.encoded

    def text(self, tag: int) -> str | None:
        if self.scanned is not None:
            return self.scanned.text(tag)
        encoded = self.parsed()
        return levels.text(encoded, encoded.elements, tag)

    def digest(self, tags: list[int], algorithm: str) -> tuple[bytes | None, list[int]]:
        """H(stream of the listed elements) and the listed tags absent; None if unsignable."""
        if self.scanned is not None:
            chosen, missing, unsignable = self.scanned.select(tags)
            if unsignable:
                return None, missing
            return self.scanned.digest(algorithm, chosen), missing
        encoded = self.parsed()
        selection = select(encoded.elements, tags)
        if selection.unsignable:
            return None, selection.missing
        return data_stream(encoded, selection.elements).digest(algorithm), selection.missing

    def verification(
        self, trust: Sequence[x509.Certificate] | None, now: dt.datetime | None
    ) -> VerificationReport:
        return verify_encoded(self.parsed(), trust=trust, now=now)


def referenced_uids(document: Path) -> list[str]:
    """SOP Instance UIDs of an SR/KOS's evidence references, read from the file's bytes."""
    encoded = read_file(document)
    return [
        levels.text(encoded, item, _REFERENCED_INSTANCE) or ""
        for _, item in _evidence_items(encoded)
    ]


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


def _evidence_items(encoded: Encoded) -> Iterator[tuple[int, levels.Level]]:
    """Referenced SOP Sequence items of the evidence sequences, from the parsed bytes."""
    for tag in CHECKED_IN:
        evidence = levels.find(encoded.elements, tag)
        for study in (evidence.items or []) if evidence is not None else []:
            for series in _items(study, _REFERENCED_SERIES):
                yield from ((tag, reference) for reference in _items(series, _REFERENCED_SOP))


def _items(level: levels.Level, tag: int) -> list[levels.Level]:
    element = levels.find(level, tag)
    return (element.items or []) if element is not None else []


def _facts_of_dataset(reference: Dataset) -> _ReferenceFacts:
    macs = []
    for item in reference.get("ReferencedSOPInstanceMACSequence") or []:
        signed = item.get("DataElementsSigned")
        tags = None if signed is None else (
            [int(signed)] if isinstance(signed, int) else [int(t) for t in signed]
        )  # fmt: skip
        value = item.get("MAC")
        macs.append(
            _MacFacts(
                algorithm=str(item.get("MACAlgorithm", "")),
                syntax=str(item.get("MACCalculationTransferSyntaxUID", "")),
                mac=bytes(value) if value else None,
                tags=tags,
            )
        )
    signatures = [
        (str(item.get("DigitalSignatureUID", "")), bytes(item.get("Signature") or b""))
        for item in reference.get("ReferencedDigitalSignatureSequence") or []
    ]
    return _ReferenceFacts(
        sop_class_uid=str(reference.get("ReferencedSOPClassUID", "")),
        sop_instance_uid=str(reference.get("ReferencedSOPInstanceUID", "")),
        macs=macs,
        signatures=signatures,
        secured="ReferencedSOPInstanceMACSequence" in reference
        or "ReferencedDigitalSignatureSequence" in reference,
    )


def _facts_of_level(encoded: Encoded, level: levels.Level) -> _ReferenceFacts:
    """The same facts from a parsed item; values as pydicom would give them."""
    macs = []
    for item in _items(level, _MAC_SEQUENCE):
        signed = levels.find(item, ELEMENTS_SIGNED)
        value = levels.find(item, MAC)
        macs.append(
            _MacFacts(
                algorithm=levels.text(encoded, item, MAC_ALGORITHM) or "",
                syntax=levels.text(encoded, item, MAC_SYNTAX) or "",
                mac=(encoded.value(value) or None) if value is not None else None,
                tags=(levels.attribute_tags(encoded, signed) or None)
                if signed is not None
                else None,
            )
        )
    signatures = []
    for item in _items(level, _SIGNATURE_SEQUENCE):
        value = levels.find(item, _SIGNATURE)
        uid = levels.text(encoded, item, _SIGNATURE_UID) or ""
        signatures.append((uid, encoded.value(value) if value is not None else b""))
    return _ReferenceFacts(
        sop_class_uid=levels.text(encoded, level, _REFERENCED_CLASS) or "",
        sop_instance_uid=levels.text(encoded, level, _REFERENCED_INSTANCE) or "",
        macs=macs,
        signatures=signatures,
        secured=any(
            levels.find(level, t) is not None for t in (_MAC_SEQUENCE, _SIGNATURE_SEQUENCE)
        ),
    )


def _check_mac(mac: _MacFacts, stored: _Stored, check: ReferenceCheck) -> None:
    algorithm = mac.algorithm
    if algorithm not in MAC_ALGORITHMS:
        check.problems.append(f"MAC Algorithm {algorithm!r} is not one of the six terms")
        return
    if not mac.syntax or mac.syntax in NON_MAC_SYNTAXES or not mac.mac or mac.tags is None:
        check.problems.append("incomplete Referenced SOP Instance MAC item")
        return
    try:
        actual, missing = stored.digest(mac.tags, algorithm)
    except UnsupportedAlgorithm as exc:
        check.problems.append(str(exc))
        return
    if actual is None:
        check.problems.append("MAC lists unsignable elements")
    elif hmac.compare_digest(actual, mac.mac):
        check.passed.append(f"MAC {algorithm} over {len(mac.tags)} elements")
    else:
        absent = f" (absent: {len(missing)} listed elements)" if missing else ""
        check.problems.append(f"MAC mismatch: the instance was altered{absent}")


def _check_signature(
    uid: str, expected: bytes, report: VerificationReport | None, check: ReferenceCheck
) -> None:
    found = [s for s in report.signatures if s.uid == uid] if report is not None else []
    if not found:
        check.problems.append(f"signature {uid} is not in the instance")
    elif found[0].signature != expected:
        check.problems.append(f"signature {uid} differs from the referenced bytes")
    elif not found[0].ok:
        check.problems.append(f"signature {uid}: " + "; ".join(found[0].problems))
    else:
        check.passed.append(f"signature {uid}")
