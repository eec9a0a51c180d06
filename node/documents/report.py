"""The Basic Text SR of a dictation report (PS3.17 Annex X.2; PS3.3 A.35.1; TID 2005).

:func:`build_report` makes the unverified report from transcribed sections and the
content of each "For Report Attachment" KOS; :func:`verified_report` makes the verified
report, which is a new SOP instance (PS3.4 Annex O: the node creates a new SOP Instance
UID when an SR document is verified) naming its predecessor in the Predecessor Documents
Sequence (PS3.3 C.17.2). Both are pure: finding, signing and storing are the use cases
of :mod:`node.reports`.

The SR and its equivalent HL7 CDA document point at each other (X.4.2): the SR names the
CDA in the HL7 Structured Document Reference Sequence (0040,A390) and in a Referenced
Instance Sequence (0008,114A) item with purpose (121331, DCM, "Equivalent CDA Document"),
the current replacement of the retired Equivalent CDA Document Sequence (0040,A090).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts
from pydicom.sr.coding import Code
from pydicom.uid import BasicTextSRStorage

from node.documents.codes import (
    DIAGNOSTIC_IMAGING_REPORT,
    EQUIVALENT_CDA_DOCUMENT,
    KEY_IMAGES,
    KEY_OBJECT_DESCRIPTION,
    LANGUAGE_OF_CONTENT,
)
from node.documents.sr_common import (
    IODError,
    Reference,
    code_content_item,
    code_item,
    container_item,
    copy_patient_study,
    evidence_references,
    evidence_sequence,
    set_equipment,
    set_instance,
    set_root,
    text_item,
)
from node.documents.transcription import Section
from node.errors import UsageError

TEMPLATE = "2005"
SERIES_NUMBER = 9902
CDA_R2_SOP_CLASS = "2.16.840.1.113883.1.7.2"  # HL7 CDA Release 2 (HMD OID), PS3.3 C.12.1.1.6
UTF8 = "ISO_IR 192"  # every report is UTF-8: any dictation and any verifier's name fit
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")
# Changed when a report is verified (a new instance), so an Author Signature does not
# cover them (PS3.15 C.4 asks for them only in the Verification Signature).
CHANGED_BY_VERIFICATION = frozenset({
    0x00080012, 0x00080013, 0x00080018, 0x0008114A, 0x00200013, 0x0040A073,
    0x0040A360, 0x0040A390, 0x0040A493,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Observer:
    """An author or verifier: Identified Person macro (C.17-3b) or Verifying Observer."""

    name: str
    observer_id: str | None = None
    scheme: str = "99LOCAL"
    institution: str = ""

    def identification(self) -> Sequence:
        """Person Identification Code Sequence: the observer ID, or empty (Type 2)."""
        if not self.observer_id:
            return Sequence()
        return Sequence([code_item(Code(self.observer_id, self.scheme, self.name))])


@dataclass(frozen=True, slots=True)
class KeyImages:
    """What one "For Report Attachment" KOS contributes (X.2.3, TID 2005 rows 5-7)."""

    kos_uid: str
    description: str | None
    images: Seq[Dataset]  # IMAGE content items of the KOS, copied whole


@dataclass(frozen=True, slots=True)
class ReportRequest:
    sop_instance_uid: str
    series_uid: str
    cda_uid: str
    cda_uri: str  # where the CDA document can be read (Retrieve URI)
    patient_study: Dataset
    sections: Seq[Section]
    author: Observer
    station_name: str
    retrieve_ae_title: str
    title: Code = DIAGNOSTIC_IMAGING_REPORT
    language: Code = ENGLISH_US
    institution: str = ""
    key_images: Seq[KeyImages] = ()
    evidence: Seq[Reference] = ()  # the requested procedure: A375
    other_evidence: Seq[Reference] = ()  # key images of other studies: A385
    requests: Seq[Dataset] = ()  # Referenced Request Sequence items
    complete: bool = True
    instance_number: int = 1
    series_number: int = SERIES_NUMBER
    content_time: datetime = field(default_factory=lambda: datetime.now(UTC))


def is_report(ds: Dataset) -> bool:
    """A TID 2005 Basic Text SR (what :func:`build_report` makes)."""
    templates = ds.get("ContentTemplateSequence") or []
    return str(ds.get("SOPClassUID", "")) == BasicTextSRStorage and any(
        str(t.get("TemplateIdentifier", "")) == TEMPLATE for t in templates
    )


def document_title(key: str) -> Code:
    """A CID 7000 Diagnostic Imaging Report Document Title by code value (e.g. 18748-4)."""
    wanted = key.strip().split(":")[-1]
    for scheme, names in cid_concepts[7000].items():
        for name in names:
            entry = cast(dict[str, tuple[str, list[int]]], concepts[scheme][name])
            for value, (meaning, _) in entry.items():
                if value == wanted:
                    return Code(value, scheme, meaning)
    raise UsageError(
        f"title {key!r} is not in CID 7000 (e.g. 18748-4 Diagnostic Imaging Report, "
        "11528-7 Radiology Report, 25045-6 CT Report)"
    )


def referenced_uids(image: Dataset) -> list[str]:
    """The instance an IMAGE item names and the presentation state within it."""
    uids = []
    for sop in image.get("ReferencedSOPSequence") or []:
        uids.append(str(sop.ReferencedSOPInstanceUID))
        for state in sop.get("ReferencedSOPSequence") or []:
            uids.append(str(state.ReferencedSOPInstanceUID))
    return uids


def report_image_item(image: Dataset) -> Dataset:
    """A KOS IMAGE item as TID 2005 row 7 wants it: whole, but without a concept name."""
    item = copy.deepcopy(image)
    item.RelationshipType = "CONTAINS"
    for keyword in ("ConceptNameCodeSequence", "ContentSequence"):
        if keyword in item:
            del item[keyword]
    return item


def build_report(req: ReportRequest) -> Dataset:
    """The unverified Basic Text SR of ``req``; raise IODError when it cannot be valid."""
    if not req.sections:
        raise IODError("sections: TID 2005 needs at least one section (row 3)")
    _check_evidence(req)
    ds = Dataset()
    copy_patient_study(ds, req.patient_study)
    ds.SpecificCharacterSet = UTF8
    when = req.content_time.astimezone(UTC)
    set_instance(ds, BasicTextSRStorage, req.sop_instance_uid, when)
    # SR Document Series (C.17.1)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = req.series_uid
    ds.SeriesNumber = req.series_number
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.SeriesDescription = req.title.meaning[:64]
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    set_equipment(ds, req.station_name)
    # SR Document General (C.17.2)
    ds.InstanceNumber = req.instance_number
    ds.CompletionFlag = "COMPLETE" if req.complete else "PARTIAL"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.AuthorObserverSequence = Sequence([author_item(req.author, req.institution)])
    if req.institution:
        custodian = Dataset()
        custodian.InstitutionName = req.institution
        custodian.InstitutionCodeSequence = Sequence()
        ds.CustodialOrganizationSequence = Sequence([custodian])
    if req.requests:
        ds.ReferencedRequestSequence = Sequence([copy.deepcopy(r) for r in req.requests])
    ds.PerformedProcedureCodeSequence = Sequence()
    if req.evidence:
        ds.CurrentRequestedProcedureEvidenceSequence = evidence_sequence(
            req.evidence, req.retrieve_ae_title
        )
    if req.other_evidence:
        ds.PertinentOtherEvidenceSequence = evidence_sequence(
            req.other_evidence, req.retrieve_ae_title
        )
    link_cda(ds, req.cda_uid, req.cda_uri)
    _content(ds, req)
    return ds


def author_item(author: Observer, institution: str) -> Dataset:
    """An Author Observer Sequence item: Identified Person macro (PS3.3 Table C.17-3b)."""
    item = Dataset()
    item.ObserverType = "PSN"
    item.PersonName = author.name
    item.PersonIdentificationCodeSequence = author.identification()
    item.InstitutionName = author.institution or institution
    item.InstitutionCodeSequence = Sequence()
    return item


def request_item(study_uid: str, source: Dataset) -> Dataset:
    """A Referenced Request Sequence item (PS3.3 Table C.17-3c; Type 2 kept present)."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = source.get("AccessionNumber", "")
    item.PlacerOrderNumberImagingServiceRequest = source.get(
        "PlacerOrderNumberImagingServiceRequest", ""
    )
    item.FillerOrderNumberImagingServiceRequest = source.get(
        "FillerOrderNumberImagingServiceRequest", ""
    )
    item.RequestedProcedureID = source.get("RequestedProcedureID", "")
    item.RequestedProcedureDescription = source.get("RequestedProcedureDescription", "")
    codes = source.get("RequestedProcedureCodeSequence") or []
    item.RequestedProcedureCodeSequence = Sequence([copy.deepcopy(c) for c in codes[:1]])
    return item


