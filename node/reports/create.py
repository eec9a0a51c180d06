"""Create a draft dictation report and its equivalent CDA (PS3.17 Annex X).

The transcription becomes an unverified Basic Text SR (TID 2005, X.2) with the key
images of every KOS "For Report Attachment" of the study (X.1.2) and the evidence of
the requested procedure, securely referenced (Annex W case 1 step 7); its equivalent
HL7 CDA document (X.4.2) is written beside it. Nothing enters the archive yet: a draft
is archived when it is signed (:mod:`node.reports.sign`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydicom.sr.coding import Code

from node.documents.cda import build_cda, write_cda
from node.documents.report import ReportRequest, build_report
from node.documents.sr_common import patient_study_from
from node.documents.transcription import parse_transcription
from node.errors import UsageError
from node.identity import new_uid
from node.reports import evidence as ev
from node.reports.desk import NO_WADO, Outcome, ReportDesk, observer_for, write_document
from node.reports.fetch import attachments
from node.signatures import load_trust
from node.storage import audit
from node.storage.audit import AuditEvent
from node.storage.index import study_instances


def create_report(
    desk: ReportDesk,
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
    settings, config, archive = desk.settings, desk.config, desk.archive
    if not config.wado_base_url:
        raise UsageError(NO_WADO)
    person = desk.person(author, "author")
    sections = parse_transcription(text)
    notes: list[str] = []
    trust = load_trust(config.trust)
    if not study_instances(archive.engine, study_uid):
        raise UsageError(f"study {study_uid} is not in the archive")
    attached = attachments(desk, study_uid, notes)
    rows = study_instances(archive.engine, study_uid)  # with any KOS just fetched
    covered = ev.acquisition_references(desk, ev.study_kos(desk, rows), trust, notes)
    evidence = ev.evidence(desk, study_uid, rows, covered, trust)
    groups = [ev.key_images(k, notes) for k in attached]
    other = ev.other_evidence(desk, groups, evidence, trust)
    report_uid, cda_uid = new_uid(), new_uid()
    folder = (out or settings.output).resolve()
    cda_target = folder / f"{cda_uid}.xml"
    ds = build_report(
        ReportRequest(
            sop_instance_uid=report_uid,
            series_uid=new_uid(),
            cda_uid=cda_uid,
            cda_uri=cda_target.as_uri(),
            patient_study=patient_study_from(archive.files.path(rows[0].path)),
            sections=sections,
            author=observer_for(person, settings.institution),
            station_name=config.node.ae_title,
            retrieve_ae_title=config.node.ae_title,
            title=title,
            language=Code(settings.language, "RFC5646", settings.language_meaning),
            institution=settings.institution,
            key_images=groups,
            evidence=evidence,
            other_evidence=other,
            requests=ev.requests(desk, study_uid, rows),
            complete=complete,
            content_time=now or datetime.now(UTC),
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = write_document(ds, folder / f"{report_uid}.dcm", config.node.ae_title)
    cda_path = write_cda(build_cda(ds, desk.cda_context(cda_uid)), cda_target)
    with archive.engine.begin() as conn:
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
