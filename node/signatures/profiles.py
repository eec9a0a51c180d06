"""Digital Signature Profiles of PS3.15 Annex C, as checks on what a signature covers.

* Base RSA (C.1): an RSA key and one of the six MAC algorithms; no attribute list.
* Creator RSA (C.2) and Authorization RSA (C.3): SOP Class/Instance, Study and Series
  UIDs, and every present attribute of the listed modules must be signed.
* SR RSA (C.4): SR and KOS only, at the top level, with a purpose code; the evidence
  and content attributes must be signed.
* SR RSA verification (C.4): also SOP Instance UID, Verification Flag (VERIFIED) and
  Verifying Observer Sequence, with purpose 5 "Verification Signature".

"none" means DCMTK's ``--profile-none``: any key type, no requirement.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from node.signatures.digests import MAC_ALGORITHMS


class Profile(enum.StrEnum):
    NONE = "none"
    BASE = "base"
    CREATOR = "creator"
    AUTHORIZATION = "authorization"
    SR = "sr"
    SR_VERIFICATION = "sr-verification"


RSA_PROFILES = frozenset(Profile) - {Profile.NONE}
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."

SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E
VALUE_TYPE, CONCEPT_NAME, CONTENT_SEQUENCE = 0x0040A040, 0x0040A043, 0x0040A730
VERIFICATION_FLAG, VERIFYING_OBSERVERS = 0x0040A493, 0x0040A073

GENERAL_EQUIPMENT = frozenset({
    0x00080070, 0x00080080, 0x00080081, 0x00081010, 0x00081040, 0x00081090, 0x00181000,
    0x00181002, 0x00181008, 0x00181020, 0x00181050, 0x00181200, 0x00181201, 0x00280120,
})  # fmt: skip
GENERAL_IMAGE = frozenset({
    0x00080008, 0x00080022, 0x00080023, 0x0008002A, 0x00080032, 0x00080033, 0x00082111,
    0x00082112, 0x00089215, 0x00200012, 0x00200013, 0x00200020, 0x00201002, 0x00204000,
    0x00280300, 0x00280301, 0x00282110, 0x00282112, 0x00282114, 0x00880200, 0x20500020,
})  # fmt: skip
IMAGE_PIXEL = frozenset({
    0x00280002, 0x00280004, 0x00280006, 0x00280010, 0x00280011, 0x00280034, 0x00280100,
    0x00280101, 0x00280102, 0x00280103, 0x00280106, 0x00280107, 0x00281101, 0x00281102,
    0x00281103, 0x00281201, 0x00281202, 0x00281203, 0x00287FE0, 0x7FE00001, 0x7FE00002,
    0x7FE00010,
})  # fmt: skip
SR_DOCUMENT_GENERAL = frozenset({
    0x00080023, 0x00080033, 0x00081111, 0x00200013, 0x0040A073, 0x0040A078, 0x0040A07A,
    0x0040A07C, 0x0040A360, 0x0040A370, 0x0040A372, 0x0040A375, 0x0040A385, 0x0040A491,
    0x0040A492, 0x0040A493, 0x0040A525,
})  # fmt: skip
SR_DOCUMENT_CONTENT = frozenset({
    0x0040A032, 0x0040A040, 0x0040A043, 0x0040A050, 0x0040A171, 0x0040A504, 0x0040A730,
})  # fmt: skip
OTHER_CONTENT = frozenset({
    0x00280008, 0x00280009, 0x00700001, 0x0040B020, 0x54000100, 0x52009229, 0x52009230,
})  # fmt: skip
CONTENT_MODULES = GENERAL_EQUIPMENT | GENERAL_IMAGE | IMAGE_PIXEL | SR_DOCUMENT_GENERAL
CONTENT_MODULES |= SR_DOCUMENT_CONTENT | OTHER_CONTENT

_ALWAYS = {
    Profile.CREATOR: frozenset({SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_UID, SERIES_UID}),
    Profile.AUTHORIZATION: frozenset({SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_UID, SERIES_UID}),
    Profile.SR: frozenset({SOP_CLASS_UID, STUDY_UID, SERIES_UID}),
    Profile.SR_VERIFICATION: frozenset(
        {
            SOP_CLASS_UID,
            STUDY_UID,
            SERIES_UID,
            SOP_INSTANCE_UID,
            VERIFICATION_FLAG,
            VERIFYING_OBSERVERS,
        }
    ),
}
_IF_PRESENT = {
    Profile.CREATOR: CONTENT_MODULES | {0x00080012, 0x00080013},
    Profile.AUTHORIZATION: CONTENT_MODULES,
    Profile.SR: GENERAL_EQUIPMENT
    | SR_DOCUMENT_CONTENT
    | {0x0040A375, 0x0040A385, 0x0040A360, 0x0040A032},
}
_IF_PRESENT[Profile.SR_VERIFICATION] = _IF_PRESENT[Profile.SR]


def is_overlay_or_curve(tag: int) -> bool:
    """Overlay Plane (60xx) and retired Curve (50xx) groups, C.2 and C.3."""
    group = tag >> 16
    return group % 2 == 0 and (0x6000 <= group <= 0x601E or 0x5000 <= group <= 0x501E)


@dataclass(frozen=True, slots=True)
class LevelFacts:
    """What a profile check needs to know about the data set a signature sits in."""

    present: frozenset[int]
    top_level: bool
    sop_class_uid: str
    verification_flag: str | None
    verifying_observers: int


def is_sr(facts: LevelFacts) -> bool:
    return facts.sop_class_uid.startswith(SR_CLASS_PREFIX)


def required_tags(profile: Profile, present: Collection[int]) -> frozenset[int]:
    """Tags the profile requires to be signed, given the tags present at the level."""
    if profile in (Profile.NONE, Profile.BASE):
        return frozenset()
    wanted = set(_ALWAYS[profile])
    extra = _IF_PRESENT[profile]
    overlays = profile in (Profile.CREATOR, Profile.AUTHORIZATION)
    wanted.update(t for t in present if t in extra or (overlays and is_overlay_or_curve(t)))
    return frozenset(wanted)


def signing_problems(profile: Profile, facts: LevelFacts) -> list[str]:
    """Why an object cannot be signed under ``profile`` (empty when it can)."""
    problems: list[str] = []
    missing = _ALWAYS.get(profile, frozenset()) - facts.present
    if missing:
        problems.append("required attributes are absent: " + format_tags(sorted(missing)))
    if profile in (Profile.SR, Profile.SR_VERIFICATION):
        if not is_sr(facts):
            problems.append(f"the {profile} profile applies to SR and KOS documents only")
        elif not {VALUE_TYPE, CONCEPT_NAME, CONTENT_SEQUENCE} <= facts.present:
            problems.append("not an SR document (no Value Type, Concept Name or Content)")
        if not facts.top_level:
            problems.append(f"the {profile} profile signs the main data set only")
        if facts.verifying_observers > 1:
            problems.append("the SR profile covers at most one Verifying Observer (C.4)")
    if profile is Profile.SR_VERIFICATION and facts.verification_flag != "VERIFIED":
        problems.append("Verification Flag is not VERIFIED")
    return problems


def profile_problems(
    profile: Profile,
    facts: LevelFacts,
    *,
    signed: Collection[int],
    algorithm: str,
    is_rsa: bool,
    purpose_code: str | None,
) -> list[str]:
    """Why an existing signature does not satisfy ``profile`` (empty when it does)."""
    problems = signing_problems(profile, facts)
    if profile is Profile.NONE:
        return problems
    if not is_rsa:
        problems.append(f"the {profile} profile needs an RSA signature")
    if algorithm not in MAC_ALGORITHMS:
        problems.append(f"MAC Algorithm {algorithm} is not allowed")
    unsigned = sorted(required_tags(profile, facts.present) - set(signed))
    if unsigned:
        problems.append("not signed: " + format_tags(unsigned))
    if profile in (Profile.SR, Profile.SR_VERIFICATION) and purpose_code is None:
        problems.append("no Digital Signature Purpose Code Sequence (C.4)")
    if profile is Profile.SR_VERIFICATION and purpose_code != "5":
        problems.append("purpose is not 5 (Verification Signature)")
    return problems


def format_tags(tags: Collection[int]) -> str:
    return ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in tags)
