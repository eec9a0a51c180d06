"""Sign a draft report with a person's key and archive it (PS3.17 Annex W case 1 step 8).

The signature is an Author's Signature by default (code 1 of CID 7007, ASTM-sigpurpose)
under the SR RSA profile (PS3.15 C.4) with the signer's own key, covering the tags
:func:`node.documents.report.author_signed_tags` names. The signed report goes through
the archive's one write path, with its sidecar and a custody event; the draft file is
rewritten signed too.
"""

from __future__ import annotations

from pathlib import Path

from node.documents.report import author_signed_tags, is_report
from node.errors import UsageError
from node.reports.desk import VALIDATION, Outcome, ReportDesk, check_signatures, write_document
from node.signatures import Profile, Purpose, load_for_signing, load_signer, sign_dataset
from node.signatures.purposes import AUTHOR, VERIFICATION
from node.storage.audit import AuditEvent
from node.storage.index import find_instance


def sign_report(
    desk: ReportDesk, source: str, *, purpose: Purpose = AUTHOR, by: str | None = None
) -> Outcome:
    """Sign a draft with a person's key (Author Signature by default) and archive it."""
    if purpose.value in (VERIFICATION.value, VALIDATION.value):
        raise UsageError("verification and validation signatures: use 'report verify'")
    path = _draft(desk, source)
    ds = load_for_signing(path)
    if not is_report(ds):
        raise UsageError(f"{path}: not a dictation report (Basic Text SR, TID 2005)")
    with desk.archive.engine.connect() as conn:
        if find_instance(conn, str(ds.SOPInstanceUID)) is not None:
            raise UsageError(
                f"report {ds.SOPInstanceUID} is already archived; the archive keeps it as "
                "stored (verify it with 'report verify')"
            )
    if by is None and purpose is AUTHOR:
        by = str(ds.AuthorObserverSequence[0].PersonName)
    person = desk.person(by, "signer")
    signer = load_signer(person.key, person.certificate, person.passphrase_env)
    info = sign_dataset(
        ds,
        signer,
        profile=Profile.SR,
        purpose=purpose,
        mac_algorithm=desk.config.signing.mac_algorithm.value,
        tags=author_signed_tags(ds),
    )
    check_signatures(ds)
    stored = desk.archive_report(
        ds,
        AuditEvent.REPORT_SIGNED,
        {"purpose": str(purpose), "signer": signer.subject, "signature_uid": info.uid},
    )
    write_document(ds, path, desk.config.node.ae_title)  # the draft file is signed too
    stored.signature_uid, stored.signer = info.uid, signer.subject
    return stored


def _draft(desk: ReportDesk, source: str) -> Path:
    """A draft by path, or by SOP Instance UID in the reports folder."""
    given = Path(source)
    if given.is_file():
        return given
    candidate = desk.settings.output / f"{source}.dcm"
    if candidate.is_file():
        return candidate
    raise UsageError(f"{source}: no such report file (nor in {desk.settings.output})")
