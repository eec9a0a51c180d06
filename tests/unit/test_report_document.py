"""The TID 2005 report builder and the verified copy (PS3.17 X.2, PS3.3 C.17.2, W case 1)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from node.documents.report import (
    CHANGED_BY_VERIFICATION,
    KeyImages,
    Observer,
    author_signed_tags,
    build_report,
    document_title,
    equivalent_cda_uid,
    verified_report,
)
from node.documents.sr_common import IODError, Reference
from node.errors import UsageError
from node.signatures import Profile, Signer, sign_dataset, verify_dataset
from node.signatures.keys import self_signed_certificate
from node.signatures.purposes import AUTHOR
from tests.unit.report_samples import CT1, GSPS, PRIOR, SERIES, STUDY, image, ref, request

WHEN = dt.datetime(2026, 1, 3, 8, 0, tzinfo=dt.UTC)


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def test_tid_2005_tree_and_header() -> None:
    sr = build_report(request())
    assert (sr.SOPClassUID, sr.Modality, sr.SpecificCharacterSet) == (
        "1.2.840.10008.5.1.4.1.1.88.11",
        "SR",
        "ISO_IR 192",
    )
    assert str(sr.PatientName) == "Müller^Jörg^^Dr"  # copied from an ISO_IR 100 study
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.InstanceNumber) == (
        "COMPLETE",
        "UNVERIFIED",
        1,
    )
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2005"
    assert sr.ReferencedPerformedProcedureStepSequence == []
    assert sr.CustodialOrganizationSequence[0].InstitutionName == "Example Hospital"
    assert sr.AuthorObserverSequence[0].InstitutionName == "Clinic"
    language, findings, impressions, key = sr.ContentSequence
    assert (language.RelationshipType, language.ValueType, concept(language)) == (
        "HAS CONCEPT MOD",
        "CODE",
        "121049",
    )
    assert [concept(findings), concept(findings.ContentSequence[0])] == ["59776-5", "121071"]
    assert findings.ContentSequence[0].TextValue == "nodule <1 cm> & more"
    assert [concept(impressions), concept(impressions.ContentSequence[0])] == ["19005-8", "121073"]
    assert concept(key) == "121180"
    assert concept(key.ContentSequence[0]) == "113012"
    images = key.ContentSequence[1:]
    assert [i.ValueType for i in images] == ["IMAGE"] * 3
    assert all("ConceptNameCodeSequence" not in i for i in images)  # TID 2005 row 7
    first = images[0].ReferencedSOPSequence[0]
    assert first.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == GSPS
    assert first.IconImageSequence[0].PixelData == b"\x01\x02\x03\x04"
    assert images[1].ReferencedSOPSequence[0].ReferencedFrameNumber == [2, 5]
    assert equivalent_cda_uid(sr) == "1.2.3.1.98"
    assert sr.HL7StructuredDocumentReferenceSequence[0].RetrieveURI.startswith("file:///")
    other = sr.PertinentOtherEvidenceSequence[0]
    assert other.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        PRIOR
    )
    # The KOS items given to the builder are not changed by copying.
    assert "ConceptNameCodeSequence" in request().key_images[0].images[0]
    # Written and read back with the declared character set.
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, sr)
    fp.seek(0)
    back = read_dataset(fp, False, True)
    assert str(back.PatientName) == "Müller^Jörg^^Dr"


def test_evidence_rules() -> None:
    duplicate = request(other_evidence=[ref(CT1, SERIES)])
    with pytest.raises(IODError, match="in both Current Requested Procedure"):
        build_report(duplicate)
    missing = request(other_evidence=[])
    with pytest.raises(IODError, match=f"{PRIOR} not in the evidence sequences"):
        build_report(missing)
    unreferenced_state = request(evidence=[ref(CT1, SERIES)], other_evidence=[], key_images=[])
    assert build_report(unreferenced_state).ContentSequence[-1].ValueType == "CONTAINER"
    with pytest.raises(IODError, match=GSPS):
        build_report(
            request(
                evidence=[ref(CT1, SERIES)],
                other_evidence=[],
                key_images=[KeyImages("1.9", None, [image(CT1, state=GSPS)])],
            )
        )


def _signer(name: str) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return Signer(key, self_signed_certificate(key, name, not_before=start))


def _verify(sr: Dataset, predecessor_uid: str = "1.2.3.1.99.1", **more: object) -> Dataset:
    fields: dict[str, object] = {
        "sop_instance_uid": "1.2.3.1.99.2",
        "cda_uid": "1.2.3.1.97",
        "cda_uri": "file:///r/1.2.3.1.97.xml",
        "verifier": Observer("Jones^Ann", "1002"),
        "organization": "Example Hospital",
        "predecessor": Reference(str(sr.SOPClassUID), predecessor_uid, "1.2.3.1.99", STUDY),
        "when": WHEN,
    }
    fields.update(more)
    return verified_report(sr, **fields)  # type: ignore[arg-type]


def test_author_signature_survives_verification() -> None:
    sr = build_report(request())
    sign_dataset(
        sr, _signer("author"), profile=Profile.SR, purpose=AUTHOR, tags=author_signed_tags(sr)
    )
    signed = set(author_signed_tags(sr))
    assert not signed & CHANGED_BY_VERIFICATION
    assert {0x00080016, 0x0020000D, 0x0020000E, 0x0040A375, 0x0040A730} <= signed
    verified = _verify(sr)
    assert verified.SOPInstanceUID == "1.2.3.1.99.2" and verified.InstanceNumber == 2
    assert verified.VerifyingObserverSequence[0].VerificationDateTime == "20260103080000+0000"
    assert equivalent_cda_uid(verified) == "1.2.3.1.97"
    (predecessor,) = verified.PredecessorDocumentsSequence
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[
        0
    ].ReferencedSOPInstanceUID == ("1.2.3.1.99.1")
    sign_dataset(verified, _signer("verifier"), profile=Profile.SR_VERIFICATION)
    report = verify_dataset(verified, trust=None, require_profile=Profile.SR)
    assert [s.purpose_code for s in report.signatures] == ["1", "5"]
    assert all(s.mac_ok for s in report.signatures), report.problems
    assert report.profile_problems == []


def test_a_signature_over_everything_would_break_at_verification() -> None:
    """Why the Author Signature leaves out what verification changes."""
    sr = build_report(request())
    sign_dataset(sr, _signer("author"), profile=Profile.SR, purpose=AUTHOR)
    verified = _verify(sr)
    report = verify_dataset(verified, trust=None)
    assert not report.signatures[0].mac_ok


def test_verification_rules() -> None:
    partial = build_report(request(complete=False))
    with pytest.raises(IODError, match="PARTIAL"):
        _verify(partial)
    with pytest.raises(IODError, match="already VERIFIED"):
        _verify(_verify(build_report(request())))
    with pytest.raises(IODError, match=r"reporting\.institution"):
        _verify(build_report(request()), organization="")


def test_document_titles_from_cid_7000() -> None:
    assert document_title("25045-6").meaning == "CT Report"
    assert document_title("LN:18748-4").scheme_designator == "LN"
    with pytest.raises(UsageError, match="not in CID 7000"):
        document_title("113035")
