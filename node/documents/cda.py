"""The HL7 CDA Release 2 document equivalent to a dictation report (PS3.17 X.3 and X.4).

It is made from the Basic Text SR itself, so both carry the same clinical content
(X.4.1): the header from the SR header (patient, study, author, verifier, order), one
section per report section with its text in ``<paragraph>``, one "Key Images" section
per Key Images container whose IMAGE items become ``<linkHtml>`` WADO-URI links
(Table X.3-1), and a "DICOM Object Catalog" section (X.3.5, Tables X.3-2 to X.3-6) with
Study and Series acts and a DGIMG observation per referenced instance. The CDA names
the SR with a ``relatedDocument`` (X.4.2); a CDA made for a verified report replaces
the CDA of its predecessor (``RPLC``, same ``setId``, ``versionNumber`` = SR Instance
Number).

The XML is built with :mod:`xml.etree.ElementTree` (text and attributes escaped by the
library) and written as UTF-8 with an XML declaration.

The key-image links are WADO-URI (PS3.18 9.1.2), made by :mod:`node.documents.wado_links`.
Icons (X.3.4) are not embedded.
"""

from __future__ import annotations

import functools
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr._concepts_dict import concepts
from pydicom.sr.coding import Code
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from node.documents.codes import DICOM_OBJECT_CATALOG, KEY_IMAGES
from node.documents.report import equivalent_cda_uid, image_items
from node.documents.sr_common import code_of, concept_of, evidence_references
from node.documents.wado_links import Located, image_links, wado_url
from node.storage.files import write_atomic

HL7 = "urn:hl7-org:v3"
CDA_TYPE_ID = ("2.16.840.1.113883.1.3", "POCD_HD000040")
DCM = "1.2.840.10008.2.16.4"
DCMUID = "1.2.840.10008.2.6.1"
CODE_SYSTEMS = {
    "DCM": (DCM, "DCM"),
    "LN": ("2.16.840.1.113883.6.1", "LOINC"),
    "SCT": ("2.16.840.1.113883.6.96", "SNOMED CT"),
}
CONFIDENTIALITY = "2.16.840.1.113883.5.25"
GENDER = "2.16.840.1.113883.5.1"
STUDY_CODE = ("113014", "DICOM Study")  # Table X.3-2
SERIES_CODE = ("113015", "DICOM Series")  # Table X.3-3
MODALITY_CODE = ("121139", "Modality")  # Table X.3-4
_ROOTS = uuid.UUID("0f1b6c8e-3f7a-4d0e-9a51-6a8d2f0c4e17")


@dataclass(frozen=True, slots=True)
class CdaContext:
    """What the SR does not hold: identities, the WADO server, where series come from."""

    cda_uid: str
    wado_base_url: str
    custodian: str
    modality_of: Callable[[str], str | None]  # Series Instance UID -> Modality
    replaces: str | None = None  # id of the CDA this one replaces (the predecessor's)


def local_root(kind: str, name: str) -> str:
    """A stable OID (UUID-derived, PS3.5 B.2) for identifiers that come without one."""
    return f"2.25.{uuid.uuid5(_ROOTS, f'{kind}:{name}').int}"


class _Builder:
    """Small helpers over ElementTree for HL7 elements.

    Elements are built without a namespace prefix and the root declares HL7 as the
    default namespace (``xmlns``), so every element is in it when the XML is read; this
    avoids ElementTree's process-wide prefix registry.
    """

    @staticmethod
    def root(name: str) -> ET.Element:
        return ET.Element(name, {"xmlns": HL7})

    def sub(self, parent: ET.Element, name: str, **attributes: str) -> ET.Element:
        return ET.SubElement(parent, name, attributes)

    def text(self, parent: ET.Element, name: str, value: str, **attributes: str) -> ET.Element:
        element = self.sub(parent, name, **attributes)
        element.text = value
        return element

    def code(
        self, parent: ET.Element, name: str, code_value: str, scheme: str, meaning: str
    ) -> ET.Element:
        system, system_name = CODE_SYSTEMS.get(scheme, (local_root("scheme", scheme), scheme))
        return self.sub(
            parent,
            name,
            code=code_value,
            codeSystem=system,
            codeSystemName=system_name,
            displayName=meaning,
        )


