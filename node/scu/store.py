"""Send archived instances by C-STORE exactly as stored (PS3.4 Annex B, SCU role).

One piece of code for every outbound C-STORE: transfers to partners, C-MOVE
sub-operations and C-GET sub-operations of the Q/R SCP.

Negotiation (PS3.8 9.3.2.2): each SOP class is proposed once per transfer syntax its
instances are stored in, with that syntax alone, so the peer cannot pick another. A
second, *fallback* context per SOP class proposes Explicit then Implicit VR Little
Endian. The fallback is used only when the peer refused the stored syntax and the
instance is stored uncompressed (Explicit, Implicit or Deflated Explicit VR Little
Endian): re-encoding between these changes element headers, never a value, so every
MAC and digital signature of the object (computed over Explicit VR Little Endian,
PS3.15 C.1) stays valid. Compressed pixel data are never decompressed: an instance
whose compressed syntax the peer refuses is not sent (:data:`NOT_NEGOTIATED`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import _config
from pynetdicom.presentation import PresentationContext, build_context

from node.errors import OperationFailed
from node.services.status import Status

FALLBACK_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
LOSSLESS_REENCODABLE = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2)

# Returned instead of a DIMSE status when no accepted context can carry the instance.
NOT_NEGOTIATED = -1


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An archived Part 10 file to send, with the identifiers the index holds."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def contexts_for(
    items: Iterable[Outgoing], also: Iterable[tuple[str, str]] = ()
) -> list[PresentationContext]:
    """The presentation contexts to propose for sending ``items`` on one association.

    ``also``: more (SOP class, transfer syntax) pairs to propose, for objects that do not
    exist yet when the association opens (a manifest built after the instances went).
    """
    exact: dict[tuple[str, str], None] = {}
    fallback: dict[str, None] = {}
    pairs = [(i.sop_class_uid, i.transfer_syntax_uid) for i in items]
    for sop_class, syntax in [*pairs, *also]:
        exact[(sop_class, syntax)] = None
        if syntax in LOSSLESS_REENCODABLE:
            fallback[sop_class] = None
    contexts = [build_context(sop, [ts]) for sop, ts in exact]
    contexts += [build_context(sop, list(FALLBACK_SYNTAXES)) for sop in fallback]
    if len(contexts) > MAX_CONTEXTS:
        raise OperationFailed(
            f"{len(exact)} SOP class and transfer syntax pairs need {len(contexts)} "
            f"presentation contexts; one association allows {MAX_CONTEXTS}"
        )
    return contexts


def accepted_pairs(assoc: Any) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs the peer accepted on ``assoc``."""
    return {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}


def send_instance(
    assoc: Any,
    item: Outgoing,
    *,
    accepted: set[tuple[str, str]] | None = None,
    originator: tuple[str, int] | None = None,
) -> int:
    """C-STORE one archived file; the peer's status, or :data:`NOT_NEGOTIATED`.

    Raises :class:`OperationFailed` when the association is lost or the peer sends no
    response: the caller must then treat the instance as not sent.
    ``originator`` is the Move Originator AE title and Message ID of a C-MOVE.
    """
    accepted = accepted_pairs(assoc) if accepted is None else accepted
    dataset: Any
    if (item.sop_class_uid, item.transfer_syntax_uid) in accepted:
        # The stored bytes go on the wire untouched (pynetdicom reads from the offset).
        dataset = item.path
        if not _config.STORE_SEND_CHUNKED_DATASET:
            raise RuntimeError("configure_libraries() must enable STORE_SEND_CHUNKED_DATASET")
    elif item.transfer_syntax_uid in LOSSLESS_REENCODABLE and any(
        (item.sop_class_uid, str(ts)) in accepted for ts in FALLBACK_SYNTAXES
    ):
        dataset = dcmread(item.path)  # pynetdicom re-encodes headers to the accepted syntax
    else:
        return NOT_NEGOTIATED
    kwargs: dict[str, Any] = {}
    if originator is not None:
        kwargs = {"originator_aet": originator[0], "originator_id": originator[1]}
    try:
        response = assoc.send_c_store(dataset, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise OperationFailed(f"C-STORE of {item.sop_instance_uid} failed: {exc}") from exc
    status = getattr(response, "Status", None)
    if status is None:
        raise OperationFailed(
            f"C-STORE of {item.sop_instance_uid}: no response (association aborted or timed out)"
        )
    return int(status)


# Outcomes of an outbound C-STORE, by response status (PS3.4 B.2.3, PS3.7 C).
ACKNOWLEDGED = "acknowledged"  # Success or Warning: the partner keeps the instance
REFUSED = "refused"  # a failure that sending again will not change
BUSY = "busy"  # Out of Resources or Resource Limitation: try again later

WARNING_STATUSES = range(0xB000, 0xC000)  # Storage warnings B000, B006, B007, ...
OUT_OF_RESOURCES_STATUSES = range(0xA700, 0xA800)  # Storage "Refused: Out of Resources"
RESOURCE_LIMITATION = 0x0213  # PS3.7 C.5.19, a general failure that is temporary
ATTRIBUTE_LIST_WARNING = 0x0001  # PS3.7 C.4.1: "Warning" on some implementations


def classify(status: int) -> str:
    """Whether the peer kept the instance, refused it for good, or was short of resources."""
    if status in (Status.SUCCESS, ATTRIBUTE_LIST_WARNING) or status in WARNING_STATUSES:
        return ACKNOWLEDGED
    if status in OUT_OF_RESOURCES_STATUSES or status == RESOURCE_LIMITATION:
        return BUSY
    return REFUSED
