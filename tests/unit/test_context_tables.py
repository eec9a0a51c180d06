"""The node's own SOP class table agrees with pynetdicom's, which the SCP contexts came from."""

from __future__ import annotations

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    Verification,
)

from node.net.contexts import MPPS, STORAGE_SOP_CLASSES, VERIFICATION
from node.services.contexts import storage_contexts


def test_storage_classes_are_those_of_the_pinned_pynetdicom() -> None:
    theirs = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    assert [str(uid) for uid in STORAGE_SOP_CLASSES] == theirs


def test_named_classes_match_pynetdicom() -> None:
    assert Verification == VERIFICATION
    assert ModalityPerformedProcedureStep == MPPS


def test_every_storage_context_offers_both_roles() -> None:
    contexts = storage_contexts()
    assert len(contexts) == len(STORAGE_SOP_CLASSES)
    assert all(cx.scu_role and cx.scp_role for cx in contexts)