def build_cda(sr: Dataset, ctx: CdaContext) -> ET.Element:
    """The CDA R2 ClinicalDocument equivalent to the report ``sr``."""
    b = _Builder()
    located = _locations(sr)

    def where(uid: str) -> Located:
        found = located.get(uid)
        if found is None:
            raise ValueError(f"{uid} is referenced but not in the report's evidence")
        return found

    doc = b.root("ClinicalDocument")
    b.sub(doc, "typeId", root=CDA_TYPE_ID[0], extension=CDA_TYPE_ID[1])
    b.sub(doc, "id", root=ctx.cda_uid)
    title = concept_of(sr)
    if title is not None:
        b.code(doc, "code", title.value, title.scheme_designator, title.meaning)
        b.text(doc, "title", title.meaning)
    b.sub(doc, "effectiveTime", value=_datetime(sr, "ContentDate", "ContentTime"))
    b.sub(doc, "confidentialityCode", code="N", codeSystem=CONFIDENTIALITY)
    b.sub(doc, "languageCode", code=_language(sr))
    b.sub(doc, "setId", root=local_root("cda-set", str(sr.SeriesInstanceUID)))
    b.sub(doc, "versionNumber", value=str(int(sr.get("InstanceNumber", 1) or 1)))
    _record_target(b, doc, sr)
    _authors(b, doc, sr)
    _custodian(b, doc, ctx.custodian)
    _legal_authenticator(b, doc, sr)
    _orders(b, doc, sr)
    _service_event(b, doc, sr)
    _related(b, doc, sr, ctx)
    body = b.sub(b.sub(doc, "component"), "structuredBody")
    _catalog(b, body, sr, ctx, where)
    for item in sr.get("ContentSequence") or []:
        if item.get("ValueType") != "CONTAINER":
            continue
        concept = concept_of(item)
        if concept is not None and concept.value == KEY_IMAGES.value:
            _key_images(b, body, item, ctx, where)
        else:
            _text_section(b, body, item)
    return doc


def cda_bytes(document: ET.Element) -> bytes:
    """The document as UTF-8 XML with its declaration (the encoding declared)."""
    data: bytes = ET.tostring(document, encoding="UTF-8", xml_declaration=True)
    return data


def write_cda(document: ET.Element, path: Path) -> Path:
    write_atomic(path, cda_bytes(document))
    return path


def cda_links(data: bytes) -> list[str]:
    """Every ``linkHtml`` href of a CDA document (the key-image WADO links)."""
    root = ET.fromstring(data)
    return [e.get("href", "") for e in root.iter(f"{{{HL7}}}linkHtml")]


def _locations(sr: Dataset) -> dict[str, Located]:
    found = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for ref in evidence_references(sr, keyword):
            found[ref.sop_instance_uid] = Located(ref.study_uid, ref.series_uid, ref.sop_class_uid)
    return found


def _datetime(ds: Dataset, date: str, time: str) -> str:
    """A TS value from a DICOM date and time; the node writes them in UTC."""
    day = str(ds.get(date, "") or "")
    clock = str(ds.get(time, "") or "").split(".")[0]
    return f"{day}{clock}+0000" if day and clock else day


def _language(sr: Dataset) -> str:
    for item in sr.get("ContentSequence") or []:
        concept = concept_of(item)
        if item.get("ValueType") == "CODE" and concept and concept.value == "121049":
            return str(item.ConceptCodeSequence[0].CodeValue)
    return "en-US"


def _name(b: _Builder, parent: ET.Element, value: object) -> None:
    name = b.sub(parent, "name")
    person = PersonName(str(value)) if not isinstance(value, PersonName) else value
    for tag, part in (
        ("prefix", person.name_prefix),
        ("given", person.given_name),
        ("given", person.middle_name),
        ("family", person.family_name),
        ("suffix", person.name_suffix),
    ):
        if part:
            b.text(name, tag, str(part))
    if not len(name):
        name.text = str(value)


def _record_target(b: _Builder, doc: ET.Element, sr: Dataset) -> None:
    role = b.sub(b.sub(doc, "recordTarget"), "patientRole")
    issuer = str(sr.get("IssuerOfPatientID", "") or "")
    patient_id = str(sr.get("PatientID", "") or "")
    if patient_id:
        attrs = {"root": local_root("patient-id", issuer), "extension": patient_id}
        if issuer:
            attrs["assigningAuthorityName"] = issuer
        b.sub(role, "id", **attrs)
    else:
        b.sub(role, "id", nullFlavor="UNK")
    patient = b.sub(role, "patient")
    _name(b, patient, sr.get("PatientName", ""))
    sex = str(sr.get("PatientSex", "") or "")
    if sex in ("M", "F"):
        b.sub(patient, "administrativeGenderCode", code=sex, codeSystem=GENDER)
    elif sex:
        b.sub(patient, "administrativeGenderCode", code="UN", codeSystem=GENDER)
    birth = str(sr.get("PatientBirthDate", "") or "")
    if birth:
        b.sub(patient, "birthTime", value=birth)


def _person_id(b: _Builder, parent: ET.Element, codes: Sequence | None) -> None:
    items = list(codes or [])
    if items:
        code = code_of(items[0])
        b.sub(
            parent, "id", root=local_root("observer", code.scheme_designator), extension=code.value
        )
    else:
        b.sub(parent, "id", nullFlavor="UNK")


