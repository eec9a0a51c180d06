"""WADO-URI references (PS3.18 chapter 9, formerly 8.1; PS3.17 X.4.3): parse and group.

A WADO-URI names one object by its Study, Series and SOP Instance UIDs; that is all a
DICOM retrieve needs (PS3.17 X.4.3). Every PS3.18 parameter is parsed and checked as a
WADO server would (a server answers 400 where :func:`parse_wado_uri` raises), but the
parameters that shape an HTTP response (rendering, character set, de-identification,
transfer syntax) do not apply to a C-GET or C-MOVE of the stored object: they are kept
in the reference and explained by :meth:`WadoReference.notes`. A presentation state
named by presentationUID/presentationSeriesUID is retrieved as well.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from node.errors import UsageError
from node.scu.request import RetrieveRequest
from node.storage.uids import is_valid_uid

DICOM_MEDIA_TYPE = "application/dicom"
# Rendered media types a lossy quality applies to (PS3.18 Table 8.7.3-5 and 9.1.2).
LOSSY_MEDIA_TYPES = frozenset(
    {"image/jpeg", "image/jp2", "image/jph", "image/jxl", "video/mpeg", "video/mp4", "video/h265"}
)
ANNOTATIONS = frozenset({"patient", "technique"})

# Parameters that only shape a rendered image; forbidden with application/dicom alone.
RENDERING = (
    "annotation",
    "imageAnnotation",
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "imageQuality",
    "presentationUID",
    "presentationSeriesUID",
)
# Parameters that only apply to application/dicom.
DICOM_ONLY = ("anonymize", "transferSyntax")
# With a presentation state, only these optional parameters may appear (PS3.18 9.1.2).
WITH_PRESENTATION = frozenset(
    {"contentType", "charset", "annotation", "imageAnnotation", "imageQuality", "region"}
    | {"rows", "columns", "presentationUID", "presentationSeriesUID"}
)
REQUIRED = ("requestType", "studyUID", "seriesUID", "objectUID")
KNOWN = frozenset((*REQUIRED, "contentType", "charset", "anonymize", *RENDERING, *DICOM_ONLY))

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_RANGE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CHARSET = re.compile(_TOKEN)
_QVALUE = re.compile(r"(0(\.[0-9]{0,3})?|1(\.0{0,3})?)")
_POSITIVE = re.compile(r"[1-9][0-9]{0,8}")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_URL = re.compile(r"""https?://[^\s"'<>]+""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WadoReference:
    """One parsed WADO-URI request (PS3.18 9.1.2), with the URL as given."""

    url: str
    study_uid: str
    series_uid: str
    object_uid: str
    content_types: tuple[str, ...] = ()
    charsets: tuple[str, ...] = ()
    anonymize: bool = False
    annotation: tuple[str, ...] = ()
    rows: int | None = None
    columns: int | None = None
    region: tuple[float, float, float, float] | None = None
    window_center: float | None = None
    window_width: float | None = None
    frame_number: int | None = None
    image_quality: int | None = None
    presentation_uid: str | None = None
    presentation_series_uid: str | None = None
    transfer_syntax: str | None = None
    unknown: tuple[str, ...] = ()

    @property
    def wants_rendered(self) -> bool:
        """True when contentType names media types other than application/dicom only."""
        return bool(self.content_types) and DICOM_MEDIA_TYPE not in self.content_types

    def notes(self) -> list[str]:
        """What a DICOM retrieve does with the parameters it cannot honour, and why."""
        notes = []
        if self.wants_rendered:
            notes.append(
                f"contentType={','.join(self.content_types)} asks for a rendering; the "
                "DICOM object it is rendered from is retrieved"
            )
        rendering = [
            name
            for name, given in (
                ("annotation", bool(self.annotation)),
                ("rows", self.rows is not None),
                ("columns", self.columns is not None),
                ("region", self.region is not None),
                ("windowCenter/windowWidth", self.window_center is not None),
                ("imageQuality", self.image_quality is not None),
            )
            if given
        ]
        if rendering:
            notes.append(
                f"{', '.join(rendering)} ignored: rendering parameters do not apply to a "
                "DICOM retrieve"
            )
        if self.frame_number is not None:
            notes.append(
                f"frameNumber={self.frame_number}: the whole object is retrieved, every frame"
            )
        if self.presentation_uid:
            notes.append(
                f"the presentation state {self.presentation_uid} (series "
                f"{self.presentation_series_uid}) is retrieved as well"
            )
        if self.charsets:
            notes.append("charset ignored: the object keeps its own Specific Character Set")
        if self.anonymize:
            notes.append(
                "anonymize=yes ignored: the archive keeps the object exactly as the source "
                "holds it (de-identify copies when exporting)"
            )
        if self.transfer_syntax:
            notes.append(
                f"transferSyntax={self.transfer_syntax} ignored: the object is stored in the "
                "transfer syntax the source sends, never transcoded"
            )
        notes.extend(f"unknown parameter {name!r} ignored" for name in self.unknown)
        return notes


