"""PS3.17 Annex X dictation reports with Annex W case 1 signatures, end to end.

Images, a presentation state and key-image KOS reach the node by DCMTK ``storescu``, the
acquisition is completed by MPPS (so a signed "Signed Complete Acquisition Content" KOS
exists), and the ``dicom-node report`` commands run as real processes. The documents are
checked by ``dciodvfy``, ``dsrdump`` and ``dcmsign``, the CDA by an XML parser and by the
node's own WADO parser, and its links by ``dicom-node retrieve`` against the node's Q/R.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import (
    BasicTextSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    generate_uid,
)

from node.app import Node
from node.config import parse_config
from node.documents.cda import HL7, cda_links
from node.documents.codes import FOR_REPORT_ATTACHMENT, KEY_OBJECT_DESCRIPTION
from node.mpps.acquisition import KOS_BUILT
from node.retrieve.wado import parse_wado_uri
from node.schema import open_database
from node.storage import audit
from node.storage.archive import Archive
from node.storage.files import FileStore
from node.storage.index import find_instance, study_instances
from tests.conftest import config_dict
from tests.helpers import (
    SERIES_UID,
    STUDY_UID,
    ct_dataset,
    dataset_bytes,
    run,
    tool,
    write_part10,
)
from tests.integration.mpps_scu import MppsClient, create_attributes, final_attributes
from tests.integration.peers import DcmQrScp
from tests.integration.process import write_config
from tests.integration.test_acquisition_kos import send, wait_state
from tests.pki import Issued, issue, make_ca

pytestmark = pytest.mark.dcmtk

WADO = "http://127.0.0.1:8080/wado"
STUDY_B = STUDY_UID + ".2"
FOR_TEACHING = Code("113004", "DCM", "For Teaching")
SOURCE = Code("260753009", "SCT", "Source")
NS = {"h": HL7}


@dataclass
class Site:
    node: Node
    config: Path
    root: Path
    ca: Issued
    images: list[Dataset]
    gsps: Dataset
    other: Dataset
    attach: Dataset
    teaching: Dataset


def presentation_state(image: Dataset) -> Dataset:
    """A minimal GSPS of the image's study (a workstation's annotation)."""
    ds = Dataset()
    ds.SOPClassUID = GrayscaleSoftcopyPresentationStateStorage
    ds.SOPInstanceUID = generate_uid()
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate"):
        setattr(ds, keyword, getattr(image, keyword))
    ds.PatientSex = image.PatientSex
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = image.StudyDate, image.StudyTime, "ACC1"
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "PR"
    ds.SeriesNumber = 50
    ds.InstanceNumber = 1
    ds.ContentLabel = "ARROW"
    ds.PresentationLUTShape = "IDENTITY"
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    series.ReferencedImageSequence = Sequence([ref])
    ds.ReferencedSeriesSequence = Sequence([series])
    return ds


def _code(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = code.value, code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _icon() -> Dataset:
    icon = Dataset()
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows = icon.Columns = 8
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PixelData = bytes(range(64))
    return icon


def workstation_kos(
    title: Code,
    images: list[tuple[Dataset, Dataset | None]],
    description: str | None = None,
    study_uid: str = STUDY_UID,
) -> Dataset:
    """A KO as a reading workstation makes it: concept names, icons, GSPS references."""
    first = images[0][0]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, getattr(first, keyword))
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20261122", "101500", "ACC1"
    ds.ReferringPhysicianName, ds.StudyID = "", "1"
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 60
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer = "Workstation"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20261122", "120000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(title)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([template])
    content = []
    if description:
        text = Dataset()
        text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
        text.ConceptNameCodeSequence = Sequence([_code(KEY_OBJECT_DESCRIPTION)])
        text.TextValue = description
        content.append(text)
    evidence: dict[str, dict[str, list[Dataset]]] = {}
    for image, state in images:
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        item.ConceptNameCodeSequence = Sequence([_code(SOURCE)])
        sop = Dataset()
        sop.ReferencedSOPClassUID = image.SOPClassUID
        sop.ReferencedSOPInstanceUID = image.SOPInstanceUID
        sop.IconImageSequence = Sequence([_icon()])
        if state is not None:
            ps = Dataset()
            ps.ReferencedSOPClassUID = state.SOPClassUID
            ps.ReferencedSOPInstanceUID = state.SOPInstanceUID
            sop.ReferencedSOPSequence = Sequence([ps])
        item.ReferencedSOPSequence = Sequence([sop])
        content.append(item)
        for obj in (image, state):
            if obj is not None:
                ref = Dataset()
                ref.ReferencedSOPClassUID = obj.SOPClassUID
                ref.ReferencedSOPInstanceUID = obj.SOPInstanceUID
                group = evidence.setdefault(str(obj.StudyInstanceUID), {})
                group.setdefault(str(obj.SeriesInstanceUID), []).append(ref)
    ds.ContentSequence = Sequence(content)
    items = []
    for study, series in evidence.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study
        series_items = []
        for series_uid, refs in series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = Sequence(refs)
            series_items.append(series_item)
        study_item.ReferencedSeriesSequence = Sequence(series_items)
        items.append(study_item)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(items)
    return ds


def site_config(root: Path, **more: Any) -> tuple[dict[str, Any], Issued]:
    """Node configuration with two people (author, verifier) whose CA is trusted."""
    pki = root / "pki"
    ca, ca_key, ca_cert = make_ca(pki)
    smith = issue(pki, "smith", ca_key, ca_cert)
    jones = issue(pki, "jones", ca_key, ca_cert)
    reporting = {
        "wado_base_url": WADO,
        "institution": "Example Hospital",
        "output": str(root / "reports"),
        "people": [
            {"name": "Smith^John", "key": str(smith.key), "certificate": str(smith.cert)}
            | {"observer_id": "1001"},
            {"name": "Jones^Ann", "key": str(jones.key), "certificate": str(jones.cert)}
            | {"observer_id": "1002"},
        ],
        **more.pop("reporting", {}),
    }
    trust = [str(root / "keys/signer.cert.pem"), str(ca.cert)]
    return config_dict(root, reporting=reporting, trust=trust, **more), ca


@pytest.fixture
def site(tmp_path: Path, start_node: Callable[..., Node]) -> Site:
    """A study with an MPPS-completed acquisition, a GSPS, key-image KOS and a prior study."""
    data, ca = site_config(tmp_path)
    node = start_node(parse_config(data, tmp_path))
    images = [ct_dataset(number=i, seed=i) for i in range(1, 4)]
    client = MppsClient(node.port)
    status, mpps_uid = client.create(create_attributes())
    assert status.Status == 0
    send(node, tmp_path / "images", images)
    assert client.set(mpps_uid, final_attributes({SERIES_UID: images})).Status == 0
    client.close()
    assert wait_state(node, mpps_uid, {KOS_BUILT, "failed"}) == KOS_BUILT
    other = ct_dataset(study_uid=STUDY_B, series_uid=STUDY_B + ".1", number=1, seed=9)
    gsps = presentation_state(images[0])
    attach = workstation_kos(
        FOR_REPORT_ATTACHMENT,
        [(images[0], gsps), (other, None)],
        "Nodule <left> & prior — compare",
    )
    teaching = workstation_kos(FOR_TEACHING, [(images[2], None)], "teaching file")
    send(node, tmp_path / "more", [other, gsps, attach, teaching])
    config = write_config(tmp_path / "node.yaml", data)
    return Site(node, config, tmp_path, ca, images, gsps, other, attach, teaching)


def report(config: Path, action: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "node", "report", action, "-c", config, *args)


def node_cli(config: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "node", *args, "-c", config)


# dciodvfy's Defined Terms predate SHA256 (PS3.15 C.1 allows it) and cannot list local
# coding schemes ("99..." designators, PS3.16 8.2) such as the observers' ID scheme.
KNOWN_WARNINGS = (
    "Warning - Unrecognized defined term <SHA256> for value 1 of attribute <MAC Algorithm>",
    "Warning - Unrecognized defined term <99LOCAL> for value 1 of attribute "
    "<Coding Scheme Designator>",
)


def dciodvfy_errors(path: Path) -> list[str]:
    """Errors and unexpected warnings of dciodvfy (only the known false positives pass)."""
    result = run(tool("dciodvfy"), path)
    return [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("Error", "Warning")) and line not in KNOWN_WARNINGS
    ]


def dcmsign(path: Path, *options: str | Path) -> subprocess.CompletedProcess[str]:
    return run(tool("dcmsign"), "--verify", *options, path)


def created(result: subprocess.CompletedProcess[str]) -> tuple[str, Path, Path]:
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^draft report (\S+) \(UNVERIFIED, \w+\): (.+)$", result.stdout, re.M)
    cda = re.search(r"^equivalent CDA: (.+)$", result.stdout, re.M)
    assert match and cda, result.stdout
    return match.group(1), Path(match.group(2)), Path(cda.group(1))


def archived_path(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^report \S+ \w+ and archived: (.+)$", result.stdout, re.M)
    assert match, result.stdout
    return Path(match.group(1))


def evidence_uids(ds: Dataset, keyword: str) -> dict[str, Dataset]:
    return {
        str(sop.ReferencedSOPInstanceUID): sop
        for study in ds.get(keyword) or []
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


def dictation(root: Path, text: str, name: str = "dictation.txt") -> Path:
    path = root / name
    path.write_bytes(text.encode("utf-8"))
    return path


DICTATION = (
    "History: headache since Monday.\n\n"
    "FINDINGS:\nNo bleed. Ödem 3 mm — <b>&amp;</b> x<y\nsecond line\n\n"
    "impression: Normal study.\n"
)


def test_create_sign_verify_and_check(site: Site) -> None:
    archive = site.node.archive
    uid, draft, cda_path = created(
        report(
            site.config,
            "create",
            STUDY_UID,
            "--text",
            dictation(site.root, DICTATION),
            "--author",
            "smith^john",
        )
    )
    assert dciodvfy_errors(draft) == []
    sr = dcmread(draft)
    assert (sr.SOPClassUID, sr.Modality, sr.SOPInstanceUID) == (BasicTextSRStorage, "SR", uid)
    assert (sr.StudyInstanceUID, sr.PatientID, str(sr.PatientName)) == (
        STUDY_UID,
        "PID-1",
        "Doe^Jane",
    )
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    author = sr.AuthorObserverSequence[0]
    assert (author.ObserverType, str(author.PersonName)) == ("PSN", "Smith^John")
    assert author.PersonIdentificationCodeSequence[0].CodeValue == "1001"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2005"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    request = sr.ReferencedRequestSequence[0]  # from the MPPS's scheduled step
    assert (request.AccessionNumber, request.RequestedProcedureID) == ("ACC1", "RP1")

    # TID 2005: language, one container per heading, one Key Images container per KO.
    language, *sections, key_images = sr.ContentSequence
    assert language.RelationshipType == "HAS CONCEPT MOD"
    assert language.ConceptNameCodeSequence[0].CodeValue == "121049"
    assert language.ConceptCodeSequence[0].CodeValue == "en-US"
    found = [
        (
            c.ConceptNameCodeSequence[0].CodeValue,
            c.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue,
            c.ContentSequence[0].TextValue,
        )
        for c in sections
    ]
    assert found == [
        ("11329-0", "11329-0", "headache since Monday."),
        ("59776-5", "121071", "No bleed. Ödem 3 mm — <b>&amp;</b> x<y\nsecond line"),
        ("19005-8", "121073", "Normal study."),
    ]
    assert key_images.ConceptNameCodeSequence[0].CodeValue == "121180"  # one: not For Teaching
    description, first, second = key_images.ContentSequence
    assert description.TextValue == "Nodule <left> & prior — compare"
    assert "ConceptNameCodeSequence" not in first and "ConceptNameCodeSequence" not in second
    ref = first.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == site.images[0].SOPInstanceUID
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == site.gsps.SOPInstanceUID
    assert ref.IconImageSequence[0].PixelData == bytes(range(64))

    # Evidence: the whole requested procedure; the prior study's key image elsewhere.
    current = evidence_uids(sr, "CurrentRequestedProcedureEvidenceSequence")
    in_study = {r.sop_instance_uid for r in study_instances(archive.engine, STUDY_UID)}
    assert set(current) == in_study
    assert set(evidence_uids(sr, "PertinentOtherEvidenceSequence")) == {site.other.SOPInstanceUID}
    acquisition = [
        dcmread(archive.files.path(r.path))
        for r in study_instances(archive.engine, STUDY_UID)
        if r.sop_class_uid == KeyObjectSelectionDocumentStorage
    ]
    (signed_kos,) = [k for k in acquisition if k.ConceptNameCodeSequence[0].CodeValue == "113035"]
    for image in site.images:  # W case 1 step 7: copied from the signed KOS
        copied = evidence_uids(signed_kos, "CurrentRequestedProcedureEvidenceSequence")
        mine = current[image.SOPInstanceUID].ReferencedSOPInstanceMACSequence[0].MAC
        assert mine == copied[image.SOPInstanceUID].ReferencedSOPInstanceMACSequence[0].MAC
    for sop in current.values():
        assert sop.ReferencedSOPInstanceMACSequence[0].MACAlgorithm == "SHA256"

    # SR <-> CDA: the current attributes, not the retired (0040,A090).
    assert 0x0040A090 not in sr
    equivalent = sr.ReferencedInstanceSequence[0]
    assert equivalent.ReferencedSOPClassUID == "2.16.840.1.113883.1.7.2"
    assert equivalent.PurposeOfReferenceCodeSequence[0].CodeValue == "121331"
    hl7 = sr.HL7StructuredDocumentReferenceSequence[0]
    cda_uid = str(equivalent.ReferencedSOPInstanceUID)
    assert hl7.ReferencedSOPInstanceUID == hl7.HL7InstanceIdentifier == cda_uid

    tree = run(tool("dsrdump"), draft)
    assert tree.returncode == 0, tree.stderr
    expected = [
        '<CONTAINER:(,,"Diagnostic Imaging Report")=SEPARATE>',
        '  <has concept mod CODE:(,,"Language of Content Item and Descendants")=(en-US,'
        'RFC5646,"English (United States)")>',
        '  <contains CONTAINER:(,,"History")=SEPARATE>',
        '    <contains TEXT:(,,"History")="headache since Monday.">',
        '  <contains CONTAINER:(,,"Findings")=SEPARATE>',
        '    <contains TEXT:(,,"Finding")="No bleed. Ödem 3 mm — <b...">',
        '  <contains CONTAINER:(,,"Impressions")=SEPARATE>',
        '    <contains TEXT:(,,"Impression")="Normal study.">',
        '  <contains CONTAINER:(,,"Key Images")=SEPARATE>',
        '    <contains TEXT:(,,"Key Object Description")="Nodule <left> & prior — c...">',
        "    <contains IMAGE:=(CT image,),(GSPS,)>",
        "    <contains IMAGE:=(CT image,)>",
    ]
    lines = tree.stdout.splitlines()
    start = lines.index(expected[0])
    assert lines[start : start + len(expected)] == expected, tree.stdout

    check_cda(site, cda_path, sr, cda_uid)

    # Author Signature (W case 1 step 8) and archiving.
    archived = archived_path(report(site.config, "sign", draft))
    assert dcmsign(archived, "+rs", "+cf", site.ca.cert).returncode == 0
    assert dciodvfy_errors(archived) == []
    assert Path(f"{archived}.sig").is_file()
    signed = dcmread(archived)
    purpose = signed.DigitalSignaturesSequence[0].DigitalSignaturePurposeCodeSequence[0]
    assert purpose.CodeValue == "1"
    again = report(site.config, "sign", draft)
    assert again.returncode == 2 and "already archived" in again.stderr
    check = node_cli(site.config, "verify", archived)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(current) + 1} secure references" in check.stdout

    # Verification (step 9): a new instance, both signatures intact.
    verified_run = report(site.config, "verify", uid, "--by", "Jones^Ann")
    verified_path = archived_path(verified_run)
    verified = dcmread(verified_path)
    assert verified.SOPInstanceUID != uid and verified.InstanceNumber == 2
    assert verified.VerificationFlag == "VERIFIED"
    observer = verified.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Jones^Ann"
    assert observer.VerifyingOrganization == "Example Hospital"
    predecessor = evidence_uids(verified, "PredecessorDocumentsSequence")[uid]
    assert predecessor.ReferencedDigitalSignatureSequence[0].DigitalSignatureUID == (
        signed.DigitalSignaturesSequence[0].DigitalSignatureUID
    )
    purposes = [
        s.DigitalSignaturePurposeCodeSequence[0].CodeValue
        for s in verified.DigitalSignaturesSequence
    ]
    assert purposes == ["1", "5"]
    # dcmsign +rs applies the SR verification profile to a VERIFIED report; +pv is a
    # signing option in DCMTK 3.6.7, so DCMTK's own +pv signing must accept it as input.
    result = dcmsign(verified_path, "+rs", "+cf", site.ca.cert)
    assert result.returncode == 0, result.stdout + result.stderr
    jones = site.root / "pki"
    resigned = site.root / "resigned.dcm"
    result = run(
        tool("dcmsign"),
        "--sign",
        jones / "jones.key.pem",
        jones / "jones.cert.pem",
        "-pw",
        "+m2",
        "+pv",
        verified_path,
        resigned,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = dcmsign(resigned, "+rs", "+cf", site.ca.cert)
    assert result.returncode == 0, result.stdout + result.stderr
    assert dciodvfy_errors(verified_path) == []
    new_cda = Path(re.findall(r"^equivalent CDA: (.+)$", verified_run.stdout, re.M)[-1])
    root = ET.parse(new_cda).getroot()
    legal = root.find("h:legalAuthenticator/h:assignedEntity/h:assignedPerson/h:name", NS)
    assert legal is not None and legal.findtext("h:family", namespaces=NS) == "Jones"
    replaced = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    assert replaced is not None and replaced.get("root") == cda_uid
    assert root.find("h:versionNumber", NS).get("value") == "2"  # type: ignore[union-attr]

    # Step 10 and 11: signatures, certificates at signing time, referenced materials.
    check = node_cli(site.config, "verify", verified_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("certificate valid at signing") == 2, check.stdout
    with archive.engine.connect() as conn:
        row = find_instance(conn, site.images[1].SOPInstanceUID)
    assert row is not None
    victim = archive.files.path(row.path)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # one byte of pixel data
    victim.write_bytes(bytes(data))
    check = node_cli(site.config, "verify", verified_path)
    assert check.returncode == 1
    assert f"reference {site.images[1].SOPInstanceUID}: FAILED: MAC mismatch" in check.stdout
    assert f"altered or missing: {site.images[1].SOPInstanceUID}" in check.stdout
    bad = [
        line for line in check.stdout.splitlines() if re.search(r": reference \S+: FAILED", line)
    ]
    assert len(bad) == 1, check.stdout

    events = [r.event for r in audit.records(archive.engine, study_uid=STUDY_UID)]
    for event in ("report-created", "report-signed", "report-verified"):
        assert event in events


def check_cda(site: Site, path: Path, sr: Dataset, cda_uid: str) -> None:
    data = path.read_bytes()
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert b"&lt;b&gt;&amp;amp;&lt;/b&gt; x&lt;y" in data  # escaped, never raw markup
    root = ET.fromstring(data)
    assert root.tag == f"{{{HL7}}}ClinicalDocument"
    assert root.find("h:id", NS).get("root") == cda_uid  # type: ignore[union-attr]
    parent = root.find("h:relatedDocument[@typeCode='XFRM']/h:parentDocument/h:id", NS)
    assert parent is not None and parent.get("root") == sr.SOPInstanceUID
    sections = root.findall("h:component/h:structuredBody/h:component/h:section", NS)
    titles = [s.findtext("h:title", namespaces=NS) for s in sections]
    assert titles == ["DICOM Object Catalog", "History", "Findings", "Impressions", "Key Images"]
    findings = sections[2].find("h:text/h:paragraph", NS)
    assert findings is not None and findings.text == "No bleed. Ödem 3 mm — <b>&amp;</b> x<y"
    assert [br.tail for br in findings.findall("h:br", NS)] == ["second line"]
    key = sections[4].find("h:text", NS)
    assert key is not None
    assert key.findtext("h:paragraph", namespaces=NS) == "Nodule <left> & prior — compare"
    links = cda_links(data)
    assert len(links) == 2
    first, second = (parse_wado_uri(link) for link in links)
    assert first.object_uid == site.images[0].SOPInstanceUID
    assert first.presentation_uid == site.gsps.SOPInstanceUID
    assert first.presentation_series_uid == site.gsps.SeriesInstanceUID
    assert (second.study_uid, second.series_uid) == (STUDY_B, site.other.SeriesInstanceUID)
    catalog = sections[0]
    studies = catalog.findall("h:entry/h:act", NS)
    assert [s.find("h:id", NS).get("root") for s in studies] == [STUDY_UID, STUDY_B]  # type: ignore[union-attr]
    series = studies[0].findall("h:entryRelationship/h:act", NS)
    modality = series[0].find("h:code/h:qualifier/h:value", NS)
    assert modality is not None and modality.get("code") == "CT"
    assert modality.get("displayName") == "Computed Tomography"
    images = root.findall(".//h:observation[@classCode='DGIMG']", NS)
    ids = {o.find("h:id", NS).get("root") for o in images}  # type: ignore[union-attr]
    assert ids == {
        site.images[0].SOPInstanceUID,
        site.gsps.SOPInstanceUID,
        site.other.SOPInstanceUID,
    }
    for observation in images:
        reference = observation.find("h:text/h:reference", NS)
        assert reference is not None
        assert parse_wado_uri(reference.get("value", "")).content_types == ("application/dicom",)


def test_transcription_inputs(site: Site) -> None:
    """Non-ASCII, very long, empty, markup and control characters: a report or a clear error."""
    text = "Befund: — 日本語 ÆØÅ ünïcödé\n" + "Lorem ipsum dolor sit amet. " * 8000
    _uid, draft, cda = created(
        report(
            site.config,
            "create",
            STUDY_UID,
            "--text",
            dictation(site.root, text, "long"),
            "--author",
            "1001",
        )
    )
    assert dciodvfy_errors(draft) == []
    sr = dcmread(draft)
    (finding,) = [c for c in sr.ContentSequence if c.ValueType == "CONTAINER"][:1]
    assert finding.ContentSequence[0].TextValue == text.rstrip()
    assert finding.ConceptNameCodeSequence[0].CodeValue == "59776-5"
    paragraph = ET.parse(cda).getroot().find(".//h:section[h:title='Findings']/h:text", NS)
    assert paragraph is not None
    assert "".join(paragraph.itertext()) == text.rstrip().replace("\n", "")

    for content, message in (
        ("", "the transcription is empty"),
        ("   \n\n", "the transcription is empty"),
        ("FINDINGS:\nIMPRESSION:\n", "only headings, no text"),
        ("FINDINGS: ok\nbell \x07 here\n", "line 2: control character U+0007"),
    ):
        result = report(
            site.config,
            "create",
            STUDY_UID,
            "--text",
            dictation(site.root, content, "bad"),
            "--author",
            "1001",
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    latin1 = site.root / "latin1.txt"
    latin1.write_bytes("FINDINGS: Ödem".encode("latin-1"))
    result = report(site.config, "create", STUDY_UID, "--text", latin1, "--author", "1001")
    assert result.returncode == 2 and "line 1: not UTF-8 text" in result.stderr

    # A PARTIAL report cannot be verified (C.17.2); it can be signed and archived.
    _, partial, _ = created(
        report(
            site.config,
            "create",
            STUDY_UID,
            "--text",
            dictation(site.root, "ok"),
            "--author",
            "1001",
            "--partial",
        )
    )
    assert dciodvfy_errors(archived_path(report(site.config, "sign", partial))) == []
    refused = report(site.config, "verify", str(dcmread(partial).SOPInstanceUID), "--by", "1002")
    assert refused.returncode in (1, 2) and "PARTIAL" in refused.stderr, refused.stderr
    ok = dictation(site.root, "fine")
    unknown = report(site.config, "create", STUDY_UID, "--text", ok, "--author", "nobody")
    assert unknown.returncode == 2 and "not in reporting.people" in unknown.stderr

    # A Validation Signature (purpose 6) instead of the Verification Signature.
    _, complete, _ = created(
        report(site.config, "create", STUDY_UID, "--text", ok, "--author", "1001", "--sign")
    )
    validated = archived_path(
        report(site.config, "verify", complete, "--by", "1002", "--purpose", "validation")
    )
    ds = dcmread(validated)
    assert ds.VerificationFlag == "VERIFIED"
    assert [
        s.DigitalSignaturePurposeCodeSequence[0].CodeValue for s in ds.DigitalSignaturesSequence
    ] == ["1", "6"]
    assert dciodvfy_errors(validated) == []
    check = node_cli(site.config, "verify", validated)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kos_fetched_from_source_when_absent(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    """X.1.2: no KO in the archive, so every KO of the study is retrieved and filtered."""
    images = [ct_dataset(number=i, seed=i) for i in range(1, 3)]
    attach = workstation_kos(FOR_REPORT_ATTACHMENT, [(images[0], None)], "for the report")
    teaching = workstation_kos(FOR_TEACHING, [(images[1], None)], "teaching")
    files = [
        write_part10(ds, tmp_path / "pacs-in" / f"{i}.dcm")
        for i, ds in enumerate([attach, teaching])
    ]
    with DcmQrScp(tmp_path / "qr", aet="PACS", files=files) as qr:
        sources = [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": qr.port}]
        data, _ = site_config(tmp_path, sources=sources, reporting={"source": "pacs"})
        node = start_node(parse_config(data, tmp_path))
        send(node, tmp_path / "images", images)
        config = write_config(tmp_path / "node.yaml", data)
        result = report(
            config,
            "create",
            STUDY_UID,
            "--text",
            dictation(tmp_path, "FINDINGS: small."),
            "--author",
            "1001",
        )
        _, draft, _cda = created(result)
    assert "retrieved 2 KOS series from pacs, 1 KOS for report attachment" in result.stdout
    sr = dcmread(draft)
    (key_images,) = [
        c for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121180"
    ]
    assert key_images.ContentSequence[0].TextValue == "for the report"
    assert [
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in key_images.ContentSequence[1:]
    ] == [images[0].SOPInstanceUID]
    assert dciodvfy_errors(draft) == []


def test_cda_links_retrieve_key_images_from_the_node(site: Site, tmp_path: Path) -> None:
    """X.4.3: the CDA's WADO links, fed to ``dicom-node retrieve``, bring back the images
    from the node's own Q/R SCP into a second node's archive (the report itself too: it
    is archived, signed, before its CDA goes out)."""
    uid, _, cda = created(
        report(
            site.config,
            "create",
            STUDY_UID,
            "--text",
            dictation(site.root, "FINDINGS: x"),
            "--author",
            "1001",
            "--sign",
        )
    )
    second = tmp_path / "second"
    second.mkdir()
    sources = [
        {"name": "main", "ae_title": "DICOM_NODE", "host": "127.0.0.1", "port": site.node.port}
    ]
    data = config_dict(second, node={"ae_title": "VIEWER", "port": 0}, sources=sources)
    config = write_config(second / "node.yaml", data)
    result = run(
        sys.executable,
        "-m",
        "node",
        "retrieve",
        "-c",
        config,
        "--source",
        "main",
        "--method",
        "get",
        "--file",
        cda,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = FileStore(second / "archive")
    archive = Archive(files, open_database(f"sqlite:///{second / 'node.sqlite'}"))
    try:
        for wanted in (
            site.images[0].SOPInstanceUID,
            site.gsps.SOPInstanceUID,
            site.other.SOPInstanceUID,
            uid,
        ):
            with archive.engine.connect() as conn:
                row = find_instance(conn, wanted)
            assert row is not None, f"{wanted} was not retrieved"
            with site.node.archive.engine.connect() as conn:
                original = find_instance(conn, wanted)
            assert original is not None
            mine = dataset_bytes(files.path(row.path))
            theirs = dataset_bytes(site.node.archive.files.path(original.path))
            assert mine == theirs, "the data set changed on the way"
    finally:
        archive.engine.dispose()