def _authors(b: _Builder, doc: ET.Element, sr: Dataset) -> None:
    for observer in sr.get("AuthorObserverSequence") or []:
        author = b.sub(doc, "author")
        b.sub(author, "time", value=_datetime(sr, "ContentDate", "ContentTime"))
        assigned = b.sub(author, "assignedAuthor")
        _person_id(b, assigned, observer.get("PersonIdentificationCodeSequence"))
        _name(b, b.sub(assigned, "assignedPerson"), observer.get("PersonName", ""))


def _custodian(b: _Builder, doc: ET.Element, name: str) -> None:
    organization = b.sub(
        b.sub(b.sub(doc, "custodian"), "assignedCustodian"), "representedCustodianOrganization"
    )
    b.sub(organization, "id", root=local_root("organization", name))
    b.text(organization, "name", name)


def _legal_authenticator(b: _Builder, doc: ET.Element, sr: Dataset) -> None:
    if sr.get("VerificationFlag") != "VERIFIED":
        return
    for observer in (sr.get("VerifyingObserverSequence") or [])[:1]:
        legal = b.sub(doc, "legalAuthenticator")
        b.sub(legal, "time", value=str(observer.VerificationDateTime))
        b.sub(legal, "signatureCode", code="S")
        entity = b.sub(legal, "assignedEntity")
        _person_id(b, entity, observer.get("VerifyingObserverIdentificationCodeSequence"))
        _name(b, b.sub(entity, "assignedPerson"), observer.VerifyingObserverName)
        organization = b.sub(entity, "representedOrganization")
        b.text(organization, "name", str(observer.VerifyingOrganization))


def _orders(b: _Builder, doc: ET.Element, sr: Dataset) -> None:
    for request in sr.get("ReferencedRequestSequence") or []:
        accession = str(request.get("AccessionNumber", "") or "")
        if accession:
            order = b.sub(b.sub(doc, "inFulfillmentOf"), "order")
            b.sub(order, "id", root=local_root("accession", ""), extension=accession)


def _service_event(b: _Builder, doc: ET.Element, sr: Dataset) -> None:
    event = b.sub(b.sub(doc, "documentationOf"), "serviceEvent", classCode="ACT")
    b.sub(event, "id", root=str(sr.StudyInstanceUID))
    for request in (sr.get("ReferencedRequestSequence") or [])[:1]:
        for code in (request.get("RequestedProcedureCodeSequence") or [])[:1]:
            c = code_of(code)
            b.code(event, "code", c.value, c.scheme_designator, c.meaning)
    when = _datetime(sr, "StudyDate", "StudyTime")
    if when:
        b.sub(event, "effectiveTime", value=when)


def _dicom_object(
    b: _Builder,
    parent: ET.Element,
    ctx: CdaContext,
    study_uid: str,
    series_uid: str,
    uid: str,
    sop_class: str,
) -> None:
    """id, code (SOP Class in DCMUID) and a WADO text reference of a DICOM object (X.3-6)."""
    b.sub(parent, "id", root=uid)
    b.sub(
        parent,
        "code",
        code=sop_class,
        codeSystem=DCMUID,
        codeSystemName="DCMUID",
        displayName=UID(sop_class).name,
    )
    reference = wado_url(
        ctx.wado_base_url, study_uid, series_uid, uid, ("contentType", "application/DICOM")
    )
    b.sub(b.sub(parent, "text", mediaType="application/DICOM"), "reference", value=reference)


def _related(b: _Builder, doc: ET.Element, sr: Dataset, ctx: CdaContext) -> None:
    """X.4.2: the SR this CDA was transformed from, and the CDA it replaces."""
    parent = b.sub(b.sub(doc, "relatedDocument", typeCode="XFRM"), "parentDocument")
    _dicom_object(
        b, parent, ctx, str(sr.StudyInstanceUID), str(sr.SeriesInstanceUID),
        str(sr.SOPInstanceUID), str(sr.SOPClassUID),
    )  # fmt: skip
    if ctx.replaces:
        replaced = b.sub(b.sub(doc, "relatedDocument", typeCode="RPLC"), "parentDocument")
        b.sub(replaced, "id", root=ctx.replaces)


def _paragraphs(b: _Builder, parent: ET.Element, text: str) -> None:
    """Blank lines separate paragraphs; other line breaks stay as ``<br/>``."""
    blocks = [block for block in text.split("\n\n") if block.strip()] or [text]
    for block in blocks:
        lines = block.strip("\n").split("\n")
        paragraph = b.text(parent, "paragraph", lines[0])
        for line in lines[1:]:
            b.sub(paragraph, "br").tail = line


