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

Two kinds of association carry these requests; the choices above are the same for
both. Transfers to partners without TLS use our own requestor
(:class:`node.net.requestor.Association`): the stored data set goes out as views into
the file's bytes, the fallback as headers re-encoded by pydicom (values copied as they
are). TLS partners, C-MOVE sub-associations and C-GET use pynetdicom, which is handed
the file (sent from the data set's offset) or, for the fallback, the pydicom data set.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.presentation import PresentationContext, build_context

from node.errors import NodeError, OperationFailed
from node.net.pdu import PduError
from node.net.requestor import Association
from node.pynetdicom_compat import sends_chunked_datasets
from node.signatures.encoding import file_meta

log = logging.getLogger("node.scu")

FALLBACK_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
LOSSLESS_REENCODABLE = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2)

# Returned instead of a DIMSE status when no accepted context can carry the instance.
NOT_NEGOTIATED = -1

# A presentation context to propose: abstract syntax and its transfer syntaxes.
Proposal = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An archived Part 10 file to send, with the identifiers the index holds."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def proposals_for(
    items: Iterable[Outgoing], also: Iterable[tuple[str, str]] = ()
) -> list[Proposal]:
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
    proposals: list[Proposal] = [(sop, (ts,)) for sop, ts in exact]
    proposals += [(sop, tuple(str(ts) for ts in FALLBACK_SYNTAXES)) for sop in fallback]
    if len(proposals) > MAX_CONTEXTS:
        raise OperationFailed(
            f"{len(exact)} SOP class and transfer syntax pairs need {len(proposals)} "
            f"presentation contexts; one association allows {MAX_CONTEXTS}"
        )
    return proposals


def contexts_for(
    items: Iterable[Outgoing], also: Iterable[tuple[str, str]] = ()
) -> list[PresentationContext]:
    """:func:`proposals_for` as pynetdicom presentation contexts."""
    return [build_context(sop, list(syntaxes)) for sop, syntaxes in proposals_for(items, also)]


def accepted_pairs(assoc: Association | PynetdicomAssociation) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs the peer accepted on ``assoc``."""
    if isinstance(assoc, Association):
        return set(assoc.accepted)
    return {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}


def syntax_to_send(item: Outgoing, accepted: set[tuple[str, str]]) -> str | None:
    """The transfer syntax ``item`` goes out in, or None when no accepted context fits.

    The stored syntax when accepted; otherwise a fallback syntax, only for an instance
    stored uncompressed (its values can be copied unchanged into the other encoding).
    """
    if (item.sop_class_uid, item.transfer_syntax_uid) in accepted:
        return item.transfer_syntax_uid
    if item.transfer_syntax_uid in LOSSLESS_REENCODABLE:
        for syntax in FALLBACK_SYNTAXES:
            if (item.sop_class_uid, str(syntax)) in accepted:
                return str(syntax)
    return None


def send_instance(
    assoc: Association | PynetdicomAssociation,
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
    syntax = syntax_to_send(item, accepted)
    if syntax is None:
        return NOT_NEGOTIATED
    if isinstance(assoc, Association):
        return _send_lean(assoc, item, syntax, originator)
    return _send_pynetdicom(assoc, item, syntax, originator)


def _send_lean(
    assoc: Association, item: Outgoing, syntax: str, originator: tuple[str, int] | None
) -> int:
    context_id = assoc.accepted.get((item.sop_class_uid, syntax))
    if context_id is None:  # ``accepted`` named a pair this association does not have
        return NOT_NEGOTIATED
    try:
        if syntax == item.transfer_syntax_uid:
            data: bytes | memoryview = _stored_dataset(item)
        else:
            data = _reencoded(item, syntax)
    except (OSError, NodeError, ValueError, struct.error) as exc:
        # pydicom raises many kinds for a damaged file; the attempt fails, as a lost
        # association would, rather than reporting the instance refused by the partner.
        raise OperationFailed(f"C-STORE of {item.sop_instance_uid}: cannot read it: {exc}") from exc
    try:
        response = assoc.store(
            context_id,
            item.sop_class_uid,
            item.sop_instance_uid,
            data,
            originator=originator,
        )
    except TimeoutError as exc:
        raise OperationFailed(
            f"C-STORE of {item.sop_instance_uid}: no response in time (association aborted)"
        ) from exc
    except (OSError, PduError) as exc:
        raise OperationFailed(f"C-STORE of {item.sop_instance_uid} failed: {exc}") from exc
    if response.error_comment:
        log.info(
            "C-STORE of %s: status 0x%04X, %s",
            item.sop_instance_uid,
            response.status,
            response.error_comment,
        )
    return response.status


def _stored_dataset(item: Outgoing) -> memoryview:
    """The data set exactly as stored: the file's bytes after preamble and File Meta."""
    data = item.path.read_bytes()
    if data[128:132] != b"DICM":
        raise OperationFailed(f"{item.path} is not a DICOM Part 10 file")
    stored_syntax, start = file_meta(data, 132)
    if stored_syntax != item.transfer_syntax_uid:
        raise OperationFailed(
            f"{item.path} is stored in {stored_syntax}, the index says {item.transfer_syntax_uid}"
        )
    return memoryview(data)[start:]


