"""What a report refers to: its key images, its evidence and the requests it answers.

PS3.17 X.1.2: the key images are the IMAGE items of the study's KOS "For Report
Attachment", oldest first. TID 2005 evidence lists every instance of the requested
procedure (the archive's and those the COMPLETED MPPS lists), each with a secure
reference (PS3.3 C.17.2.1): copied from a trusted "Signed Complete Acquisition Content"
KOS where one covers it (PS3.17 Annex W case 1 step 7), else a MAC computed from the
archived instance. The Referenced Request Sequence comes from the MPPS, else from the
study's Accession Number (PS3.3 C.17.2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.documents.codes import (
    FOR_REPORT_ATTACHMENT,
    KEY_OBJECT_DESCRIPTION,
    SIGNED_COMPLETE_ACQUISITION_CONTENT,
)
from node.documents.publish import secure_reference
from node.documents.report import KeyImages, is_report, referenced_uids, request_item
from node.documents.sr_common import (
    Reference,
    concept_of,
    evidence_references,
    patient_study_from,
)
from node.errors import OperationFailed
from node.mpps.reads import completed_steps, listed_for_study
from node.reports.desk import KOS, SR_PREFIX, ReportDesk
from node.signatures import verify_file
from node.storage.index import InstanceRow, find_instance, study_instances


@dataclass(frozen=True, slots=True)
class ArchivedKos:
    """A KOS of the archive, with its header read."""

    row: InstanceRow
    ds: Dataset

    @property
    def title(self) -> str:
        names = self.ds.get("ConceptNameCodeSequence") or []
        return str(names[0].CodeValue) if names else ""


def read_kos(desk: ReportDesk, row: InstanceRow) -> ArchivedKos:
    path = desk.archive.files.path(row.path)
    return ArchivedKos(row, dcmread(path, stop_before_pixels=True))


def study_kos(desk: ReportDesk, rows: list[InstanceRow]) -> list[ArchivedKos]:
    return [read_kos(desk, row) for row in rows if row.sop_class_uid == KOS]


def attachments_in_archive(desk: ReportDesk, study_uid: str) -> list[ArchivedKos]:
    """The study's KOS "For Report Attachment", oldest first (X.1.2)."""
    kos = study_kos(desk, study_instances(desk.archive.engine, study_uid))
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


def acquisition_references(
    desk: ReportDesk, kos: list[ArchivedKos], trust: list[x509.Certificate], notes: list[str]
) -> dict[str, Reference]:
    """Secure references of trusted "Signed Complete Acquisition Content" KOS (W step 7)."""
    found: dict[str, Reference] = {}
    for k in kos:
        if k.title != SIGNED_COMPLETE_ACQUISITION_CONTENT.value:
            continue
        report = verify_file(desk.archive.files.path(k.row.path), trust=trust)
        if not report.ok:
            notes.append(
                f"KOS {k.row.sop_instance_uid} is not trusted ({'; '.join(report.problems)}): "
                "MACs computed instead"
            )
            continue
        for ref in evidence_references(k.ds, "CurrentRequestedProcedureEvidenceSequence"):
            found[ref.sop_instance_uid] = ref
    return found


def evidence(
    desk: ReportDesk,
    study_uid: str,
    rows: list[InstanceRow],
    covered: dict[str, Reference],
    trust: list[x509.Certificate],
) -> list[Reference]:
    """Every instance of the requested procedure (archive and MPPS), securely referenced."""
    algorithm = desk.config.signing.mac_algorithm.value
    found: list[Reference] = []
    for row in rows:
        if row.sop_class_uid.startswith(SR_PREFIX) and row.sop_class_uid != KOS:
            header = dcmread(desk.archive.files.path(row.path), stop_before_pixels=True)
            if is_report(header):
                continue  # earlier reports are documents about the evidence, not evidence
        copied = covered.get(row.sop_instance_uid)
        if copied is not None:
            found.append(_with_identity(copied, row))
        else:
            found.append(secure_reference(desk.archive, row, algorithm, trust))
    archived = {row.sop_instance_uid for row in rows}
    missing = []
    for listed in listed_for_study(desk.archive.engine, study_uid):
        uid = listed.sop_instance_uid
        if uid in archived:
            continue
        if uid in covered:
            found.append(covered[uid])
        else:
            missing.append(f"{uid} (series {listed.series_uid}, {listed.sop_class_uid})")
    if missing:
        raise OperationFailed(
            "instances listed by the MPPS are not in the archive, so they cannot be "
            f"securely referenced: {', '.join(missing)}"
        )
    return found


def requests(desk: ReportDesk, study_uid: str, rows: list[InstanceRow]) -> list[Dataset]:
    """Referenced Request Sequence items: from the MPPS, else the study's accession."""
    items: list[Dataset] = []
    seen: set[tuple[str, str]] = set()
    for step in completed_steps(desk.archive.engine, study_uid):
        for ssa in step.get("ScheduledStepAttributesSequence") or []:
            key = (str(ssa.get("AccessionNumber", "")), str(ssa.get("RequestedProcedureID")))
            if key not in seen:
                seen.add(key)
                items.append(request_item(study_uid, ssa))
    if not items:
        study = patient_study_from(desk.archive.files.path(rows[0].path))
        if str(study.get("AccessionNumber", "") or ""):
            items.append(request_item(study_uid, study))
    return items


def key_images(kos: ArchivedKos, notes: list[str]) -> KeyImages:
    """The IMAGE items of a KOS and its description (TID 2005 row 7 takes IMAGE only)."""
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


def other_evidence(
    desk: ReportDesk,
    groups: list[KeyImages],
    current_evidence: list[Reference],
    trust: list[x509.Certificate],
) -> list[Reference]:
    """Key images (and their presentation states) outside the requested procedure."""
    current = {r.sop_instance_uid for r in current_evidence}
    algorithm = desk.config.signing.mac_algorithm.value
    other: dict[str, Reference] = {}
    for group in groups:
        for image in group.images:
            for uid in referenced_uids(image):
                if uid in current or uid in other:
                    continue
                with desk.archive.engine.connect() as conn:
                    row = find_instance(conn, uid)
                if row is None:
                    raise OperationFailed(
                        f"key image {uid} of KOS {group.kos_uid} is not in the archive: "
                        "its secure reference cannot be made (retrieve it first)"
                    )
                other[uid] = secure_reference(desk.archive, row, algorithm, trust)
    return list(other.values())


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
