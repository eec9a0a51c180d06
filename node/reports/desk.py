"""What every reporting use case shares: the node's settings, people, trust, the archive.

PS3.17 Annex X (dictation reports) and Annex W case 1 (their signatures). The archive
keeps objects exactly as stored, so drafts stay outside it until signed
(:meth:`ReportDesk.archive_report`); :func:`write_document` writes the Part 10 copy a
person reads and signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage

from node.config import NodeConfig
from node.config.model import ReportingPerson
from node.documents.cda import CdaContext
from node.documents.publish import Provenance, archive_document, encode_explicit_le
from node.documents.report import Observer
from node.documents.sr_common import IODError
from node.errors import UsageError
from node.signatures import load_trust, verify_dataset
from node.signatures.keys import load_certificate
from node.signatures.purposes import PURPOSES
from node.storage.archive import Archive
from node.storage.filemeta import file_meta_bytes
from node.storage.files import write_atomic
from node.storage.index import series_modality

VALIDATION = PURPOSES[5]
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
KOS = str(KeyObjectSelectionDocumentStorage)


# Why a report cannot be made without a WADO-URI base for its image links.
NO_WADO = (
    "reporting.wado_base_url is not configured and http is off or on port 0 "
    "(needed for the CDA's image links)"
)


@dataclass(slots=True)
class Outcome:
    """What a reporting command did, for the command line to print."""

    sop_instance_uid: str
    study_uid: str
    path: Path  # the draft, or the archived file
    cda_path: Path | None = None
    signature_uid: str | None = None
    signer: str | None = None
    notes: list[str] = field(default_factory=list)


def observer_for(person: ReportingPerson, institution: str) -> Observer:
    return Observer(
        name=person.name,
        observer_id=person.observer_id,
        scheme=person.observer_scheme,
        institution=person.institution or institution,
    )


def write_document(ds: Dataset, path: Path, ae_title: str) -> Path:
    """A Part 10 file (Explicit VR Little Endian) of a document the node built."""
    meta = file_meta_bytes(
        str(ds.SOPClassUID), str(ds.SOPInstanceUID), ExplicitVRLittleEndian, ae_title
    )
    write_atomic(path, meta + encode_explicit_le(ds))
    return path


def check_signatures(ds: Dataset) -> None:
    """Every signature verifies in the document about to be stored (nothing broken)."""
    report = verify_dataset(ds, trust=None)
    broken = [f"{s.uid}: {'; '.join(s.problems)}" for s in report.signatures if not s.mac_ok]
    if broken:
        raise IODError("a signature would not verify in the new document: " + "; ".join(broken))


class ReportDesk:
    """The reporting use cases' view of one node: configuration, people and archive."""

    def __init__(self, config: NodeConfig, archive: Archive) -> None:
        self.config = config
        self.archive = archive
        self.settings = config.reporting

    def person(self, name: str | None, role: str) -> ReportingPerson:
        people = self.settings.people
        if name is None:
            if len(people) == 1:
                return people[0]
            raise UsageError(f"name the {role} (--{'author' if role == 'author' else 'by'})")
        found = self.settings.person(name)
        if found is None:
            known = ", ".join(p.name for p in people) or "none configured"
            raise UsageError(f"{name!r} is not in reporting.people ({known})")
        return found

    def trust(self) -> list[x509.Certificate]:
        """The trust store plus the certificates of the configured people."""
        return load_trust(self.config.trust) + [
            load_certificate(p.certificate) for p in self.settings.people
        ]

    def cda_context(self, cda_uid: str, replaces: str | None = None) -> CdaContext:
        base = self.config.wado_base_url
        if not base:
            raise UsageError(NO_WADO)
        return CdaContext(
            cda_uid=cda_uid,
            wado_base_url=base,
            custodian=self.settings.institution or self.config.node.ae_title,
            modality_of=lambda series_uid: series_modality(self.archive.engine, series_uid),
            replaces=replaces,
        )

    def archive_report(self, ds: Dataset, event: str, details: dict[str, Any]) -> Outcome:
        """Store through the archive's one write path, record the event, write the sidecar."""
        uid = str(ds.SOPInstanceUID)
        provenance = Provenance(f"report:{uid}", "report", event, details, details)
        archived = archive_document(self.config, self.archive, ds, provenance)
        return Outcome(archived.sop_instance_uid, archived.study_uid, archived.path)