class _Problem(Exception):
    """A parameter value is invalid (internal: becomes a UsageError naming the URL)."""


def parse_wado_uri(url: str) -> WadoReference:
    """Parse and validate one WADO-URI; raise UsageError naming the URL and the parameter."""
    text = url.strip()
    if "&amp;" in text:
        text = html.unescape(text)  # copied from HTML or XML (a CDA linkHtml) unescaped
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url}: not an http or https URL")
    if not parts.query:
        raise UsageError(f"{url}: no query parameters (a WADO-URI needs requestType=WADO)")
    values: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in values:
            raise UsageError(f"{url}: parameter {name} is given more than once")
        if name not in KNOWN:
            canonical = _canonical(name)
            if canonical:
                raise UsageError(
                    f"{url}: parameter {name}: parameter names are case-sensitive, "
                    f"write {canonical}"
                )
            unknown.append(name)
        values[name] = value
    for name in REQUIRED:
        if name not in values:
            raise UsageError(f"{url}: parameter {name} is missing (required by PS3.18)")
    try:
        return _reference(text, values, tuple(unknown))
    except _Problem as exc:
        raise UsageError(f"{url}: {exc}") from None


def _canonical(name: str) -> str | None:
    lowered = name.lower()
    for known in KNOWN:
        if known.lower() == lowered:
            return known
    return None


def _reference(url: str, values: dict[str, str], unknown: tuple[str, ...]) -> WadoReference:
    if values["requestType"] != "WADO":
        raise _Problem(f"parameter requestType must be WADO, not {values['requestType']!r}")
    if "annotation" in values and "imageAnnotation" in values:
        raise _Problem("parameter annotation is given twice (as annotation and imageAnnotation)")
    _pair(values, "windowCenter", "windowWidth")
    _pair(values, "presentationUID", "presentationSeriesUID")
    content_types = _content_types(values.get("contentType"))
    _check_media_rules(values, content_types)
    region = _region(values["region"]) if "region" in values else None
    return WadoReference(
        url=url,
        study_uid=_uid(values, "studyUID"),
        series_uid=_uid(values, "seriesUID"),
        object_uid=_uid(values, "objectUID"),
        content_types=content_types,
        charsets=_charsets(values.get("charset")),
        anonymize=_anonymize(values.get("anonymize")),
        annotation=_annotation(values.get("annotation", values.get("imageAnnotation"))),
        rows=_positive(values, "rows"),
        columns=_positive(values, "columns"),
        region=region,
        window_center=_decimal(values, "windowCenter"),
        window_width=_window_width(values),
        frame_number=_positive(values, "frameNumber"),
        image_quality=_quality(values),
        presentation_uid=_uid(values, "presentationUID") if "presentationUID" in values else None,
        presentation_series_uid=(
            _uid(values, "presentationSeriesUID") if "presentationSeriesUID" in values else None
        ),
        transfer_syntax=_uid(values, "transferSyntax") if "transferSyntax" in values else None,
        unknown=unknown,
    )


