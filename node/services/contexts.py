"""The presentation contexts the node accepts: one table, also used for the README's
conformance statement (``scripts/conformance.py``), so the two cannot disagree."""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG2MPML,
    MPEG4HP41,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

# JPEG Lossless, Non-Hierarchical (Process 14), PS3.5 A.4.1, not in pydicom's names.
JPEG_LOSSLESS_P14 = UID("1.2.840.10008.1.2.4.57")

# Accepted for storage, in the order we prefer when a peer offers several in one context.
# Objects are stored in the syntax they arrive in; nothing is transcoded.
STORAGE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEG_LOSSLESS_P14,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
    MPEG2MPML,
    MPEG4HP41,
)

VERIFICATION_TRANSFER_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def mpps_context() -> PresentationContext:
    """Modality Performed Procedure Step SOP Class (PS3.4 F.7), SCP role."""
    return build_context(ModalityPerformedProcedureStep, list(VERIFICATION_TRANSFER_SYNTAXES))


def storage_sop_classes() -> list[UID]:
    """Every storage SOP class pynetdicom knows (PS3.4 Annex B)."""
    return [UID(str(cx.abstract_syntax)) for cx in AllStoragePresentationContexts]


def verification_context() -> PresentationContext:
    return build_context(Verification, list(VERIFICATION_TRANSFER_SYNTAXES))


def storage_contexts() -> list[PresentationContext]:
    """The Storage SCP contexts: each storage SOP class with every accepted syntax.

    Both roles are accepted when a requestor proposes them (PS3.7 D.3.3.4): a C-GET
    requestor proposes the SCP role so that we send the C-STORE sub-operations on its
    association (PS3.4 C.4.3). Without a role proposal the default roles apply.
    """
    syntaxes: list[str | UID] = list(STORAGE_TRANSFER_SYNTAXES)
    contexts = [build_context(uid, syntaxes) for uid in storage_sop_classes()]
    for context in contexts:
        context.scu_role = True
        context.scp_role = True
    return contexts


# Query/Retrieve SOP classes of the Q/R SCP (PS3.4 C.6.1.3, C.6.2.3), by DIMSE service.
QR_FIND_SOP_CLASSES: tuple[UID, ...] = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
QR_MOVE_SOP_CLASSES: tuple[UID, ...] = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
QR_GET_SOP_CLASSES: tuple[UID, ...] = (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
QR_SOP_CLASSES = (*QR_FIND_SOP_CLASSES, *QR_MOVE_SOP_CLASSES, *QR_GET_SOP_CLASSES)


def query_retrieve_contexts() -> list[PresentationContext]:
    """The Q/R SCP contexts: Patient Root and Study Root FIND, MOVE and GET."""
    return [build_context(uid, list(VERIFICATION_TRANSFER_SYNTAXES)) for uid in QR_SOP_CLASSES]
