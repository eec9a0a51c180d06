"""The node's presentation-context tables (:mod:`node.net.contexts`) as pynetdicom contexts.

PS3.7 D.3.3.2 (presentation contexts) and D.3.3.4 (role selection); the tables themselves
are plain UIDs one layer down, shared with the fast path and the SCUs.
"""

from __future__ import annotations

from pynetdicom.presentation import PresentationContext, build_context

from node.net.contexts import (
    MPPS,
    QR_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    VERIFICATION_TRANSFER_SYNTAXES,
    storage_sop_classes,
)


def mpps_context() -> PresentationContext:
    """Modality Performed Procedure Step SOP Class (PS3.4 F.7), SCP role."""
    return build_context(MPPS, list(VERIFICATION_TRANSFER_SYNTAXES))


def verification_context() -> PresentationContext:
    """Verification SOP Class (PS3.4 Annex A)."""
    return build_context(VERIFICATION, list(VERIFICATION_TRANSFER_SYNTAXES))


def storage_contexts() -> list[PresentationContext]:
    """The Storage SCP contexts: each storage SOP class with every accepted syntax.

    Both roles are accepted when a requestor proposes them (PS3.7 D.3.3.4): a C-GET
    requestor proposes the SCP role so that we send the C-STORE sub-operations on its
    association (PS3.4 C.4.3). Without a role proposal the default roles apply.
    """
    syntaxes: list[str] = [str(ts) for ts in STORAGE_TRANSFER_SYNTAXES]
    contexts = [build_context(uid, syntaxes) for uid in storage_sop_classes()]
    for context in contexts:
        context.scu_role = True
        context.scp_role = True
    return contexts


def query_retrieve_contexts() -> list[PresentationContext]:
    """The Q/R SCP contexts: Patient Root and Study Root FIND, MOVE and GET."""
    return [build_context(uid, list(VERIFICATION_TRANSFER_SYNTAXES)) for uid in QR_SOP_CLASSES]