def _reencoded(item: Outgoing, syntax: str) -> bytes:
    """The data set in ``syntax`` (Explicit or Implicit VR Little Endian).

    pydicom writes the values it has not decoded as the raw bytes it read; only the
    element headers change (and a deflated data set is inflated).
    """
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(fp, dcmread(item.path))
    return fp.getvalue()


def _send_pynetdicom(
    assoc: PynetdicomAssociation, item: Outgoing, syntax: str, originator: tuple[str, int] | None
) -> int:
    dataset: Path | Dataset
    if syntax == item.transfer_syntax_uid:
        # The stored bytes go on the wire untouched (pynetdicom reads from the offset).
        dataset = item.path
        if not sends_chunked_datasets():
            raise RuntimeError("configure_libraries() must enable STORE_SEND_CHUNKED_DATASET")
    else:
        dataset = dcmread(item.path)  # pynetdicom re-encodes headers to the accepted syntax
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


class StoreReply(enum.Enum):
    """What a peer's C-STORE response says about the instance (PS3.7 C.1, PS3.4 B.2.3)."""

    SUCCESS = "success"
    WARNING = "warning"  # stored, with something the peer changed or noted
    FAILURE = "failure"  # not stored (or no answer the standard defines)


# Warning codes (PS3.7 C.1, C.4.2, C.4.3; PS3.4 Table B.2-1): 0001 on some
# implementations, every Bxxx (B000 coercion, B006 elements discarded, B007 data set
# does not match SOP Class), and the general Attribute List Error (0107) and Attribute
# Value Out of Range (0116).
WARNING_STATUSES = range(0xB000, 0xC000)
GENERAL_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})


def reply_category(status: int) -> StoreReply:
    """The one classification of a C-STORE response status, for every outbound C-STORE.

    Transfers count success and warning as acknowledged (:func:`classify`); the Q/R
    SCP counts them as completed and warning sub-operations (PS3.4 C.4.2.1.5,
    C.4.3.1.4). Anything else, Pending and Cancel included, is no answer a C-STORE may
    give and counts as a failure.
    """
    if status == 0x0000:
        return StoreReply.SUCCESS
    if status in WARNING_STATUSES or status in GENERAL_WARNINGS:
        return StoreReply.WARNING
    return StoreReply.FAILURE


# Outcomes of an outbound transfer C-STORE, by response status (PS3.4 B.2.3, PS3.7 C).
ACKNOWLEDGED = "acknowledged"  # Success or Warning: the partner keeps the instance
REFUSED = "refused"  # a failure that sending again will not change
BUSY = "busy"  # Out of Resources or Resource Limitation: try again later

OUT_OF_RESOURCES_STATUSES = range(0xA700, 0xA800)  # Storage "Refused: Out of Resources"
RESOURCE_LIMITATION = 0x0213  # PS3.7 C.5.19, a general failure that is temporary


def classify(status: int) -> str:
    """Whether the peer kept the instance, refused it for good, or was short of resources."""
    if reply_category(status) is not StoreReply.FAILURE:
        return ACKNOWLEDGED
    if status in OUT_OF_RESOURCES_STATUSES or status == RESOURCE_LIMITATION:
        return BUSY
    return REFUSED
