"""Check a received "Signed Manifest" KOS against the archive (PS3.17 Annex W case 2).

The receiver of a shipment verifies three things, in this order:

1. the manifest's own digital signature (PS3.15 C.1) verifies, and its signer's
   certificate is trusted (``trust`` in the configuration);
2. every instance the manifest references (Current Requested Procedure Evidence
   Sequence, PS3.3 C.17.6.2) is in the archive;
3. each archived instance matches its secure reference: the Referenced SOP Instance MAC
   recomputed over the stored bytes (PS3.3 C.12.1.1.3), or the referenced signature found
   in the instance and verified.

The verdict, most serious first: ``untrusted`` (1 fails: nothing it says can be relied
on), ``altered`` (some instance differs from what was sent), ``incomplete`` (some are
missing; while the wait lasts the state is ``waiting``), else ``verified``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.documents.codes import SIGNED_MANIFEST
from node.signatures import check_document_references, verify_file

VERIFIED = "verified"
INCOMPLETE = "incomplete"
ALTERED = "altered"
UNTRUSTED = "untrusted"
WAITING = "waiting"
FINAL_STATES = (VERIFIED, INCOMPLETE, ALTERED, UNTRUSTED)

Lookup = Callable[[str], Path | None]


@dataclass(slots=True)
class Findings:
    """What checking one manifest found."""

    manifest_uid: str
    study_uid: str
    referenced: list[str] = field(default_factory=list)
    signer: str = ""
    signature_problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    altered: dict[str, list[str]] = field(default_factory=dict)

    def verdict(self, waiting_allowed: bool) -> str:
        if self.signature_problems:
            return UNTRUSTED
        if self.altered:
            return ALTERED
        if self.missing:
            return WAITING if waiting_allowed else INCOMPLETE
        return VERIFIED


def is_signed_manifest(ds: Dataset) -> bool:
    """Whether a KOS data set is titled (113031, DCM, "Signed Manifest") (CID 7010)."""
    for title in ds.get("ConceptNameCodeSequence") or []:
        if (
            title.get("CodeValue") == SIGNED_MANIFEST.value
            and title.get("CodingSchemeDesignator") == SIGNED_MANIFEST.scheme_designator
        ):
            return True
    return False


def read_title(path: Path) -> Dataset:
    """The identifying top-level attributes of a stored KOS, without its content tree."""
    return dcmread(
        path,
        specific_tags=["SOPInstanceUID", "StudyInstanceUID", "ConceptNameCodeSequence"],
    )


def examine(path: Path, lookup: Lookup, trust: Sequence[x509.Certificate]) -> Findings:
    """Check the manifest stored at ``path``; ``lookup`` finds archived instances by UID."""
    title = read_title(path)
    findings = Findings(str(title.SOPInstanceUID), str(title.get("StudyInstanceUID", "")))
    report = verify_file(path, trust=trust)
    findings.signature_problems = report.problems
    findings.signer = ", ".join(sorted({s.signer for s in report.signatures if s.signer}))
    missing: list[str] = []

    def noting_missing(uid: str) -> Path | None:
        found = lookup(uid)
        if found is None:
            missing.append(uid)
        return found

    # Read from the document's bytes, the MACs recomputed on a few threads.
    checks = check_document_references(path, noting_missing, trust=trust)
    absent = set(missing)
    for check in checks:
        findings.referenced.append(check.sop_instance_uid)
        if check.sop_instance_uid not in absent and not check.ok:
            findings.altered[check.sop_instance_uid] = check.problems or [
                "no secure reference to check"
            ]
    findings.missing = missing
    if not findings.referenced:
        findings.signature_problems.append("the manifest references no instance")
    return findings
