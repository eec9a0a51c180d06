"""Key images for a report that the archive lacks: fetched from ``reporting.source``.

PS3.17 X.1.2: the KOS "For Report Attachment" of the study are the physician's key
image selection. When the archive holds none, every KOS series of the study is
retrieved by C-GET (PS3.4 C.4.3) from the configured source and filtered by title
afterwards: the document title is no reliable query key.
"""

from __future__ import annotations

from node.errors import NodeError, OperationFailed, UsageError
from node.reports.desk import KOS, ReportDesk
from node.reports.evidence import ArchivedKos, attachments_in_archive
from node.retrieve.client import RetrieveRequest, find_series, retrieve


def attachments(desk: ReportDesk, study_uid: str, notes: list[str]) -> list[ArchivedKos]:
    """KOS "For Report Attachment" of the study, fetched from the source if none."""
    found = attachments_in_archive(desk, study_uid)
    source = desk.settings.source
    if found or not source:
        if not found:
            notes.append("no KOS 'For Report Attachment' in the archive; no key images")
        return found
    fetched = fetch_kos(desk, study_uid, source)
    found = attachments_in_archive(desk, study_uid)
    notes.append(
        f"no KOS 'For Report Attachment' in the archive: retrieved {fetched} KOS series "
        f"from {source}, {len(found)} KOS for report attachment"
    )
    return found


def fetch_kos(desk: ReportDesk, study_uid: str, source_name: str) -> int:
    """Retrieve every KOS series of the study; return how many series were asked for."""
    config = desk.config
    source = config.remote(source_name)
    if source is None:
        raise UsageError(f"reporting.source: no source named {source_name!r}")
    try:
        kos_series = find_series(config, source, study_uid, modality="KO")
        wanted = [RetrieveRequest(study_uid, uid, sop_class_uids=(KOS,)) for uid, _ in kos_series]
        if not wanted:
            return 0
        result = retrieve(config, desk.archive, source, wanted, method="get")
    except NodeError as exc:
        raise OperationFailed(f"cannot fetch KOS from {source_name}: {exc}") from exc
    if not result.ok:
        raise OperationFailed(f"cannot fetch KOS from {source_name}: {result}")
    return len(wanted)
