"""WADO-URI, the URI service of PS3.18 (9.1, 9.2): one archived object by its UIDs.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..&contentType=..``

- ``application/dicom`` answers the archived Part 10 file byte for byte (PS3.18 9.2.2.1:
  the object as stored; the node never transcodes, so a ``transferSyntax`` other than the
  stored one is answered 406).
- Rendered media types (``image/jpeg``, the default for single-frame images, and the
  others of PS3.18 Table 9.2-1) are not available yet: 406 Not Acceptable names what is.
- A missing or malformed parameter is 400 with the parameter's name; an object that is
  not in the archive, or not in the named study and series, is 404 (whatever the media
  type asked for). Never a 500 for a
  request: an index that cannot be read is 503.
- Every object served is a ``wado-retrieved`` custody record (client address, UIDs,
  media type), committed before the first byte goes out.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from node.errors import NodeError
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.index import find_instance
from node.storage.uids import is_valid_uid

log = logging.getLogger("node.web")

DICOM = "application/dicom"
# PS3.18 Table 9.2-1: what a WADO-URI server may be asked for (single-frame default JPEG).
RENDERED = frozenset({"image/jpeg", "image/gif", "image/png", "image/jp2", "video/mpeg"})
UID_PARAMETERS = ("studyUID", "seriesUID", "objectUID")


def _problem(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=status)


def accepted_types(value: str | None) -> list[str]:
    """The media types of a ``contentType`` value, in order, without parameters
    (PS3.18 9.1.2.1.1: a list of media types; image/jpeg when absent)."""
    if not value:
        return ["image/jpeg"]
    return [part.split(";")[0].strip().lower() for part in value.split(",") if part.strip()]


class WadoUri:
    """The ``/wado`` endpoint over one archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def handle(self, request: Request) -> Response:
        """Starlette runs this synchronous endpoint in its thread pool (file and index I/O)."""
        query = request.query_params
        if query.get("requestType") != "WADO":
            return _problem(400, "requestType: must be WADO")
        uids = {}
        for name in UID_PARAMETERS:
            value = query.get(name, "")
            if not is_valid_uid(value):
                return _problem(400, f"{name}: missing or not a valid UID")
            uids[name] = value
        try:
            with self.archive.engine.connect() as conn:
                row = find_instance(conn, uids["objectUID"])
        except SQLAlchemyError as exc:
            log.warning("WADO-URI: index not readable: %s", exc)
            return _problem(503, "the index cannot be read now")
        if row is None or (row.study_uid, row.series_uid) != (
            uids["studyUID"],
            uids["seriesUID"],
        ):
            return _problem(404, "no such object in the archive")
        types = accepted_types(query.get("contentType"))
        if DICOM not in types and "*/*" not in types:
            wanted = ", ".join(types)
            return _problem(406, f"contentType {wanted}: only {DICOM} is served (no rendering)")
        if query.get("anonymize", "").lower() == "yes":
            return _problem(406, "anonymize: the node serves objects only as archived")
        syntax = query.get("transferSyntax")
        if syntax and syntax != row.transfer_syntax_uid:
            return _problem(
                406, f"transferSyntax: the object is stored in {row.transfer_syntax_uid} only"
            )
        path = self.archive.files.path(row.path)
        if not path.is_file():
            log.warning("WADO-URI: archived file of %s is missing", row.sop_instance_uid)
            return _problem(404, "the archived file is missing")
        client = request.client
        try:
            self.archive.record(
                AuditEvent.WADO_RETRIEVED,
                study_uid=row.study_uid,
                sop_instance_uid=row.sop_instance_uid,
                client=f"{client.host}:{client.port}" if client else "",
                content_type=DICOM,
            )
        except NodeError as exc:  # no custody record, no data: the record comes first
            log.warning("WADO-URI: %s", exc)
            return _problem(503, "the custody record cannot be written now")
        return FileResponse(path, media_type=DICOM)
