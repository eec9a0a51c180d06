"""Check a retrieved object against the signed KOS documents of the archive (PS3.15 A.4).

A Key Object Selection Document (PS3.3 A.35.4) of the same study whose Current
Requested Procedure Evidence Sequence references the object may carry a Referenced SOP
Instance MAC and a Referenced Digital Signature for it (C.17.2.1). When such a KOS is in
the archive, the retrieved object is checked against it on arrival: the reference must
match the object, and the KOS's own signature must verify (with the configured trust
store; without one, only the signature's integrity is checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import KeyObjectSelectionDocumentStorage

from node.retrieve.result import KosCheck
from node.signatures import check_reference, verify_file
from node.storage.archive import Archive
from node.storage.index import study_instances

_EVIDENCE = "CurrentRequestedProcedureEvidenceSequence"


@dataclass(frozen=True, slots=True)
class _Kos:
    uid: str
    references: dict[str, Dataset]  # Referenced SOP Sequence item per referenced UID
    signature: str
    trusted: bool


class KosChecker:
    """The secure references of one archive's KOS documents, read once per study."""

    def __init__(self, archive: Archive, trust: Sequence[x509.Certificate]) -> None:
        self.archive = archive
        # An empty trust store cannot make anything trusted: check integrity only then.
        self.trust: Sequence[x509.Certificate] | None = list(trust) or None
        self._studies: dict[str, list[_Kos]] = {}

    def check(self, study_uid: str, sop_instance_uid: str, path: Path) -> tuple[KosCheck, ...]:
        """Every KOS of ``study_uid`` with a secure reference to the object, checked."""
        checks = []
        for kos in self._documents(study_uid):
            reference = kos.references.get(sop_instance_uid)
            if reference is None:
                continue
            result = check_reference(reference, path, trust=self.trust)
            has_mac = "ReferencedSOPInstanceMACSequence" in reference
            kind = "MAC" if has_mac else "signature reference"
            checks.append(
                KosCheck(
                    kos_uid=kos.uid,
                    kind=kind,
                    reference_ok=result.ok,
                    details=tuple(result.problems or result.passed),
                    kos_signature=kos.signature,
                    kos_trusted=kos.trusted,
                )
            )
        return tuple(checks)

    def _documents(self, study_uid: str) -> list[_Kos]:
        if study_uid not in self._studies:
            rows = study_instances(self.archive.engine, study_uid)
            self._studies[study_uid] = [
                kos
                for row in rows
                if row.sop_class_uid == KeyObjectSelectionDocumentStorage
                for kos in [self._read(row.sop_instance_uid, self.archive.files.path(row.path))]
                if kos.references
            ]
        return self._studies[study_uid]

    def _read(self, uid: str, path: Path) -> _Kos:
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            return _Kos(uid, {}, "unreadable", False)
        references = {
            str(sop.ReferencedSOPInstanceUID): sop
            for study in ds.get(_EVIDENCE) or []
            for series in study.get("ReferencedSeriesSequence") or []
            for sop in series.get("ReferencedSOPSequence") or []
            if "ReferencedSOPInstanceMACSequence" in sop
            or "ReferencedDigitalSignatureSequence" in sop
        }
        if not references:
            return _Kos(uid, {}, "", False)
        report = verify_file(path, trust=self.trust)
        if report.ok:
            signers = ", ".join(sorted({s.signer or "?" for s in report.signatures}))
            verdict = "KOS signature verified" if self.trust else "KOS signature intact"
            detail = f"{verdict}, signer {signers}"
            if self.trust is None:
                detail += "; no trust store configured"
            return _Kos(uid, references, detail, True)
        return _Kos(
            uid,
            references,
            "the KOS signature does not verify: " + "; ".join(report.problems),
            False,
        )
