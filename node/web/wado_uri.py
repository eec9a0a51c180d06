"""WADO-URI, the URI service of PS3.18 (9.1, 9.2): one archived object by its UIDs.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..&contentType=..``

- ``application/dicom`` answers the archived Part 10 file byte for byte (PS3.18 9.2.2.1:
  the object as stored; the node never transcodes, so a ``transferSyntax`` other than the
  stored one is answered 406).
- ``image/jpeg`` (the default when ``contentType`` is absent), ``image/png`` and
  ``image/gif`` answer one rendered frame (:mod:`node.web.render`: window, region, size,
  frame); the first type of the list the node can make is served. Other types
  (``video/mpeg``, ``image/jp2``) and what cannot be rendered are 406 Not Acceptable with
  the reason; a malformed rendering parameter is 400.
- A missing or malformed parameter is 400 with the parameter's name; an object that is
  not in the archive, or not in the named study and series, is 404 (whatever the media
  type asked for). Never a 500 for a
  request: an index that cannot be read is 503.
- Every object served is a ``wado-retrieved`` custody record (client address, UIDs,
  media type), committed before the first byte goes out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from node.errors import NodeError
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow, find_instance
from node.storage.uids import is_valid_uid
from node.web.render import FORMATS, BadParameter, NotRenderable, parse_rendering, render

log = logging.getLogger("node.web")

DICOM = "application/dicom"
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
        try:
            return self._answer(request)
        except _Refusal as refusal:
            return _problem(refusal.status, refusal.text)

    def _answer(self, request: Request) -> Response:
        query = request.query_params
        row = self._locate(query)
        if query.get("anonymize", "").lower() == "yes":
            raise _Refusal(406, "anonymize: the node serves objects only as archived")
        types = accepted_types(query.get("contentType"))
        chosen = next((t for t in types if t in (DICOM, "*/*") or t in FORMATS), None)
        if chosen is None:
            served = ", ".join((DICOM, *FORMATS))
            raise _Refusal(406, f"contentType {', '.join(types)}: the node serves {served}")
        path = self.archive.files.path(row.path)
        if not path.is_file():
            log.warning("WADO-URI: archived file of %s is missing", row.sop_instance_uid)
            raise _Refusal(404, "the archived file is missing")
        body = self._rendered(path, query, chosen) if chosen in FORMATS else None
        if body is None:
            chosen = DICOM
            syntax = query.get("transferSyntax")
            if syntax and syntax != row.transfer_syntax_uid:
                stored = row.transfer_syntax_uid
                raise _Refusal(406, f"transferSyntax: the object is stored in {stored} only")
        self._record(request, row, chosen)
        if body is not None:
            return Response(body, media_type=chosen)
        return FileResponse(path, media_type=DICOM)

    def _locate(self, query: Any) -> InstanceRow:
        """The archived instance the UIDs name (400 for a bad UID, 404 if absent)."""
        if query.get("requestType") != "WADO":
            raise _Refusal(400, "requestType: must be WADO")
        uids = {}
        for name in UID_PARAMETERS:
            value = query.get(name, "")
            if not is_valid_uid(value):
                raise _Refusal(400, f"{name}: missing or not a valid UID")
            uids[name] = value
        try:
            with self.archive.engine.connect() as conn:
                row = find_instance(conn, uids["objectUID"])
        except SQLAlchemyError as exc:
            log.warning("WADO-URI: index not readable: %s", exc)
            raise _Refusal(503, "the index cannot be read now") from None
        if row is None or (row.study_uid, row.series_uid) != (
            uids["studyUID"],
            uids["seriesUID"],
        ):
            raise _Refusal(404, "no such object in the archive")
        return row

    @staticmethod
    def _rendered(path: Path, query: Any, media_type: str) -> bytes:
        try:
            return render(path, parse_rendering(query, media_type))
        except BadParameter as exc:
            raise _Refusal(400, str(exc)) from None
        except NotRenderable as exc:
            raise _Refusal(406, f"{media_type}: {exc}") from None

    def _record(self, request: Request, row: InstanceRow, media_type: str) -> None:
        """The custody record of what is served: written before the first byte goes out.
        A HEAD request gets the headers only, so no data leaves and nothing is recorded."""
        if request.method == "HEAD":
            return
        client = request.client
        try:
            self.archive.record(
                AuditEvent.WADO_RETRIEVED,
                study_uid=row.study_uid,
                sop_instance_uid=row.sop_instance_uid,
                client=f"{client.host}:{client.port}" if client else "",
                content_type=media_type,
            )
        except NodeError as exc:  # no custody record, no data
            log.warning("WADO-URI: %s", exc)
            raise _Refusal(503, "the custody record cannot be written now") from None


class _Refusal(Exception):
    """An HTTP error answer with its one-line reason."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text
