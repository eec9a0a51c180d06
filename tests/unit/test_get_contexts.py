"""The C-GET SCU's storage contexts: one per transfer syntax, within 128 (PS3.8 9.3.2.2)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
)

from node.errors import OperationFailed
from node.net.contexts import STORAGE_TRANSFER_SYNTAXES
from node.scu.retrieve import broad_storage_classes, get_contexts


def by_class(classes: list[str]) -> dict[str, list[list[str]]]:
    contexts = get_contexts(classes)
    assert len(contexts) <= 128
    out: dict[str, list[list[str]]] = defaultdict(list)
    for cx in contexts[1:]:
        out[str(cx.abstract_syntax)].append([str(ts) for ts in cx.transfer_syntax])
    return out


def test_known_classes_get_one_context_per_syntax() -> None:
    found = by_class([CTImageStorage, MRImageStorage])
    for uid in (CTImageStorage, MRImageStorage):
        assert all(len(syntaxes) == 1 for syntaxes in found[uid])
        assert found[uid][0] == [ExplicitVRLittleEndian]  # first: what dcmqrscp sends in
        assert found[uid][1] == [ImplicitVRLittleEndian]
        assert found[uid][2] == [JPEGLosslessSV1]
        assert sorted(s for (s,) in found[uid]) == sorted(map(str, STORAGE_TRANSFER_SYNTAXES))


def test_broad_set_keeps_implicit_and_explicit_apart() -> None:
    found = by_class([])
    assert len(found) == len(broad_storage_classes()) == 63
    assert CTImageStorage in found
    for groups in found.values():
        assert groups[0][0] == ExplicitVRLittleEndian
        assert ImplicitVRLittleEndian not in groups[0]
        assert [ImplicitVRLittleEndian] in groups
        # every accepted syntax is proposed exactly once per class
        assert sorted(ts for g in groups for ts in g) == sorted(map(str, STORAGE_TRANSFER_SYNTAXES))


def test_many_classes_share_the_budget_in_rounds() -> None:
    classes = broad_storage_classes(limit=100)
    found = by_class(classes)
    assert sum(len(g) for g in found.values()) == 127
    with_implicit = [uid for uid, g in found.items() if [ImplicitVRLittleEndian] in g]
    assert with_implicit == classes[:27]  # the first classes get their own contexts first
    with pytest.raises(OperationFailed, match="use --method move"):
        get_contexts(broad_storage_classes(limit=128))