def link_cda(ds: Dataset, cda_uid: str, cda_uri: str) -> None:
    """Name the equivalent CDA document (X.4.2, with the current attributes)."""
    hl7 = Dataset()
    hl7.ReferencedSOPClassUID = CDA_R2_SOP_CLASS
    hl7.ReferencedSOPInstanceUID = cda_uid
    hl7.HL7InstanceIdentifier = cda_uid  # the CDA id root, no extension
    hl7.RetrieveURI = cda_uri
    ds.HL7StructuredDocumentReferenceSequence = Sequence([hl7])
    item = Dataset()
    item.ReferencedSOPClassUID = CDA_R2_SOP_CLASS
    item.ReferencedSOPInstanceUID = cda_uid
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(EQUIVALENT_CDA_DOCUMENT)])
    ds.ReferencedInstanceSequence = Sequence([item])


def equivalent_cda_uid(ds: Dataset) -> str | None:
    """The UID of the CDA document that ``ds`` names as equivalent, if any."""
    for item in ds.get("ReferencedInstanceSequence") or []:
        purposes = item.get("PurposeOfReferenceCodeSequence") or []
        if any(str(p.CodeValue) == EQUIVALENT_CDA_DOCUMENT.value for p in purposes):
            return str(item.ReferencedSOPInstanceUID)
    return None