def _pair(values: dict[str, str], first: str, second: str) -> None:
    if (first in values) != (second in values):
        given, absent = (first, second) if first in values else (second, first)
        raise _Problem(f"parameter {given} needs {absent} too (both or neither)")


def _check_media_rules(values: dict[str, str], content_types: tuple[str, ...]) -> None:
    """Parameters that belong to the other kind of response are errors (PS3.18 9.1.2)."""
    if content_types and all(t == DICOM_MEDIA_TYPE for t in content_types):
        for name in RENDERING:
            if name in values:
                raise _Problem(
                    f"parameter {name} applies to rendered media types, not to "
                    "contentType=application/dicom"
                )
    if content_types and not any(_covers(t, DICOM_MEDIA_TYPE) for t in content_types):
        for name in DICOM_ONLY:
            if name in values:
                raise _Problem(f"parameter {name} applies only to contentType=application/dicom")
    if "presentationUID" in values:
        for name in values:
            if name not in WITH_PRESENTATION and name not in REQUIRED and name in KNOWN:
                raise _Problem(
                    f"parameter {name} may not be combined with presentationUID "
                    "(the presentation state defines the rendering)"
                )
    lossy = any(_covers(t, m) for t in content_types for m in LOSSY_MEDIA_TYPES)
    if "imageQuality" in values and content_types and not lossy:
        raise _Problem(
            "parameter imageQuality applies only to lossy media types "
            f"({', '.join(sorted(LOSSY_MEDIA_TYPES))})"
        )


def _covers(media_range: str, media_type: str) -> bool:
    """True when ``media_range`` (``*/*``, ``image/*`` or a type) includes ``media_type``."""
    kind, _, subtype = media_range.partition("/")
    wanted_kind, _, wanted_subtype = media_type.partition("/")
    return kind in ("*", wanted_kind) and subtype in ("*", wanted_subtype)


def _uid(values: dict[str, str], name: str) -> str:
    value = values[name]
    if not value:
        raise _Problem(f"parameter {name} is empty")
    if not is_valid_uid(value):
        raise _Problem(f"parameter {name} is not a valid UID: {value!r}")
    return value


def _content_types(raw: str | None) -> tuple[str, ...]:
    """The media types of contentType: comma list, optional ;q= weights (PS3.18 8.3.3.1)."""
    if raw is None:
        return ()
    found = []
    for item in raw.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not _MEDIA_RANGE.fullmatch(media):
            raise _Problem(f"parameter contentType: {item.strip()!r} is not a media type")
        for param in params:
            key, _, value = param.partition("=")
            key = key.strip().lower()
            if key in ("transfer-syntax", "charset"):
                raise _Problem(
                    f"parameter contentType: the {key} media-type parameter is not allowed "
                    "(use the transferSyntax or charset parameter)"
                )
            if key != "q" or not _QVALUE.fullmatch(value.strip()):
                raise _Problem(f"parameter contentType: invalid media-type parameter {param!r}")
        found.append(media.lower())
    return tuple(found)


