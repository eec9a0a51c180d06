"""Rendered images of archived instances (PS3.18 9.1.2 WADO-URI parameters, 10.4 rendered).

A single frame becomes an 8-bit JPEG, PNG or GIF, as a viewer would display it:

- grey scale (MONOCHROME1/2): the Modality LUT (Rescale Slope/Intercept or LUT, PS3.3
  C.11.1), then the VOI window. That is ``windowCenter``/``windowWidth`` when the request
  gives them (linear function of PS3.3 C.11.2.1.2), else the instance's own Window
  Center/Width or VOI LUT, else the range of the frame's values. MONOCHROME1 is shown
  inverted, as the interpretation requires;
- colour: RGB (YBR converted to RGB), scaled to 8 bits when stored with more;
- ``region`` (fractions x1,y1,x2,y2 of the image) crops first, then ``rows``/``columns``
  scale. One of them alone keeps the aspect ratio.

Compressed pixel data is decoded by pydicom's plugins (pylibjpeg: JPEG, JPEG-LS through
libjpeg, JPEG 2000 and HTJ2K through openjpeg, RLE). What cannot be decoded or rendered
raises :class:`NotRenderable` with the reason, which the caller answers with 406.
Malformed parameters raise :class:`BadParameter` (400).
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space, pixel_array

# PS3.18 Table 9.2-1 / 8.7.3-5: rendered media types the node can produce, Pillow's name.
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
DEFAULT_QUALITY = 90  # imageQuality when not given (1-100, JPEG only)
MAX_OUTPUT_SIDE = 4096  # rows/columns beyond this are refused: memory, not a viewer's need
# Renderings at once: each holds a decoded frame (about 20 bytes a pixel) in memory, in
# the node's own process; more requests wait their turn.
CONCURRENT_RENDERINGS = 2
_rendering_slots = threading.BoundedSemaphore(CONCURRENT_RENDERINGS)


class NotRenderable(Exception):
    """The instance exists but cannot be rendered as asked (answered 406)."""


class BadParameter(Exception):
    """A rendering parameter is malformed (answered 400); the message names it."""


@dataclass(frozen=True, slots=True)
class Rendering:
    """What to draw: one frame, optional region, size and window, in one media type."""

    media_type: str = "image/jpeg"
    frame: int | None = None  # 1-based frameNumber
    rows: int | None = None
    columns: int | None = None
    region: tuple[float, float, float, float] | None = None
    window: tuple[float, float] | None = None  # (center, width)
    quality: int = DEFAULT_QUALITY


def _positive_int(name: str, text: str | None, limit: int | None = None) -> int | None:
    if text is None or text == "":
        return None
    # ASCII digits only, and few of them: str.isdigit() takes superscripts, and int()
    # refuses more than 4300 digits.
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1 or (limit and int(text) > limit):
        bound = f" (1-{limit})" if limit else ""
        raise BadParameter(f"{name}: must be a positive integer{bound}")
    return int(text)


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(f"{name}: must be a number") from None
    if not np.isfinite(value):
        raise BadParameter(f"{name}: must be a finite number")
    return value


def parse_rendering(query: Any, media_type: str) -> Rendering:
    """The rendering a WADO-URI query asks for (``query``: a mapping of parameters)."""
    region = None
    if query.get("region"):
        parts = query["region"].split(",")
        if len(parts) != 4:
            raise BadParameter("region: must be x1,y1,x2,y2 (fractions of the image)")
        x1, y1, x2, y2 = (_number("region", p) for p in parts)
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise BadParameter("region: needs 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        region = (x1, y1, x2, y2)
    center, width = query.get("windowCenter"), query.get("windowWidth")
    window = None
    if center or width:
        if not (center and width):
            raise BadParameter("windowCenter and windowWidth: give both or neither")
        window = (_number("windowCenter", center), _number("windowWidth", width))
        if window[1] < 1:
            raise BadParameter("windowWidth: must be at least 1")
    quality = _positive_int("imageQuality", query.get("imageQuality"), 100)
    return Rendering(
        media_type=media_type,
        frame=_positive_int("frameNumber", query.get("frameNumber")),
        rows=_positive_int("rows", query.get("rows"), MAX_OUTPUT_SIDE),
        columns=_positive_int("columns", query.get("columns"), MAX_OUTPUT_SIDE),
        region=region,
        window=window,
        quality=quality or DEFAULT_QUALITY,
    )


def render(path: Path, rendering: Rendering) -> bytes:
    """The encoded image of one frame of the archived file at ``path``.

    The node archives values as received, so anything in the file may be malformed: every
    failure to read, decode, window or encode it is :class:`NotRenderable`, never a crash.
    """
    with _rendering_slots:
        try:
            return _render(path, rendering)
        except (NotRenderable, BadParameter):
            raise
        except Exception as exc:
            raise NotRenderable(f"the stored object cannot be rendered: {exc}") from None


def _render(path: Path, rendering: Rendering) -> bytes:
    ds = dcmread(path, defer_size=4096)  # large values (the pixels) stay on disk
    if "PixelData" not in ds:
        raise NotRenderable("the object has no pixel data (not an image)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and rendering.frame is None:
        raise NotRenderable(f"a multi-frame image ({frames} frames): give frameNumber")
    index = (rendering.frame or 1) - 1
    if index >= frames:
        raise BadParameter(f"frameNumber: the image has {frames} frame(s)")
    try:
        # One frame decoded, not the whole volume (pydicom reads that frame only).
        pixels = pixel_array(path, index=index if frames > 1 else None)
    except Exception as exc:  # no decoder for the syntax, or data the decoder refuses
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise NotRenderable(f"pixel data in {name} cannot be decoded: {exc}") from None
    image = _displayable(ds, pixels, rendering.window)
    return _encoded(_sized(image, rendering), rendering)


def _displayable(ds: Any, pixels: np.ndarray, window: tuple[float, float] | None) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        if window is not None:
            center, width = window
            low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
            scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0)
        else:
            if "WindowCenter" in ds or "VOILUTSequence" in ds:
                values = apply_voi_lut(values, ds).astype(np.float64)
            lo, hi = float(values.min()), float(values.max())
            scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        if photometric == "MONOCHROME1":
            scaled = 1.0 - scaled
        return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3:
        rgb = pixels if photometric == "RGB" else convert_color_space(pixels, photometric, "RGB")
        bits = int(ds.get("BitsStored", 8) or 8)
        if bits > 8:
            rgb = rgb >> (bits - 8)
        return Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    raise NotRenderable(f"photometric interpretation {photometric} is not rendered")


def _sized(image: Image.Image, rendering: Rendering) -> Image.Image:
    if rendering.region is not None:
        x1, y1, x2, y2 = rendering.region
        width, height = image.size
        box = (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
        image = image.crop((box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)))
    rows, columns = rendering.rows, rendering.columns
    if rows or columns:
        width, height = image.size
        if rows and columns:
            size = (columns, rows)
        elif rows:
            size = (max(1, round(width * rows / height)), rows)
        else:
            assert columns is not None
            size = (columns, max(1, round(height * columns / width)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _encoded(image: Image.Image, rendering: Rendering) -> bytes:
    out = io.BytesIO()
    fmt = FORMATS[rendering.media_type]
    if fmt == "JPEG":
        image.save(out, fmt, quality=rendering.quality)
    else:
        image.save(out, fmt)
    return out.getvalue()
