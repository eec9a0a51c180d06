"""The CDA R2 document equivalent to a report (PS3.17 X.3, X.4): links, catalog, header."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage

from node.documents.cda import HL7, CdaContext, build_cda, cda_bytes, cda_links
from node.documents.report import Observer, build_report, verified_report
from node.documents.sr_common import Reference
from node.documents.wado_links import Located, image_links, wado_url
from node.retrieve.wado import parse_wado_uri
from tests.unit.report_samples import (
    CT1,
    GSPS,
    MF,
    MF_SERIES,
    MODALITIES,
    OTHER_SERIES,
    OTHER_STUDY,
    PR_SERIES,
    PRIOR,
    SERIES,
    STUDY,
    WADO,
    image,
    request,
)

NS = {"h": HL7}
PLACES = {
    CT1: Located(STUDY, SERIES, CTImageStorage),
    GSPS: Located(STUDY, PR_SERIES, "1.2.840.10008.5.1.4.1.1.11.1"),
    MF: Located(STUDY, MF_SERIES, EnhancedCTImageStorage),
}


def context(**more: object) -> CdaContext:
    fields: dict[str, object] = {
        "cda_uid": "1.2.3.1.98",
        "wado_base_url": WADO,
        "custodian": "Example Hospital",
        "modality_of": MODALITIES.get,
    }
    fields.update(more)
    return CdaContext(**fields)  # type: ignore[arg-type]


def document(sr: Dataset | None = None, **more: object) -> ET.Element:
    return ET.fromstring(cda_bytes(build_cda(sr or build_report(request()), context(**more))))


def test_wado_url_keeps_the_configured_base() -> None:
    assert wado_url("http://h/wado", "1.2", "1.3", "1.4") == (
        "http://h/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4"
    )
    assert wado_url(WADO, "1.2", "1.3", "1.4", ("contentType", "application/DICOM")) == (
        f"{WADO}&requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4"
        "&contentType=application/DICOM"
    )


def test_image_links_follow_table_x31_and_current_wado() -> None:
    (with_state,) = image_links(image(CT1, state=GSPS), WADO, PLACES.__getitem__)
    ref = parse_wado_uri(with_state)
    assert (ref.study_uid, ref.series_uid, ref.object_uid) == (STUDY, SERIES, CT1)
    assert (ref.presentation_uid, ref.presentation_series_uid) == (GSPS, PR_SERIES)
    assert ref.content_types == () and ref.frame_number is None  # single frame: image/jpeg
    frames = image_links(image(MF, EnhancedCTImageStorage, frames=[2, 5]), WADO, PLACES.__getitem__)
    parsed = [parse_wado_uri(link) for link in frames]
    assert [p.frame_number for p in parsed] == [2, 5]
    assert all(p.content_types == ("video/mpeg",) for p in parsed)
    # A presentation state excludes frameNumber in current WADO-URI (PS3.18 9.1.2).
    (both,) = image_links(
        image(MF, EnhancedCTImageStorage, frames=[3], state=GSPS), WADO, PLACES.__getitem__
    )
    assert parse_wado_uri(both).frame_number is None
    assert parse_wado_uri(both).presentation_uid == GSPS


def test_header_sections_and_catalog() -> None:
    data = cda_bytes(build_cda(build_report(request()), context()))
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<ClinicalDocument ")
    root = ET.fromstring(data)
    assert root.tag == f"{{{HL7}}}ClinicalDocument"
    type_id = root.find("h:typeId", NS)
    assert type_id is not None and type_id.get("extension") == "POCD_HD000040"
    code = root.find("h:code", NS)
    assert code is not None
    assert (code.get("code"), code.get("codeSystem")) == ("18748-4", "2.16.840.1.113883.6.1")
    assert root.findtext("h:title", namespaces=NS) == "Diagnostic Imaging Report"
    assert root.find("h:languageCode", NS).get("code") == "en-US"  # type: ignore[union-attr]
    assert root.find("h:effectiveTime", NS).get("value") == "20260102123000+0000"  # type: ignore[union-attr]
    patient = root.find("h:recordTarget/h:patientRole", NS)
    assert patient is not None
    assert patient.find("h:id", NS).get("extension") == "PID-7"  # type: ignore[union-attr]
    name = patient.find("h:patient/h:name", NS)
    assert name is not None
    assert [(e.tag.split("}")[1], e.text) for e in name] == [
        ("prefix", "Dr"),
        ("given", "Jörg"),
        ("family", "Müller"),
    ]
    assert patient.find("h:patient/h:administrativeGenderCode", NS).get("code") == "M"  # type: ignore[union-attr]
    author = root.find("h:author/h:assignedAuthor", NS)
    assert author is not None and author.find("h:id", NS).get("extension") == "1001"  # type: ignore[union-attr]
    order = root.find("h:inFulfillmentOf/h:order/h:id", NS)
    assert order is not None and order.get("extension") == "ACC9"
    event = root.find("h:documentationOf/h:serviceEvent/h:id", NS)
    assert event is not None and event.get("root") == STUDY
    parent = root.find("h:relatedDocument[@typeCode='XFRM']/h:parentDocument", NS)
    assert parent is not None and parent.find("h:id", NS).get("root") == "1.2.3.1.99.1"  # type: ignore[union-attr]
    reference = parent.find("h:text/h:reference", NS)
    assert reference is not None
    assert parse_wado_uri(reference.get("value", "")).object_uid == "1.2.3.1.99.1"
    assert root.find("h:legalAuthenticator", NS) is None

    sections = root.findall("h:component/h:structuredBody/h:component/h:section", NS)
    assert [s.findtext("h:title", namespaces=NS) for s in sections] == [
        "DICOM Object Catalog",
        "Findings",
        "Impressions",
        "Key Images",
    ]
    assert sections[0].find("h:code", NS).get("code") == "121181"  # type: ignore[union-attr]
    assert sections[1].findtext("h:text/h:paragraph", namespaces=NS) == "nodule <1 cm> & more"
    key = sections[3]
    assert key.find("h:code", NS).get("code") == "121180"  # type: ignore[union-attr]
    assert key.findtext("h:text/h:paragraph", namespaces=NS) == "Nodule <left> & right"
    links = cda_links(data)
    assert len(links) == 4  # CT with GSPS, two frames, the prior study's image
    assert parse_wado_uri(links[3]).study_uid == OTHER_STUDY

    studies = sections[0].findall("h:entry/h:act", NS)
    assert [s.find("h:id", NS).get("root") for s in studies] == [STUDY, OTHER_STUDY]  # type: ignore[union-attr]
    assert studies[0].find("h:code", NS).get("code") == "113014"  # type: ignore[union-attr]
    assert studies[0].findtext("h:text", namespaces=NS) == "CT chest"
    series = {
        s.find("h:id", NS).get("root"): s  # type: ignore[union-attr]
        for s in sections[0].iter(f"{{{HL7}}}act")
        if s.find("h:code", NS).get("code") == "113015"  # type: ignore[union-attr]
    }
    assert set(series) == {SERIES, PR_SERIES, MF_SERIES, OTHER_SERIES}
    qualifier = series[PR_SERIES].find("h:code/h:qualifier", NS)
    assert qualifier is not None
    assert qualifier.find("h:name", NS).get("code") == "121139"  # type: ignore[union-attr]
    value = qualifier.find("h:value", NS)
    assert value is not None
    assert (value.get("code"), value.get("displayName")) == ("PR", "Presentation State")
    observations = sections[0].findall(".//h:observation", NS)
    assert {o.get("classCode") for o in observations} == {"DGIMG"}
    assert [o.find("h:id", NS).get("root") for o in observations] == [CT1, GSPS, MF, PRIOR]  # type: ignore[union-attr]
    mf = observations[2].find("h:code", NS)
    assert mf is not None
    assert (mf.get("code"), mf.get("codeSystem"), mf.get("displayName")) == (
        EnhancedCTImageStorage,
        "1.2.840.10008.2.6.1",
        "Enhanced CT Image Storage",
    )


def test_markup_in_the_text_is_escaped_and_comes_back_unchanged() -> None:
    text = "<script>alert('x')</script> & \"quoted\" ]]> end"
    data = cda_bytes(build_cda(build_report(request(f"FINDINGS: {text}")), context()))
    assert b"<script>" not in data and b"]]>" not in data
    root = ET.fromstring(data)
    paragraph = root.find(".//h:section[h:title='Findings']/h:text/h:paragraph", NS)
    assert paragraph is not None and paragraph.text == text


def test_line_breaks_and_paragraphs() -> None:
    root = document(build_report(request("FINDINGS: one\ntwo\n\nthree")))
    text = root.find(".//h:section[h:title='Findings']/h:text", NS)
    assert text is not None
    paragraphs = text.findall("h:paragraph", NS)
    assert [p.text for p in paragraphs] == ["one", "three"]
    assert [br.tail for br in paragraphs[0].findall("h:br", NS)] == ["two"]


def test_verified_report_cda_names_the_legal_authenticator_and_replaces() -> None:
    sr = build_report(request())
    previous = Reference(str(sr.SOPClassUID), str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID),
                         STUDY)  # fmt: skip
    verified = verified_report(
        sr,
        sop_instance_uid="1.2.3.1.99.2",
        cda_uid="1.2.3.1.97",
        cda_uri="file:///reports/1.2.3.1.97.xml",
        verifier=Observer("Jones^Ann", "1002"),
        organization="Example Hospital",
        predecessor=previous,
        when=datetime(2026, 1, 3, 8, 0, tzinfo=UTC),
    )
    root = document(verified, cda_uid="1.2.3.1.97", replaces="1.2.3.1.98")
    legal = root.find("h:legalAuthenticator", NS)
    assert legal is not None
    assert legal.find("h:time", NS).get("value") == "20260103080000+0000"  # type: ignore[union-attr]
    assert legal.findtext("h:assignedEntity/h:assignedPerson/h:name/h:family", namespaces=NS) == (
        "Jones"
    )
    replaced = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    assert replaced is not None and replaced.get("root") == "1.2.3.1.98"
    assert root.find("h:versionNumber", NS).get("value") == "2"  # type: ignore[union-attr]
    first = document(sr)
    assert root.find("h:setId", NS).get("root") == first.find("h:setId", NS).get("root")  # type: ignore[union-attr]