def _section(b: _Builder, body: ET.Element, concept: Code | None) -> ET.Element:
    section = b.sub(b.sub(body, "component"), "section")
    if concept is not None:
        b.code(section, "code", concept.value, concept.scheme_designator, concept.meaning)
        b.text(section, "title", concept.meaning)
    return section


def _text_section(b: _Builder, body: ET.Element, container: Dataset) -> None:
    section = _section(b, body, concept_of(container))
    texts = [str(i.TextValue) for i in container.get("ContentSequence") or [] if "TextValue" in i]
    if texts:
        narrative = b.sub(section, "text")
        for text in texts:
            _paragraphs(b, narrative, text)


def _key_images(
    b: _Builder,
    body: ET.Element,
    container: Dataset,
    ctx: CdaContext,
    where: Callable[[str], Located],
) -> None:
    """X.3.3: the KOS description as paragraphs, each image as a WADO ``linkHtml``."""
    section = _section(b, body, KEY_IMAGES)
    narrative = b.sub(section, "text")
    listing = None
    number = 0
    for item in container.get("ContentSequence") or []:
        if item.get("ValueType") == "TEXT":
            _paragraphs(b, narrative, str(item.TextValue))
        elif item.get("ValueType") == "IMAGE":
            if listing is None:
                listing = b.sub(narrative, "list")
            for url in image_links(item, ctx.wado_base_url, where):
                number += 1
                sop = item.ReferencedSOPSequence[0]
                label = f"Key image {number} ({UID(str(sop.ReferencedSOPClassUID)).name})"
                b.text(b.sub(listing, "item"), "linkHtml", label, href=url)


def _catalog(
    b: _Builder,
    body: ET.Element,
    sr: Dataset,
    ctx: CdaContext,
    where: Callable[[str], Located],
) -> None:
    """X.3.5: Study and Series acts and DGIMG observations of the referenced instances."""
    wanted: list[str] = []
    for _, item in image_items(sr):
        for sop in item.get("ReferencedSOPSequence") or []:
            wanted.append(str(sop.ReferencedSOPInstanceUID))
            wanted.extend(
                str(s.ReferencedSOPInstanceUID) for s in sop.get("ReferencedSOPSequence") or []
            )
    if not wanted:
        return
    tree: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for uid in dict.fromkeys(wanted):
        place = where(uid)
        tree.setdefault(place.study_uid, {}).setdefault(place.series_uid, []).append(
            (uid, place.sop_class_uid)
        )
    section = _section(b, body, DICOM_OBJECT_CATALOG)
    for study_uid, series in tree.items():
        study = b.sub(b.sub(section, "entry"), "act", classCode="ACT", moodCode="EVN")
        b.sub(study, "id", root=study_uid)
        b.code(study, "code", STUDY_CODE[0], "DCM", STUDY_CODE[1])
        if study_uid == str(sr.StudyInstanceUID):
            if sr.get("StudyDescription"):
                b.text(study, "text", str(sr.StudyDescription))
            when = _datetime(sr, "StudyDate", "StudyTime")
            if when:
                b.sub(study, "effectiveTime", value=when)
        for series_uid, instances in series.items():
            relation = b.sub(study, "entryRelationship", typeCode="COMP")
            act = b.sub(relation, "act", classCode="ACT", moodCode="EVN")
            b.sub(act, "id", root=series_uid)
            code = b.code(act, "code", SERIES_CODE[0], "DCM", SERIES_CODE[1])
            modality = ctx.modality_of(series_uid)
            if modality:
                qualifier = b.sub(code, "qualifier")
                b.code(qualifier, "name", MODALITY_CODE[0], "DCM", MODALITY_CODE[1])
                b.code(qualifier, "value", modality, "DCM", modality_meaning(modality))
            for uid, sop_class in instances:
                observation = b.sub(
                    b.sub(act, "entryRelationship", typeCode="COMP"),
                    "observation",
                    classCode="DGIMG",
                    moodCode="EVN",
                )
                _dicom_object(b, observation, ctx, study_uid, series_uid, uid, sop_class)


@functools.cache
def _modality_meanings() -> dict[str, str]:
    table = cast(dict[str, dict[str, tuple[str, list[int]]]], concepts["DCM"])
    return {code: meaning for entry in table.values() for code, (meaning, _) in entry.items()}


def modality_meaning(modality: str) -> str:
    """The code meaning of a modality (PS3.16 CID 29/33), or the modality itself."""
    return _modality_meanings().get(modality, modality)


def replaced_cda(sr: Dataset) -> str | None:
    """The CDA a report names as equivalent (the one a verified report's CDA replaces)."""
    return equivalent_cda_uid(sr)
