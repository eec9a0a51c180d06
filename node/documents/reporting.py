"""Dictation reports end to end: PS3.17 Annex X, signed as in Annex W case 1.

* :meth:`Reporting.create` turns a transcription into a draft Basic Text SR (TID 2005)
  and its equivalent CDA, attaching every KOS "For Report Attachment" of the study
  (from the archive; when there is none, every KOS of the study is retrieved from
  ``reporting.source`` and filtered by title, X.1.2). The evidence lists every instance
  of the requested procedure (archive and MPPS), each with a secure reference: copied
  from a trusted "Signed Complete Acquisition Content" KOS where one covers it (W case 1
  step 7), else a MAC computed from the archived instance.
* :meth:`Reporting.sign` adds a signature (Author Signature by default, W step 8) with
  the person's own key and archives the report, with its sidecar and a custody event.
  The archive keeps objects exactly as stored, so drafts stay outside it until signed.
* :meth:`Reporting.verify` makes the verified report, a new instance (W step 9), signed
  under the SR verification profile (purpose 5) or with a Validation Signature (6),
  and archives it with a new CDA that replaces the predecessor's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.coding import Code
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
)
from sqlalchemy import select

from node.config import NodeConfig
from node.config.model import ReportingPerson
from node.documents.cda import CdaContext, build_cda, write_cda
from node.documents.codes import (
    FOR_REPORT_ATTACHMENT,
    KEY_OBJECT_DESCRIPTION,
    SIGNED_COMPLETE_ACQUISITION_CONTENT,
)
from node.documents.publish import (
    Provenance,
    archive_document,
    encode_explicit_le,
    secure_reference,
)
from node.documents.report import (
    TEMPLATE,
    KeyImages,
    Observer,
    ReportRequest,
    author_signed_tags,
    build_report,
    equivalent_cda_uid,
    referenced_uids,
    request_item,
    verified_report,
)
from node.documents.sr_common import (
    IODError,
    Reference,
    concept_of,
    evidence_references,
    patient_study_from,
)
from node.documents.transcription import parse_transcription
from node.errors import NodeError, OperationFailed, UsageError
from node.identity import new_uid
from node.mpps.registry import decode
from node.signatures import (
    Profile,
    Purpose,
    load_for_signing,
    load_signer,
    load_trust,
    secure_references,
    sign_dataset,
    verify_dataset,
    verify_file,
)
from node.signatures.keys import load_certificate
from node.signatures.purposes import AUTHOR, PURPOSES, VERIFICATION
from node.storage import audit
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.database import mpps, mpps_expected, series
from node.storage.filemeta import file_meta_bytes
from node.storage.files import write_atomic
from node.storage.index import InstanceRow, find_instance, study_instances

VALIDATION = PURPOSES[5]
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


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


@dataclass(frozen=True, slots=True)
class _Kos:
    row: InstanceRow
    ds: Dataset

    @property
    def title(self) -> str:
        names = self.ds.get("ConceptNameCodeSequence") or []
        return str(names[0].CodeValue) if names else ""


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


def is_report(ds: Dataset) -> bool:
    """A TID 2005 Basic Text SR (what this module makes)."""
    templates = ds.get("ContentTemplateSequence") or []
    return str(ds.get("SOPClassUID", "")) == BasicTextSRStorage and any(
        str(t.get("TemplateIdentifier", "")) == TEMPLATE for t in templates
    )


class Reporting:
    """The reporting use cases over one node's configuration and archive."""

    def __init__(self, config: NodeConfig, archive: Archive) -> None:
        self.config = config
        self.archive = archive
        self.settings = config.reporting

    # -- people and trust ------------------------------------------------------------

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

    # -- create ------------------------------------------------------------------------

    def create(
        self,
        study_uid: str,
        text: str,
        *,
        title: Code,
        author: str | None,
        out: Path | None = None,
        complete: bool = True,
        now: datetime | None = None,
    ) -> Outcome:
        """Write the draft report and its CDA; nothing enters the archive yet."""
        base = self.settings.wado_base_url
        if not base:
            raise UsageError("reporting.wado_base_url is not configured (needed for CDA links)")
        person = self.person(author, "author")
        sections = parse_transcription(text)
        notes: list[str] = []
        trust = load_trust(self.config.trust)
        if not study_instances(self.archive.engine, study_uid):
            raise UsageError(f"study {study_uid} is not in the archive")
        attached = self._attachments(study_uid, notes)
        rows = study_instances(self.archive.engine, study_uid)  # with any KOS just fetched
        kos = [self._read_kos(row) for row in rows if row.sop_class_uid == _KOS]
        covered = self._acquisition_references(kos, trust, notes)
        evidence = self._evidence(study_uid, rows, covered, trust)
        groups = [self._key_images(k, notes) for k in attached]
        other = self._other_evidence(groups, evidence, trust)
        report_uid, cda_uid = new_uid(), new_uid()
        folder = (out or self.settings.output).resolve()
        cda_target = folder / f"{cda_uid}.xml"
        ds = build_report(
            ReportRequest(
                sop_instance_uid=report_uid,
                series_uid=new_uid(),
                cda_uid=cda_uid,
                cda_uri=cda_target.as_uri(),
                patient_study=patient_study_from(self.archive.files.path(rows[0].path)),
                sections=sections,
                author=observer_for(person, self.settings.institution),
                station_name=self.config.node.ae_title,
                retrieve_ae_title=self.config.node.ae_title,
                title=title,
                language=Code(self.settings.language, "RFC5646", self.settings.language_meaning),
                institution=self.settings.institution,
                key_images=groups,
                evidence=evidence,
                other_evidence=other,
                requests=self._requests(study_uid, rows),
                complete=complete,
                content_time=now or datetime.now(UTC),
            )
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = write_document(ds, folder / f"{report_uid}.dcm", self.config.node.ae_title)
        cda_path = write_cda(build_cda(ds, self._cda_context(cda_uid)), cda_target)
        with self.archive.engine.begin() as conn:
            audit.append(
                conn,
                AuditEvent.REPORT_CREATED,
                study_uid=study_uid,
                sop_instance_uid=report_uid,
                details={
                    "title": title.meaning,
                    "author": person.name,
                    "completion": str(ds.CompletionFlag),
                    "sections": [s.heading.meaning for s in sections],
                    "key_image_kos": [g.kos_uid for g in groups],
                    "evidence": len(evidence),
                    "other_evidence": len(other),
                    "cda_uid": cda_uid,
                    "draft": path.name,
                },
            )
        return Outcome(report_uid, study_uid, path, cda_path, notes=notes)

    def _attachments(self, study_uid: str, notes: list[str]) -> list[_Kos]:
        """KOS "For Report Attachment" of the study, fetched from the source if none."""
        found = self._attachments_in_archive(study_uid)
        if found or not self.settings.source:
            if not found:
                notes.append("no KOS 'For Report Attachment' in the archive; no key images")
            return found
        fetched = self._fetch_kos(study_uid, self.settings.source)
        found = self._attachments_in_archive(study_uid)
        notes.append(
            f"no KOS 'For Report Attachment' in the archive: retrieved {fetched} KOS series "
            f"from {self.settings.source}, {len(found)} KOS for report attachment"
        )
        return found

    def _attachments_in_archive(self, study_uid: str) -> list[_Kos]:
        rows = study_instances(self.archive.engine, study_uid)
        kos = [self._read_kos(row) for row in rows if row.sop_class_uid == _KOS]
        attached = [k for k in kos if k.title == FOR_REPORT_ATTACHMENT.value]
        # Oldest first: the order the physician selected them in (X.1.2).
        return sorted(
            attached,
            key=lambda k: (
                str(k.ds.get("ContentDate", "")),
                str(k.ds.get("ContentTime", "")),
                k.row.sop_instance_uid,
            ),
        )

    def _fetch_kos(self, study_uid: str, source_name: str) -> int:
        """Retrieve every KOS series of the study: the title is no reliable query key."""
        from node.retrieve.client import RetrieveRequest, find_series, retrieve

        source = self.config.remote(source_name)
        if source is None:
            raise UsageError(f"reporting.source: no source named {source_name!r}")
        try:
            kos_series = find_series(self.config, source, study_uid, modality="KO")
            requests = [
                RetrieveRequest(study_uid, uid, sop_class_uids=(_KOS,)) for uid, _ in kos_series
            ]
            if not requests:
                return 0
            result = retrieve(self.config, self.archive, source, requests, method="get")
        except NodeError as exc:
            raise OperationFailed(f"cannot fetch KOS from {source_name}: {exc}") from exc
        if not result.ok:
            raise OperationFailed(f"cannot fetch KOS from {source_name}: {result}")
        return len(requests)

    def _read_kos(self, row: InstanceRow) -> _Kos:
        return _Kos(row, dcmread(self.archive.files.path(row.path), stop_before_pixels=True))

    def _acquisition_references(
        self, kos: list[_Kos], trust: list[x509.Certificate], notes: list[str]
    ) -> dict[str, Reference]:
        """Secure references of trusted "Signed Complete Acquisition Content" KOS (W step 7)."""
        found: dict[str, Reference] = {}
        for k in kos:
            if k.title != SIGNED_COMPLETE_ACQUISITION_CONTENT.value:
                continue
            report = verify_file(self.archive.files.path(k.row.path), trust=trust)
            if not report.ok:
                notes.append(
                    f"KOS {k.row.sop_instance_uid} is not trusted ({'; '.join(report.problems)}): "
                    "MACs computed instead"
                )
                continue
            for ref in evidence_references(k.ds, "CurrentRequestedProcedureEvidenceSequence"):
                found[ref.sop_instance_uid] = ref
        return found

    def _evidence(
        self,
        study_uid: str,
        rows: list[InstanceRow],
        covered: dict[str, Reference],
        trust: list[x509.Certificate],
    ) -> list[Reference]:
        """Every instance of the requested procedure (archive and MPPS), securely referenced."""
        algorithm = self.config.signing.mac_algorithm.value
        evidence: list[Reference] = []
        for row in rows:
            if row.sop_class_uid.startswith(SR_PREFIX) and row.sop_class_uid != _KOS:
                header = dcmread(self.archive.files.path(row.path), stop_before_pixels=True)
                if is_report(header):
                    continue  # earlier reports are documents about the evidence, not evidence
            copied = covered.get(row.sop_instance_uid)
            if copied is not None:
                evidence.append(_with_identity(copied, row))
            else:
                evidence.append(secure_reference(self.archive, row, algorithm, trust))
        archived = {row.sop_instance_uid for row in rows}
        missing = []
        for uid, sop_class, series_uid in self._listed_by_mpps(study_uid):
            if uid in archived:
                continue
            if uid in covered:
                evidence.append(covered[uid])
            else:
                missing.append(f"{uid} (series {series_uid}, {sop_class})")
        if missing:
            raise OperationFailed(
                "instances listed by the MPPS are not in the archive, so they cannot be "
                f"securely referenced: {', '.join(missing)}"
            )
        return evidence

    def _listed_by_mpps(self, study_uid: str) -> list[tuple[str, str, str]]:
        query = (
            select(
                mpps_expected.c.sop_instance_uid,
                mpps_expected.c.sop_class_uid,
                mpps_expected.c.series_uid,
            )
            .join(mpps, mpps.c.mpps_uid == mpps_expected.c.mpps_uid)
            .where(mpps.c.study_uid == study_uid, mpps.c.status == "COMPLETED")
        )
        with self.archive.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(query)]

    def _requests(self, study_uid: str, rows: list[InstanceRow]) -> list[Dataset]:
        """Referenced Request Sequence items: from the MPPS, else the study's accession."""
        query = select(mpps.c.attributes).where(
            mpps.c.study_uid == study_uid, mpps.c.status == "COMPLETED"
        )
        with self.archive.engine.connect() as conn:
            steps = [decode(r[0]) for r in conn.execute(query)]
        items: list[Dataset] = []
        seen: set[tuple[str, str]] = set()
        for step in steps:
            for ssa in step.get("ScheduledStepAttributesSequence") or []:
                key = (str(ssa.get("AccessionNumber", "")), str(ssa.get("RequestedProcedureID")))
                if key not in seen:
                    seen.add(key)
                    items.append(request_item(study_uid, ssa))
        if not items:
            study = patient_study_from(self.archive.files.path(rows[0].path))
            if str(study.get("AccessionNumber", "") or ""):
                items.append(request_item(study_uid, study))
        return items

    def _key_images(self, kos: _Kos, notes: list[str]) -> KeyImages:
        description = None
        images = []
        skipped = 0
        for item in kos.ds.get("ContentSequence") or []:
            kind = item.get("ValueType")
            concept = concept_of(item)
            if kind == "TEXT" and concept and concept.value == KEY_OBJECT_DESCRIPTION.value:
                description = str(item.TextValue)
            elif kind == "IMAGE":
                images.append(item)
            elif kind in ("COMPOSITE", "WAVEFORM"):
                skipped += 1
        if skipped:
            notes.append(
                f"KOS {kos.row.sop_instance_uid}: {skipped} COMPOSITE/WAVEFORM items left out "
                "(TID 2005 row 7 takes IMAGE items only)"
            )
        if not images:
            notes.append(f"KOS {kos.row.sop_instance_uid}: no IMAGE items")
        return KeyImages(kos.row.sop_instance_uid, description, images)

    def _other_evidence(
        self, groups: list[KeyImages], evidence: list[Reference], trust: list[x509.Certificate]
    ) -> list[Reference]:
        """Key images (and their presentation states) outside the requested procedure."""
        current = {r.sop_instance_uid for r in evidence}
        algorithm = self.config.signing.mac_algorithm.value
        other: dict[str, Reference] = {}
        for group in groups:
            for image in group.images:
                for uid in referenced_uids(image):
                    if uid in current or uid in other:
                        continue
                    with self.archive.engine.connect() as conn:
                        row = find_instance(conn, uid)
                    if row is None:
                        raise OperationFailed(
                            f"key image {uid} of KOS {group.kos_uid} is not in the archive: "
                            "its secure reference cannot be made (retrieve it first)"
                        )
                    other[uid] = secure_reference(self.archive, row, algorithm, trust)
        return list(other.values())

    def _cda_context(self, cda_uid: str, replaces: str | None = None) -> CdaContext:
        base = self.settings.wado_base_url
        if not base:
            raise UsageError("reporting.wado_base_url is not configured (needed for CDA links)")
        return CdaContext(
            cda_uid=cda_uid,
            wado_base_url=base,
            custodian=self.settings.institution or self.config.node.ae_title,
            modality_of=self._modality_of,
            replaces=replaces,
        )

    def _modality_of(self, series_uid: str) -> str | None:
        with self.archive.engine.connect() as conn:
            found = conn.execute(
                select(series.c.modality).where(series.c.series_uid == series_uid)
            ).scalar()
        return str(found) if found else None

    # -- sign --------------------------------------------------------------------------

    def sign(self, source: str, *, purpose: Purpose = AUTHOR, by: str | None = None) -> Outcome:
        """Sign a draft with a person's key (Author Signature by default) and archive it."""
        if purpose.value in (VERIFICATION.value, VALIDATION.value):
            raise UsageError("verification and validation signatures: use 'report verify'")
        path = self._draft(source)
        ds = load_for_signing(path)
        if not is_report(ds):
            raise UsageError(f"{path}: not a dictation report (Basic Text SR, TID 2005)")
        with self.archive.engine.connect() as conn:
            if find_instance(conn, str(ds.SOPInstanceUID)) is not None:
                raise UsageError(
                    f"report {ds.SOPInstanceUID} is already archived; the archive keeps it as "
                    "stored (verify it with 'report verify')"
                )
        if by is None and purpose is AUTHOR:
            by = str(ds.AuthorObserverSequence[0].PersonName)
        person = self.person(by, "signer")
        signer = load_signer(person.key, person.certificate, person.passphrase_env)
        info = sign_dataset(
            ds,
            signer,
            profile=Profile.SR,
            purpose=purpose,
            mac_algorithm=self.config.signing.mac_algorithm.value,
            tags=author_signed_tags(ds),
        )
        _check_signatures(ds)
        stored = self._archive(
            ds,
            AuditEvent.REPORT_SIGNED,
            {"purpose": str(purpose), "signer": signer.subject, "signature_uid": info.uid},
        )
        write_document(ds, path, self.config.node.ae_title)  # the draft file is signed too
        stored.signature_uid, stored.signer = info.uid, signer.subject
        return stored

    def _draft(self, source: str) -> Path:
        """A draft by path, or by SOP Instance UID in the reports folder."""
        given = Path(source)
        if given.is_file():
            return given
        candidate = self.settings.output / f"{source}.dcm"
        if candidate.is_file():
            return candidate
        raise UsageError(f"{source}: no such report file (nor in {self.settings.output})")

    # -- verify ------------------------------------------------------------------------

    def verify(
        self,
        source: str,
        *,
        by: str | None,
        purpose: Purpose = VERIFICATION,
        out: Path | None = None,
        now: datetime | None = None,
    ) -> Outcome:
        """Archive the verified report (a new instance) and write its CDA."""
        if purpose.value not in (VERIFICATION.value, VALIDATION.value):
            raise UsageError("a verifier signs with purpose verification (5) or validation (6)")
        previous = self._archived_report(source)
        trust = self.trust()
        check = verify_file(previous, trust=trust)
        if not check.ok:
            raise OperationFailed(
                f"report {source}: its signatures do not verify: {'; '.join(check.problems)}"
            )
        original = dcmread(previous)
        person = self.person(by, "verifier")
        signer = load_signer(person.key, person.certificate, person.passphrase_env)
        algorithm = self.config.signing.mac_algorithm.value
        mac, signatures = secure_references(previous, algorithm, trust)
        predecessor = Reference(
            sop_class_uid=str(original.SOPClassUID),
            sop_instance_uid=str(original.SOPInstanceUID),
            series_uid=str(original.SeriesInstanceUID),
            study_uid=str(original.StudyInstanceUID),
            mac_items=[mac],
            signature_items=signatures,
        )
        cda_uid = new_uid()
        folder = (out or self.settings.output).resolve()
        cda_target = folder / f"{cda_uid}.xml"
        verifier = observer_for(person, self.settings.institution)
        ds = verified_report(
            original,
            sop_instance_uid=new_uid(),
            cda_uid=cda_uid,
            cda_uri=cda_target.as_uri(),
            verifier=verifier,
            organization=verifier.institution,
            predecessor=predecessor,
            when=now or datetime.now(UTC),
        )
        profile = Profile.SR_VERIFICATION if purpose.value == VERIFICATION.value else Profile.SR
        info = sign_dataset(ds, signer, profile=profile, purpose=purpose, mac_algorithm=algorithm)
        _check_signatures(ds)
        folder.mkdir(parents=True, exist_ok=True)
        context = self._cda_context(cda_uid, replaces=equivalent_cda_uid(original))
        cda_path = write_cda(build_cda(ds, context), cda_target)
        stored = self._archive(
            ds,
            AuditEvent.REPORT_VERIFIED,
            {
                "purpose": str(purpose),
                "signer": signer.subject,
                "signature_uid": info.uid,
                "verifier": person.name,
                "predecessor": predecessor.sop_instance_uid,
                "cda_uid": cda_uid,
            },
        )
        write_document(ds, folder / f"{ds.SOPInstanceUID}.dcm", self.config.node.ae_title)
        stored.cda_path, stored.signature_uid, stored.signer = cda_path, info.uid, signer.subject
        return stored

    def _archived_report(self, source: str) -> Path:
        """The archived file of a report named by SOP Instance UID or by a copy of it."""
        uid = source
        given = Path(source)
        if given.is_file():
            try:
                uid = str(dcmread(given, stop_before_pixels=True).SOPInstanceUID)
            except (InvalidDicomError, AttributeError, OSError) as exc:
                raise UsageError(f"{source}: not a DICOM report") from exc
        with self.archive.engine.connect() as conn:
            row = find_instance(conn, uid)
        if row is None:
            raise UsageError(
                f"report {uid} is not in the archive: sign it first ('report sign'), "
                "which archives it"
            )
        path = self.archive.files.path(row.path)
        if not is_report(dcmread(path, stop_before_pixels=True)):
            raise UsageError(f"{uid}: not a dictation report (Basic Text SR, TID 2005)")
        return path

    # -- archive -----------------------------------------------------------------------

    def _archive(self, ds: Dataset, event: str, details: dict[str, Any]) -> Outcome:
        """Store through the archive's one write path, record the event, write the sidecar."""
        uid = str(ds.SOPInstanceUID)
        provenance = Provenance(f"report:{uid}", "report", event, details, details)
        archived = archive_document(self.config, self.archive, ds, provenance)
        return Outcome(archived.sop_instance_uid, archived.study_uid, archived.path)


_KOS = str(KeyObjectSelectionDocumentStorage)


def _with_identity(ref: Reference, row: InstanceRow) -> Reference:
    """A copied secure reference, with the identity the archive knows the instance by."""
    return Reference(
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        mac_items=[copy.deepcopy(i) for i in ref.mac_items],
        signature_items=[copy.deepcopy(i) for i in ref.signature_items],
    )


def _check_signatures(ds: Dataset) -> None:
    """Every signature verifies in the document about to be stored (nothing broken)."""
    report = verify_dataset(ds, trust=None)
    broken = [f"{s.uid}: {'; '.join(s.problems)}" for s in report.signatures if not s.mac_ok]
    if broken:
        raise IODError("a signature would not verify in the new document: " + "; ".join(broken))
