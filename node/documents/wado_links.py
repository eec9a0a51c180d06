"""WADO-URI links to the key images of a report (PS3.17 Table X.3-1, PS3.18 9.1.2).

Each IMAGE item of a Key Images container becomes one link per referenced instance,
built from the configured WADO base URL. Current WADO-URI is stricter than Table X.3-1
and wins where they differ: ``frameNumber`` takes one frame, so a multi-frame reference
gets one link per frame; a presentation state excludes ``frameNumber``, so a reference
with both keeps the presentation state. Multi-frame images ask for ``video/mpeg``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

# SOP class names of multi-frame image IODs (Table X.3-1 asks for video/mpeg).
MULTI_FRAME_WORDS = (
    "Multi-frame", "Enhanced", "Video", "Nuclear Medicine", "X-Ray Angiographic",
    "X-Ray Radiofluoroscopic", "Tomosynthesis", "Whole Slide", "Ophthalmic Tomography",
    "Segmentation", "Parametric Map", "Volume",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Located:
    """Where an instance sits (from the SR's evidence sequences)."""

    study_uid: str
    series_uid: str
    sop_class_uid: str


def wado_url(base: str, study: str, series: str, obj: str, *extra: tuple[str, str]) -> str:
    """A WADO-URI (PS3.18 9.1.2) built from the configured base URL."""
    pairs = [("requestType", "WADO"), ("studyUID", study), ("seriesUID", series)]
    query = urlencode([*pairs, ("objectUID", obj), *extra], safe="/")
    return f"{base}{'&' if '?' in base else '?'}{query}"


def is_multi_frame(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid).name
    return any(word in name for word in MULTI_FRAME_WORDS)


def image_links(item: Dataset, base: str, where: Callable[[str], Located]) -> list[str]:
    """The WADO-URI links of one IMAGE content item (PS3.17 Table X.3-1)."""
    links = []
    for sop in item.get("ReferencedSOPSequence") or []:
        uid = str(sop.ReferencedSOPInstanceUID)
        place = where(uid)
        extra: list[tuple[str, str]] = []
        states = sop.get("ReferencedSOPSequence") or []
        if states:
            state = str(states[0].ReferencedSOPInstanceUID)
            extra += [
                ("presentationUID", state),
                ("presentationSeriesUID", where(state).series_uid),
            ]
        if is_multi_frame(str(sop.ReferencedSOPClassUID)):
            extra.append(("contentType", "video/mpeg"))
        frames: list[list[tuple[str, str]]] = [[]]
        if not states and _frames(sop):
            frames = [[("frameNumber", str(frame))] for frame in _frames(sop)]
        for frame in frames:
            links.append(wado_url(base, place.study_uid, place.series_uid, uid, *frame, *extra))
    return links


def _frames(sop: Dataset) -> list[int]:
    value = sop.get("ReferencedFrameNumber")
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [int(v) for v in value]
    return [int(value)]
