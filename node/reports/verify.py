"""Verify an archived report: the verified report is a new instance (PS3.17 W step 9).

PS3.4 Annex O: verifying an SR creates a new SOP Instance that names its predecessor
in the Predecessor Documents Sequence (PS3.3 C.17.2), with a secure reference to it.
It is signed under the SR RSA verification profile (PS3.15 C.4, purpose 5 "Verification
Signature") or the SR RSA profile with a Validation Signature (purpose 6), archived,
and given a new equivalent CDA (PS3.17 X.4.2) that replaces the predecessor's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.documents.cda import build_cda, write_cda
from node.documents.report import equivalent_cda_uid, is_report, verified_report
from node.documents.sr_common import Reference
from node.errors import OperationFailed, UsageError
from node.identity import new_uid
from node.reports.desk import (
    VALIDATION,
    Outcome,
    ReportDesk,
    check_signatures,
    observer_for,
    write_document,
)
from node.signatures import (
    Profile,
    Purpose,
    load_signer,
    secure_references,
    sign_dataset,
    verify_file,
)
from node.signatures.purposes import VERIFICATION
from node.storage.audit import AuditEvent
from node.storage.index import find_instance


def verify_report(
    desk: ReportDesk,
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
    previous = _archived_report(desk, source)
    trust = desk.trust()
    check = verify_file(previous, trust=trust)
    if not check.ok:
        raise OperationFailed(
            f"report {source}: its signatures do not verify: {'; '.join(check.problems)}"
        )
    original = dcmread(previous)
    person = desk.person(by, "verifier")
    signer = load_signer(person.key, person.certificate, person.passphrase_env)
    algorithm = desk.config.signing.mac_algorithm.value
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
    folder = (out or desk.settings.output).resolve()
    cda_target = folder / f"{cda_uid}.xml"
    verifier = observer_for(person, desk.settings.institution)
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
    check_signatures(ds)
    folder.mkdir(parents=True, exist_ok=True)
    context = desk.cda_context(cda_uid, replaces=equivalent_cda_uid(original))
    cda_path = write_cda(build_cda(ds, context), cda_target)
    stored = desk.archive_report(
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
    write_document(ds, folder / f"{ds.SOPInstanceUID}.dcm", desk.config.node.ae_title)
    stored.cda_path, stored.signature_uid, stored.signer = cda_path, info.uid, signer.subject
    return stored


def _archived_report(desk: ReportDesk, source: str) -> Path:
    """The archived file of a report named by SOP Instance UID or by a copy of it."""
    uid = source
    given = Path(source)
    if given.is_file():
        try:
            uid = str(dcmread(given, stop_before_pixels=True).SOPInstanceUID)
        except (InvalidDicomError, AttributeError, OSError) as exc:
            raise UsageError(f"{source}: not a DICOM report") from exc
    with desk.archive.engine.connect() as conn:
        row = find_instance(conn, uid)
    if row is None:
        raise UsageError(
            f"report {uid} is not in the archive: sign it first ('report sign'), which archives it"
        )
    path = desk.archive.files.path(row.path)
    if not is_report(dcmread(path, stop_before_pixels=True)):
        raise UsageError(f"{uid}: not a dictation report (Basic Text SR, TID 2005)")
    return path
