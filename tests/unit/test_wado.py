"""WADO-URI parsing (PS3.18 9.1.2): every parameter, the errors, URL encoding, link files."""

from __future__ import annotations

import pytest

from node.errors import UsageError
from node.retrieve.wado import parse_wado_uri, read_wado_urls, requests_for
from node.scu.request import MAX_UIDS_PER_REQUEST, RetrieveRequest

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
OBJECT = "1.2.826.0.1.3680043.8.498.1.1.7"
BASE = "https://pacs.example.org/wado"
MINIMAL = f"{BASE}?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={OBJECT}"


def url(**extra: str) -> str:
    return MINIMAL + "".join(f"&{key}={value}" for key, value in extra.items())


def problem(text: str) -> str:
    with pytest.raises(UsageError) as caught:
        parse_wado_uri(text)
    message = str(caught.value)
    assert message.startswith(text), "the error names the URL"
    return message


def test_minimal_reference() -> None:
    ref = parse_wado_uri(MINIMAL)
    assert (ref.study_uid, ref.series_uid, ref.object_uid) == (STUDY, SERIES, OBJECT)
    assert ref.url == MINIMAL
    assert ref.content_types == () and not ref.wants_rendered
    assert ref.notes() == []


def test_parameters_in_any_order_and_url_encoded() -> None:
    encoded = STUDY.replace(".", "%2E")
    text = (
        f"http://host:8080/wado?objectUID={OBJECT}&contentType=application%2Fdicom"
        f"&seriesUID={SERIES}&studyUID={encoded}&requestType=WADO&transferSyntax="
        "1.2.840.10008.1.2.1&anonymize=yes&charset=UTF-8%2CISO-8859-1%3Bq%3D0.5"
    )
    ref = parse_wado_uri(text)
    assert ref.study_uid == STUDY
    assert ref.content_types == ("application/dicom",)
    assert ref.transfer_syntax == "1.2.840.10008.1.2.1"
    assert ref.anonymize is True
    assert ref.charsets == ("UTF-8", "ISO-8859-1")
    notes = " ".join(ref.notes())
    assert "anonymize=yes ignored" in notes
    assert "never transcoded" in notes
    assert "Specific Character Set" in notes


def test_every_rendering_parameter() -> None:
    ref = parse_wado_uri(
        url(
            contentType="image/jpeg;q=0.9,image/png;q=0.5",
            annotation="patient,technique",
            rows="512",
            columns="256",
            region="0.1,0.2,0.6,0.9",
            windowCenter="-600.5",
            windowWidth="1500",
            frameNumber="3",
            imageQuality="80",
        )
    )
    assert ref.content_types == ("image/jpeg", "image/png")
    assert ref.wants_rendered
    assert ref.annotation == ("patient", "technique")
    assert (ref.rows, ref.columns) == (512, 256)
    assert ref.region == (0.1, 0.2, 0.6, 0.9)
    assert (ref.window_center, ref.window_width) == (-600.5, 1500.0)
    assert ref.frame_number == 3
    assert ref.image_quality == 80
    notes = " ".join(ref.notes())
    assert "asks for a rendering; the DICOM object it is rendered from is retrieved" in notes
    for name in ("annotation", "rows", "columns", "region", "windowCenter", "imageQuality"):
        assert name in notes
    assert "frameNumber=3: the whole object is retrieved" in notes


def test_image_annotation_spelling_and_presentation_state() -> None:
    ps_uid, ps_series = "1.2.3.4.5.6", "1.2.3.4.5"
    ref = parse_wado_uri(
        url(
            imageAnnotation="technique",
            presentationUID=ps_uid,
            presentationSeriesUID=ps_series,
            rows="100",
        )
    )
    assert ref.annotation == ("technique",)
    assert (ref.presentation_uid, ref.presentation_series_uid) == (ps_uid, ps_series)
    assert any(f"presentation state {ps_uid}" in note for note in ref.notes())


def test_html_escaped_ampersands_are_accepted() -> None:
    ref = parse_wado_uri(MINIMAL.replace("&", "&amp;"))
    assert ref.object_uid == OBJECT


@pytest.mark.parametrize("name", ["requestType", "studyUID", "seriesUID", "objectUID"])
def test_each_required_parameter(name: str) -> None:
    parts = [p for p in MINIMAL.split("?")[1].split("&") if not p.startswith(name + "=")]
    text = f"{BASE}?{'&'.join(parts)}"
    assert f"parameter {name} is missing" in problem(text)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"requestType": "RS"}, "given more than once"),
        ({"studyuid": STUDY}, "case-sensitive, write studyUID"),
        ({"anonymize": "true"}, "anonymize must be yes"),
        ({"annotation": "patient,burned"}, "'burned' is not patient or technique"),
        ({"rows": "0"}, "rows must be a positive integer"),
        ({"columns": "12px"}, "columns must be a positive integer"),
        ({"frameNumber": "-1"}, "frameNumber must be a positive integer"),
        ({"imageQuality": "101"}, "imageQuality must be 1 to 100"),
        ({"region": "0.1,0.2,0.3"}, "region must be four decimals"),
        ({"region": "0.5,0.2,0.4,0.9"}, "xmin < xmax"),
        ({"region": "0,0,1.5,1"}, "0.0-1.0"),
        ({"windowCenter": "40"}, "windowCenter needs windowWidth"),
        ({"windowWidth": "400"}, "windowWidth needs windowCenter"),
        ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth must be greater than 0"),
        ({"windowCenter": "abc", "windowWidth": "1"}, "windowCenter must be a decimal"),
        ({"presentationUID": "1.2.3"}, "presentationUID needs presentationSeriesUID"),
        ({"presentationSeriesUID": "1.2"}, "presentationSeriesUID needs presentationUID"),
        ({"transferSyntax": "1.2.840.10008.1.2.1.99.x"}, "transferSyntax is not a valid UID"),
        ({"contentType": "jpeg"}, "'jpeg' is not a media type"),
        ({"contentType": "application/dicom;transfer-syntax=1.2.840.10008.1.2.1"}, "not allowed"),
        ({"contentType": "text/html;charset=UTF-8"}, "charset media-type parameter"),
        ({"contentType": "image/jpeg;q=2"}, "invalid media-type parameter"),
        ({"charset": "UTF 8"}, "is not a character set name"),
        ({"contentType": "application/dicom", "rows": "10"}, "rows applies to rendered"),
        (
            {"contentType": "application/dicom", "windowCenter": "1", "windowWidth": "2"},
            "windowCenter applies to rendered",
        ),
        ({"contentType": "image/jpeg", "anonymize": "yes"}, "anonymize applies only to"),
        ({"contentType": "image/png", "transferSyntax": "1.2.840.10008.1.2"}, "applies only"),
        ({"contentType": "image/png", "imageQuality": "50"}, "lossy media types"),
        (
            {"presentationUID": "1.2.3", "presentationSeriesUID": "1.2", "frameNumber": "1"},
            "frameNumber may not be combined with presentationUID",
        ),
        ({"annotation": "patient", "imageAnnotation": "patient"}, "given twice"),
    ],
)
def test_invalid_parameters(extra: dict[str, str], expected: str) -> None:
    assert expected in problem(url(**extra))