def _check_evidence(req: ReportRequest) -> None:
    """C.17.2.3: every referenced instance is evidence, in exactly one of the sequences."""
    current = {r.sop_instance_uid for r in req.evidence}
    other = {r.sop_instance_uid for r in req.other_evidence}
    both = current & other
    if both:
        raise IODError(
            "evidence: instances in both Current Requested Procedure and Pertinent Other "
            f"Evidence (PS3.3 C.17.2.3): {', '.join(sorted(both))}"
        )
    for group in req.key_images:
        for image in group.images:
            missing = [uid for uid in referenced_uids(image) if uid not in current | other]
            if missing:
                raise IODError(
                    f"key images of KOS {group.kos_uid}: {', '.join(missing)} not in the "
                    "evidence sequences (PS3.3 C.17.2.3)"
                )


def _content(ds: Dataset, req: ReportRequest) -> None:
    """TID 2005: language, one container per section, one Key Images container per KOS."""
    set_root(ds, req.title, TEMPLATE)
    content = [code_content_item("HAS CONCEPT MOD", LANGUAGE_OF_CONTENT, req.language)]
    for section in req.sections:
        text = text_item("CONTAINS", section.element, section.text)
        content.append(container_item("CONTAINS", section.heading, [text]))
    for group in req.key_images:
        children: list[Dataset] = []
        if group.description:
            children.append(text_item("CONTAINS", KEY_OBJECT_DESCRIPTION, group.description))
        children.extend(report_image_item(image) for image in group.images)
        content.append(container_item("CONTAINS", KEY_IMAGES, children))
    ds.ContentSequence = Sequence(content)


def verified_report(
    source: Dataset,
    *,
    sop_instance_uid: str,
    cda_uid: str,
    cda_uri: str,
    verifier: Observer,
    organization: str,
    predecessor: Reference,
    when: datetime,
) -> Dataset:
    """The verified copy of ``source``: a new instance naming ``source`` as predecessor.

    Signatures of ``source`` are kept: an Author Signature made by
    :func:`author_signed_tags` covers nothing that verification changes.
    """
    flag = str(source.get("VerificationFlag", ""))
    if flag == "VERIFIED":
        raise IODError("the report is already VERIFIED; the SR profile allows one verifier")
    if str(source.get("CompletionFlag", "")) != "COMPLETE":
        raise IODError(
            "the report is PARTIAL: Verification Flag VERIFIED is allowed only when "
            "Completion Flag is COMPLETE (PS3.3 C.17.2)"
        )
    if not organization:
        raise IODError("no verifying organization: set reporting.institution (Type 1, C.17.2)")
    ds = copy.deepcopy(source)
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    when = when.astimezone(UTC)
    ds.SpecificCharacterSet = UTF8
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.InstanceNumber = int(source.InstanceNumber) + 1
    ds.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = verifier.name
    observer.VerifyingObserverIdentificationCodeSequence = verifier.identification()
    observer.VerifyingOrganization = organization
    observer.VerificationDateTime = when.strftime("%Y%m%d%H%M%S+0000")
    ds.VerifyingObserverSequence = Sequence([observer])
    # C.17.2: the documents whose content this one includes, the earlier ones kept.
    earlier = evidence_references(ds, "PredecessorDocumentsSequence")
    ds.PredecessorDocumentsSequence = evidence_sequence([*earlier, predecessor], None)
    link_cda(ds, cda_uid, cda_uri)
    return ds


def author_signed_tags(ds: Dataset) -> list[int]:
    """The top-level elements an Author Signature covers: all but those verification changes.

    The SR profile's required elements (PS3.15 C.4) are all among them, so the author's
    signature stays valid in the verified report, as PS3.17 W case 1 steps 8-10 expect.
    """
    return [
        int(tag)
        for tag in ds.keys()  # noqa: SIM118 - iterating a Dataset would decode raw elements
        if tag.group >= 0x0008
        and tag.element != 0
        and tag.group != 0xFFFA
        and int(tag) not in (0x4FFE0001, 0xFFFCFFFC)
        and int(tag) not in CHANGED_BY_VERIFICATION
    ]


def image_items(ds: Dataset) -> Iterable[tuple[Dataset, Dataset]]:
    """(Key Images container, IMAGE item) pairs of a report, in document order."""
    for container in ds.get("ContentSequence") or []:
        names = container.get("ConceptNameCodeSequence") or []
        if container.get("ValueType") != "CONTAINER" or not names:
            continue
        if str(names[0].CodeValue) != KEY_IMAGES.value:
            continue
        for item in container.get("ContentSequence") or []:
            if item.get("ValueType") == "IMAGE":
                yield container, item