def _charsets(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    found = []
    for item in raw.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if not _CHARSET.fullmatch(name):
            raise _Problem(f"parameter charset: {item.strip()!r} is not a character set name")
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() != "q" or not _QVALUE.fullmatch(value.strip()):
                raise _Problem(f"parameter charset: invalid parameter {param!r}")
        found.append(name)
    return tuple(found)


def _anonymize(raw: str | None) -> bool:
    if raw is None:
        return False
    if raw != "yes":
        raise _Problem(f"parameter anonymize must be yes, not {raw!r}")
    return True


def _annotation(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = tuple(item.strip() for item in raw.split(","))
    for item in items:
        if item not in ANNOTATIONS:
            raise _Problem(f"parameter annotation: {item!r} is not patient or technique")
    return items


def _positive(values: dict[str, str], name: str) -> int | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not _POSITIVE.fullmatch(raw):
        raise _Problem(f"parameter {name} must be a positive integer, not {raw!r}")
    return int(raw)


def _decimal(values: dict[str, str], name: str) -> float | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw) or not math.isfinite(float(raw)):
        raise _Problem(f"parameter {name} must be a decimal number, not {raw!r}")
    return float(raw)


def _window_width(values: dict[str, str]) -> float | None:
    width = _decimal(values, "windowWidth")
    if width is not None and width <= 0:
        raise _Problem(f"parameter windowWidth must be greater than 0, not {width:g}")
    return width


def _quality(values: dict[str, str]) -> int | None:
    quality = _positive(values, "imageQuality")
    if quality is not None and quality > 100:
        raise _Problem(f"parameter imageQuality must be 1 to 100, not {quality}")
    return quality


def _region(raw: str) -> tuple[float, float, float, float]:
    """xmin,ymin,xmax,ymax normalised to 0.0-1.0 of the image (PS3.18 9.1.2)."""
    items = raw.split(",")
    if len(items) != 4 or not all(_DECIMAL.fullmatch(item.strip()) for item in items):
        raise _Problem(f"parameter region must be four decimals xmin,ymin,xmax,ymax, not {raw!r}")
    xmin, ymin, xmax, ymax = (float(item) for item in items)
    if not all(0.0 <= v <= 1.0 for v in (xmin, ymin, xmax, ymax)):
        raise _Problem(f"parameter region: values must lie in 0.0-1.0, not {raw!r}")
    if not (xmin < xmax and ymin < ymax):
        raise _Problem(f"parameter region: needs xmin < xmax and ymin < ymax, not {raw!r}")
    return (xmin, ymin, xmax, ymax)


def read_wado_urls(text: str) -> list[str]:
    """The WADO-URIs of a file: a plain list, or the links of an XML/HTML (CDA) document.

    A plain list has one URL per line; blank lines and ``#`` comments are skipped and
    every other line is returned (so a bad line is reported, not dropped). In XML or
    HTML, every http(s) URL with ``requestType=WADO`` in an attribute value or in text
    is taken, entities such as ``&amp;`` unescaped; repeats are dropped in order.
    """
    if text.lstrip().startswith("<"):
        found = (html.unescape(m.group(0)) for m in _URL.finditer(text))
        urls: Iterable[str] = (u for u in found if "requestType=WADO" in u)
    else:
        lines = (line.strip() for line in text.splitlines())
        urls = (line for line in lines if line and not line.startswith("#"))
    return list(dict.fromkeys(urls))


def requests_for(
    references: Sequence[WadoReference], sop_class_uids: Sequence[str] = ()
) -> list[RetrieveRequest]:
    """One request per series, in order of first mention; presentation states added.

    Several objects of one series go in one C-GET or C-MOVE (a list of SOP Instance
    UIDs, PS3.4 C.4.2.2.1); an object named twice is retrieved once.
    """
    series: dict[tuple[str, str], dict[str, str]] = {}
    for ref in references:
        series.setdefault((ref.study_uid, ref.series_uid), {}).setdefault(ref.object_uid, ref.url)
        if ref.presentation_uid and ref.presentation_series_uid:
            key = (ref.study_uid, ref.presentation_series_uid)
            series.setdefault(key, {}).setdefault(ref.presentation_uid, ref.url)
    requests = []
    for (study_uid, series_uid), objects in series.items():
        urls = tuple(objects.values())
        requests.append(
            RetrieveRequest(
                study_uid=study_uid,
                series_uid=series_uid,
                sop_instance_uids=tuple(objects),
                sop_class_uids=tuple(sop_class_uids),
                wado_url=urls[0] if len(set(urls)) == 1 else None,
                object_urls=urls,
            )
        )
    return requests
