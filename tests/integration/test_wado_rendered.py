"""WADO-URI rendered images (PS3.18 9.1.2): window, region, size, frames, compressed data.

The images are decoded again with Pillow and their pixels checked, so a wrong window or
a crop that does not happen fails.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
)

from node.app import Node
from node.config import NodeConfig
from node.storage import audit
from tests.helpers import SERIES_UID, STUDY_UID, ct_dataset, write_part10
from tests.integration.scu import association, store_status

SIZE = 64


def halves(**extra: object) -> Dataset:
    """A CT whose left half is -1024 HU and right half 976 HU (stored 0 and 2000)."""
    ds = ct_dataset(size=SIZE, **extra)
    pixels = np.zeros((SIZE, SIZE), dtype=np.uint16)
    pixels[:, SIZE // 2 :] = 2000
    ds.PixelData = pixels.tobytes()
    return ds


def send(node: Node, ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> None:
    ae = AE(ae_title="RENDER_SCU")
    ae.add_requested_context(ds.SOPClassUID, [syntax])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()


def get(node: Node, ds: Dataset, **params: str) -> httpx.Response:
    assert node.web is not None
    query = {
        "requestType": "WADO",
        "studyUID": STUDY_UID,
        "seriesUID": SERIES_UID,
        "objectUID": str(ds.SOPInstanceUID),
        **params,
    }
    return httpx.get(f"{node.web.url}/wado", params=query, timeout=30)


def picture(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)))


@pytest.fixture
def node(make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]) -> Node:
    return start_node(make_config())


def test_jpeg_is_the_default_and_spans_the_values(node: Node) -> None:
    ds = halves()
    send(node, ds)
    answer = get(node, ds)
    assert answer.headers["content-type"] == "image/jpeg"
    image = picture(answer)
    assert image.shape == (SIZE, SIZE)
    assert image[:, : SIZE // 2 - 2].max() < 10  # JPEG is lossy: near black
    assert image[:, SIZE // 2 + 2 :].min() > 245  # and near white
    records = [r for r in audit.records(node.archive.engine) if r.event == "wado-retrieved"]
    assert [r.details["content_type"] for r in records] == ["image/jpeg"]


def test_png_is_exact_and_a_request_window_applies(node: Node) -> None:
    ds = halves()
    send(node, ds)
    whole = picture(get(node, ds, contentType="image/png"))
    assert set(np.unique(whole)) == {0, 255}
    # A window centred on -1024 HU (PS3.3 C.11.2.1.2.1): the left half mid-grey, the
    # right half (976 HU) beyond it, white.
    narrow = picture(
        get(node, ds, contentType="image/png", windowCenter="-1024", windowWidth="401")
    )
    assert narrow[0, 0] == 128
    assert narrow[0, -1] == 255


def test_the_instance_window_is_used_when_the_request_gives_none(node: Node) -> None:
    ds = halves(WindowCenter="976", WindowWidth="2")  # only the bright half is in the window
    send(node, ds)
    image = picture(get(node, ds, contentType="image/png"))
    assert image[0, 0] == 0 and image[0, -1] == 255


def test_monochrome1_is_shown_inverted(node: Node) -> None:
    ds = halves(PhotometricInterpretation="MONOCHROME1")
    send(node, ds)
    image = picture(get(node, ds, contentType="image/png"))
    assert image[0, 0] == 255 and image[0, -1] == 0


def test_region_then_size(node: Node) -> None:
    ds = halves()
    send(node, ds)
    left = picture(get(node, ds, contentType="image/png", region="0,0,0.5,1"))
    assert left.shape == (SIZE, SIZE // 2) and left.max() == 0
    small = picture(get(node, ds, contentType="image/png", rows="16"))
    assert small.shape == (16, 16)
    wide = picture(get(node, ds, contentType="image/png", rows="10", columns="40"))
    assert wide.shape == (10, 40)


def test_compressed_pixel_data_is_decoded(node: Node) -> None:
    ds = halves()
    ds.compress(RLELossless)
    send(node, ds, RLELossless)
    image = picture(get(node, ds, contentType="image/png"))
    assert image[0, 0] == 0 and image[0, -1] == 255


def test_a_multi_frame_image_needs_a_frame_number(node: Node) -> None:
    ds = ct_dataset(size=SIZE)
    ds.SOPClassUID = EnhancedCTImageStorage
    frames = np.zeros((2, SIZE, SIZE), dtype=np.uint16)
    frames[1] = 2000
    frames[1, :, : SIZE // 2] = 0
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    send(node, ds)
    assert get(node, ds).status_code == 406
    second = picture(get(node, ds, contentType="image/png", frameNumber="2"))
    assert second[0, 0] == 0 and second[0, -1] == 255
    assert get(node, ds, contentType="image/png", frameNumber="3").status_code == 400


def test_what_has_no_pixels_is_not_acceptable_as_an_image(node: Node) -> None:
    sr = Dataset()
    sr.SOPClassUID = BasicTextSRStorage
    sr.SOPInstanceUID = generate_uid()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = STUDY_UID, SERIES_UID
    sr.PatientID, sr.PatientName, sr.Modality = "PID-1", "Doe^Jane", "SR"
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    send(node, sr)
    answer = get(node, sr)
    assert answer.status_code == 406
    assert "no pixel data" in answer.text
    assert get(node, sr, contentType="application/dicom").status_code == 200


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"windowCenter": "40"}, "give both"),
        ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth"),
        ({"windowCenter": "x", "windowWidth": "400"}, "windowCenter"),
        ({"region": "0,0,1"}, "region"),
        ({"region": "0.5,0,0.2,1"}, "region"),
        ({"rows": "-3"}, "rows"),
        ({"rows": "100000"}, "rows"),
        ({"columns": "a"}, "columns"),
        ({"imageQuality": "101"}, "imageQuality"),
        ({"frameNumber": "0"}, "frameNumber"),
    ],
)
def test_malformed_rendering_parameters_are_400(node: Node, params, says) -> None:  # type: ignore[no-untyped-def]
    ds = halves()
    send(node, ds)
    answer = get(node, ds, **params)
    assert answer.status_code == 400 and says in answer.text


def test_a_ct_from_the_test_helpers_renders_too(node: Node) -> None:
    ds = ct_dataset()
    assert ds.SOPClassUID == CTImageStorage
    send(node, ds)
    assert picture(get(node, ds)).shape == (64, 64)


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0663"])
def test_numbers_are_ascii_digits_of_sane_length(node: Node, value: str) -> None:
    ds = halves()
    send(node, ds)
    answer = get(node, ds, rows=value)
    assert answer.status_code == 400 and "rows" in answer.text


@pytest.mark.parametrize(
    ("keyword", "placeholder", "stored"),
    [
        ("WindowWidth", "7.25", "0   "),  # pydicom refuses a window narrower than 1
        ("RescaleSlope", "7.25", "abc "),
        ("NumberOfFrames", "77", "x "),
    ],
)
def test_malformed_stored_values_are_not_acceptable_never_a_server_error(
    node: Node, tmp_path: Path, keyword: str, placeholder: str, stored: str
) -> None:
    ds = halves(WindowCenter="40") if keyword == "WindowWidth" else halves()
    setattr(ds, keyword, placeholder)
    path = write_part10(ds, tmp_path / "odd.dcm")
    tag = Tag(tag_for_keyword(keyword))
    vr = dictionary_VR(tag).encode("ascii")
    value = placeholder.encode("ascii")
    value += b" " * (len(value) % 2)
    header = struct.pack("<HH2sH", tag.group, tag.element, vr, len(value))
    data = path.read_bytes()
    assert data.count(header + value) == 1
    # Archived exactly as received: the node stores what a sender wrote, odd values too.
    path.write_bytes(data.replace(header + value, header + stored.encode("ascii")))
    with association(node.port) as assoc:
        assert store_status(assoc, path) == 0
    answer = get(node, ds, contentType="image/png")
    assert answer.status_code == 406, answer.text
    assert get(node, ds, contentType="application/dicom").status_code == 200