def test_invalid_uids_and_values() -> None:
    assert "requestType must be WADO" in problem(MINIMAL.replace("=WADO", "=wado"))
    assert "objectUID is not a valid UID: '1.02.3'" in problem(MINIMAL.replace(OBJECT, "1.02.3"))
    assert "studyUID is empty" in problem(MINIMAL.replace(STUDY, ""))
    assert "seriesUID is not a valid UID" in problem(MINIMAL.replace(SERIES, "1." + "1" * 70))
    assert "not an http or https URL" in problem(MINIMAL.replace("https://", "ftp://"))
    assert "no query parameters" in problem(BASE)


def test_wildcards_and_unknown_parameters() -> None:
    ref = parse_wado_uri(url(contentType="*/*", anonymize="yes", imageQuality="20", x_cache="1"))
    assert ref.content_types == ("*/*",) and ref.anonymize and ref.image_quality == 20
    assert ref.unknown == ("x_cache",)
    assert "unknown parameter 'x_cache' ignored" in ref.notes()


def test_read_plain_list() -> None:
    text = f"# links\n\n{MINIMAL}\n  {url(rows='1')}  \n{MINIMAL}\nnot a url\n"
    assert read_wado_urls(text) == [MINIMAL, url(rows="1"), "not a url"]


CDA = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <component><structuredBody><component><section>
    <text>Findings, see
      <linkHtml href="{MINIMAL.replace("&", "&amp;")}">image 1</linkHtml>.
    </text>
    <entry><observation classCode="DGIMG" moodCode="EVN">
      <id root="{OBJECT}"/>
      <code code="1.2.840.10008.5.1.4.1.1.2" codeSystem="1.2.840.10008.2.6.1"/>
      <text mediaType="application/dicom">
        <reference value="{url(contentType="application/DICOM").replace("&", "&amp;")}"/>
      </text>
    </observation></entry>
    <paragraph>Other link: {url(frameNumber="2").replace("&", "&#38;")} and
      http://other.example/page?x=1 (no WADO)</paragraph>
  </section></component></structuredBody></component>
</ClinicalDocument>
"""


def test_read_cda_links() -> None:
    found = read_wado_urls(CDA)
    assert found == [MINIMAL, url(contentType="application/DICOM"), url(frameNumber="2")]
    refs = [parse_wado_uri(u) for u in found]
    assert refs[1].content_types == ("application/dicom",)
    assert refs[2].frame_number == 2


def test_requests_group_by_series() -> None:
    other_series = SERIES + ".2"
    refs = [
        parse_wado_uri(MINIMAL),
        parse_wado_uri(MINIMAL.replace(OBJECT, OBJECT + ".1")),
        parse_wado_uri(
            f"{BASE}?requestType=WADO&studyUID={STUDY}&seriesUID={other_series}&objectUID=1.2.3"
        ),
        parse_wado_uri(url(rows="5")),  # the same object again
        parse_wado_uri(url(presentationUID="1.2.3.9", presentationSeriesUID="1.2.3.8")),
    ]
    requests = requests_for(refs, ["1.2.840.10008.5.1.4.1.1.2"])
    assert [(r.series_uid, r.sop_instance_uids) for r in requests] == [
        (SERIES, (OBJECT, OBJECT + ".1")),
        (other_series, ("1.2.3",)),
        ("1.2.3.8", ("1.2.3.9",)),
    ]
    first = requests[0]
    assert first.wado_url is None and first.url_for(OBJECT + ".1") == refs[1].url
    assert first.url_for(OBJECT) == MINIMAL
    assert requests[1].wado_url == refs[2].url
    assert requests[2].study_uid == STUDY
    assert all(r.sop_class_uids == ("1.2.840.10008.5.1.4.1.1.2",) for r in requests)


def test_large_requests_are_split() -> None:
    uids = tuple(f"1.2.3.{i}" for i in range(MAX_UIDS_PER_REQUEST * 2 + 1))
    request = RetrieveRequest(STUDY, SERIES, uids, object_urls=tuple(f"u{i}" for i in uids))
    parts = request.chunks()
    assert [len(p.sop_instance_uids) for p in parts] == [MAX_UIDS_PER_REQUEST] * 2 + [1]
    assert parts[2].url_for(uids[-1]) == f"u{uids[-1]}"
