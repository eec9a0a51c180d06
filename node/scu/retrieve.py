"""Query/Retrieve SCU (PS3.4 Annex C): C-FIND, C-GET and C-MOVE, Study Root information model.

The network half of :mod:`node.retrieve.client`: opens associations, builds identifiers,
collects final statuses. It knows nothing of the archive; a C-GET hands each received
instance to a ``Receiver`` callback and answers the C-STORE sub-operation with the
status that callback returns (so Success goes out only after the archive has stored).

C-GET negotiation (PS3.4 C.4.3, PS3.7 D.3.3.4): the GET context plus, for every storage
SOP class we may receive, presentation contexts and an SCP/SCU Role Selection item with
the SCP role. An accepted context carries one transfer syntax, and a source sends an
object in a syntax we accepted for its class: to receive every object byte for byte,
each syntax needs a context of its own. So each class gets a first context led by
Explicit VR Little Endian (a source that takes the first context of a class for every
object, as DCMTK ``dcmqrscp`` does, keeps sending Explicit VR), then one context per
other syntax, most common first (Implicit VR, JPEG Lossless, JPEG Baseline...), as far
as the budget goes: an association carries at most 128 presentation contexts (PS3.8
9.3.2.2), one of them the GET context. The syntaxes that get no context of their own
stay listed in the class's first context. The budget is shared in rounds, so every
class gets its Implicit VR context before any gets a second compressed one.

When the SOP classes are not known, the classes known so far and the most common ones
are proposed (:func:`broad_storage_classes`): at most 63, so that each still gets its
own Implicit VR context.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    code_to_category,
)

from node.config import NodeConfig, RemoteAE
from node.errors import OperationFailed
from node.net.contexts import STORAGE_TRANSFER_SYNTAXES, storage_sop_classes
from node.net.status import StorageStatus
from node.net.statusmap import status_dataset
from node.scu.associate import AssociationFailed, associate
from node.scu.request import (
    CANCEL,
    FAILURE,
    PENDING,
    SUCCESS,
    FinalStatus,
    RetrieveRequest,
)

log = logging.getLogger("node.retrieve")

MAX_CONTEXTS = 128
STORAGE_BUDGET = MAX_CONTEXTS - 1  # one context is the GET context
# The syntax that leads each class's first context, and the others in the order they
# get contexts of their own: the most common stored syntaxes first.
FIRST_SYNTAX = ExplicitVRLittleEndian
_OWN_CONTEXT_ORDER = (
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGBaseline8Bit,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    JPEG2000,
    JPEGExtended12Bit,
    DeflatedExplicitVRLittleEndian,
)
OWN_CONTEXT_ORDER: tuple[UID, ...] = tuple(
    dict.fromkeys(
        [*_OWN_CONTEXT_ORDER, *(ts for ts in STORAGE_TRANSFER_SYNTAXES if ts != FIRST_SYNTAX)]
    )
)
# The broad set is capped so that each of its classes gets an Implicit VR context too.
BROAD_LIMIT = STORAGE_BUDGET // 2

# Proposed first when the SOP classes are unknown: the classes a hospital archive holds
# most (images of every modality, presentation states, SR and KOS, documents, RT,
# segmentations, waveforms). The rest of pynetdicom's storage classes fill up to 127.
COMMON_STORAGE = (
    "CTImageStorage", "EnhancedCTImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing", "BreastTomosynthesisImageStorage",
    "DigitalIntraOralXRayImageStorageForPresentation", "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage", "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage", "EnhancedPETImageStorage",
    "XRayAngiographicImageStorage", "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage", "XRay3DAngiographicImageStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "ColorSoftcopyPresentationStateStorage",
    "PseudoColorSoftcopyPresentationStateStorage", "BlendingSoftcopyPresentationStateStorage",
    "KeyObjectSelectionDocumentStorage", "BasicTextSRStorage", "EnhancedSRStorage",
    "ComprehensiveSRStorage", "Comprehensive3DSRStorage", "ExtensibleSRStorage",
    "XRayRadiationDoseSRStorage", "MammographyCADSRStorage", "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage", "RTImageStorage", "RTDoseStorage", "RTStructureSetStorage",
    "RTPlanStorage", "RTIonPlanStorage", "RTBeamsTreatmentRecordStorage",
    "SegmentationStorage", "SpatialRegistrationStorage", "RawDataStorage",
    "VLPhotographicImageStorage", "VLEndoscopicImageStorage", "VideoEndoscopicImageStorage",
    "VLWholeSlideMicroscopyImageStorage", "OphthalmicPhotography8BitImageStorage",
    "OphthalmicTomographyImageStorage", "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage", "ParametricMapStorage",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Arrival:
    """One instance received in a C-GET sub-operation, exactly as it came."""

    sop_class_uid: str
    sop_instance_uid: str
    context_sop_class_uid: str  # the abstract syntax of the context it came on
    transfer_syntax_uid: str
    dataset: bytes
    association_id: str
    peer_address: str


# Stores an arrival; returns the status to answer the C-STORE with, and an Error Comment.
Receiver = Callable[[Arrival], tuple[StorageStatus, str | None]]


def broad_storage_classes(first: Sequence[str] = (), limit: int = BROAD_LIMIT) -> list[str]:
    """The storage SOP classes proposed when the classes are not all known.

    ``first`` (classes known to be needed) lead, then the common ones, then the rest of
    pynetdicom's storage classes, up to ``limit`` (never fewer than ``first``).
    """
    known = [str(uid) for uid in storage_sop_classes()]
    by_keyword = {UID(uid).keyword: uid for uid in known}
    common = [by_keyword[k] for k in COMMON_STORAGE if k in by_keyword]
    wanted = list(dict.fromkeys(first))
    return list(dict.fromkeys([*wanted, *common, *known]))[: max(limit, len(wanted))]


def get_contexts(sop_classes: Sequence[str]) -> list[PresentationContext]:
    """The GET context, then storage contexts for ``sop_classes`` (broad set when empty).

    Per class: the first context (Explicit VR LE and the syntaxes without a context of
    their own), then one context per syntax in :data:`OWN_CONTEXT_ORDER`, shared out in
    rounds within the budget (module docstring).
    """
    classes = list(dict.fromkeys(sop_classes)) or broad_storage_classes()
    if len(classes) > STORAGE_BUDGET:
        raise OperationFailed(
            f"{len(classes)} SOP classes need more than the {STORAGE_BUDGET} storage "
            "presentation contexts one C-GET association can carry; use --method move"
        )
    own = dict.fromkeys(classes, 0)  # per class: how many syntaxes have their own context
    spare = STORAGE_BUDGET - len(classes)
    for _ in OWN_CONTEXT_ORDER:
        for uid in classes:
            if spare:
                own[uid] += 1
                spare -= 1
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
    for uid, count in own.items():
        separate = OWN_CONTEXT_ORDER[:count]
        shared: list[str | UID] = [ts for ts in STORAGE_TRANSFER_SYNTAXES if ts not in separate]
        shared.sort(key=lambda ts: ts != FIRST_SYNTAX)  # stable: Explicit VR LE leads
        contexts.append(build_context(uid, shared))
        contexts.extend(build_context(uid, [ts]) for ts in separate)
    return contexts


def retrieve_identifier(request: RetrieveRequest) -> Dataset:
    """IMAGE level with a list of SOP Instance UIDs, or SERIES level for a whole series.

    Baseline hierarchical retrieve (PS3.4 C.4.2.2.1, C.4.3.2.1): single-valued Study and
    Series Instance UIDs above the level, a list of UIDs at it.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE" if request.sop_instance_uids else "SERIES"
    ds.StudyInstanceUID = request.study_uid
    ds.SeriesInstanceUID = request.series_uid
    if request.sop_instance_uids:
        uids = list(request.sop_instance_uids)
        ds.SOPInstanceUID = uids if len(uids) > 1 else uids[0]
    return ds


@dataclass(frozen=True, slots=True)
class FindResult:
    """SOP Instance UID to SOP Class UID for one request, or None and why not."""

    matches: dict[str, str] | None
    problem: str = ""


def find_images(
    config: NodeConfig, source: RemoteAE, requests: Sequence[RetrieveRequest]
) -> list[FindResult]:
    """C-FIND at IMAGE level for each request, on one association.

    SOP Class UID is an optional key (PS3.4 C.6.2.1.2): a source may leave it empty,
    and the value is then ``""``. A source that does not support C-FIND, or a failed
    query, gives ``matches=None``; an association rejection raises OperationFailed.
    """
    query = StudyRootQueryRetrieveInformationModelFind
    with associate(config, source, [build_context(query)]) as assoc:
        if not _accepted(assoc, query):
            return [FindResult(None, f"{source.name} does not accept Study Root C-FIND")] * len(
                requests
            )
        results = []
        for request in requests:
            matches, final = _find(assoc, image_query(request))
            if final.category != SUCCESS:
                results.append(FindResult(None, f"C-FIND: {final.summary()}"))
                continue
            found: dict[str, str] = {}
            for match in matches:
                uid = str(match.get("SOPInstanceUID", "") or "")
                if uid:
                    found[uid] = str(match.get("SOPClassUID", "") or "")
            results.append(FindResult(found))
        return results


def image_query(request: RetrieveRequest) -> Dataset:
    """IMAGE-level C-FIND identifier asking for the SOP Class UID of the objects."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = request.study_uid
    ds.SeriesInstanceUID = request.series_uid
    uids = list(request.sop_instance_uids)
    # List of UID matching (PS3.4 C.2.2.2.2); empty means every object of the series.
    ds.SOPInstanceUID = uids if len(uids) > 1 else (uids[0] if uids else "")
    ds.SOPClassUID = ""
    return ds


def find_series(
    config: NodeConfig, source: RemoteAE, study_uid: str, modality: str | None = None
) -> list[tuple[str, str]]:
    """(Series Instance UID, Modality) of a study's series, by C-FIND at SERIES level."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = modality or ""
    contexts = [build_context(StudyRootQueryRetrieveInformationModelFind)]
    with associate(config, source, contexts) as assoc:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelFind):
            raise OperationFailed(f"{source.name} does not accept Study Root C-FIND")
        matches, final = _find(assoc, ds)
    if final.category != SUCCESS:
        raise OperationFailed(f"C-FIND of the series of {study_uid}: {final.summary()}")
    found = []
    for match in matches:
        series_uid = str(match.get("SeriesInstanceUID", "") or "")
        found_modality = str(match.get("Modality", "") or "")
        if series_uid and (not modality or found_modality == modality):
            found.append((series_uid, found_modality))
    return list(dict.fromkeys(found))


def _find(assoc: Association, identifier: Dataset) -> tuple[list[Dataset], FinalStatus]:
    matches = []
    final = _no_response()
    for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        if not status:
            continue  # no response: the generator ends, the final stays "no response"
        if code_to_category(int(status.Status)) == PENDING:
            if match is not None:
                matches.append(match)
        else:
            final = _final(status, match, QR_FIND_SERVICE_CLASS_STATUS)
    return matches, final


def get(
    config: NodeConfig,
    source: RemoteAE,
    requests: Sequence[RetrieveRequest],
    sop_classes: Sequence[str],
    receiver: Receiver,
) -> list[FinalStatus]:
    """One C-GET per request on one association; each instance goes to ``receiver``."""
    contexts = get_contexts(sop_classes)
    roles = [
        build_role(uid, scp_role=True)
        for uid in dict.fromkeys(str(cx.abstract_syntax) for cx in contexts[1:])
    ]
    association_id = uuid.uuid4().hex

    def on_store(event: Event) -> Dataset:
        request = event.request
        if not isinstance(request, C_STORE) or request.DataSet is None:
            # pynetdicom answers a failing handler with 0xC211 (Cannot Understand).
            raise TypeError("EVT_C_STORE without a C-STORE data set")
        arrival = Arrival(
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            context_sop_class_uid=str(event.context.abstract_syntax),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            dataset=request.DataSet.getvalue(),
            association_id=association_id,
            peer_address=str(event.assoc.acceptor.address),
        )
        try:
            status, comment = receiver(arrival)
        except Exception as exc:  # the sub-operation must get an answer, never a hang
            log.exception("storing %s from a C-GET failed", arrival.sop_instance_uid)
            status, comment = StorageStatus.FAILURE_PROCESSING, str(exc)
        return status_dataset(status, comment)

    handlers = [(evt.EVT_C_STORE, on_store)]
    query = StudyRootQueryRetrieveInformationModelGet
    with associate(config, source, contexts, ext_neg=roles, evt_handlers=handlers) as assoc:
        if not _accepted(assoc, query):
            raise OperationFailed(
                f"{source.name} does not accept Study Root C-GET; try --method move"
            )
        return _run(
            assoc,
            requests,
            lambda ds, msg_id: assoc.send_c_get(ds, query, msg_id=msg_id),
            QR_GET_SERVICE_CLASS_STATUS,
        )


def move(
    config: NodeConfig, source: RemoteAE, requests: Sequence[RetrieveRequest], destination: str
) -> list[FinalStatus]:
    """One C-MOVE per request on one association, to the AE title ``destination``."""
    query = StudyRootQueryRetrieveInformationModelMove
    with associate(config, source, [build_context(query)]) as assoc:
        if not _accepted(assoc, query):
            raise OperationFailed(f"{source.name} does not accept Study Root C-MOVE")
        return _run(
            assoc,
            requests,
            lambda ds, msg_id: assoc.send_c_move(ds, destination, query, msg_id=msg_id),
            QR_MOVE_SERVICE_CLASS_STATUS,
        )


def _run(
    assoc: Association,
    requests: Sequence[RetrieveRequest],
    send: Callable[[Dataset, int], Iterator[tuple[Dataset, Dataset | None]]],
    table: dict[int, tuple[str, str]],
) -> list[FinalStatus]:
    statuses = []
    for number, request in enumerate(requests, start=1):
        if not assoc.is_established:
            statuses.append(_no_response("the association was lost"))
            continue
        final = _no_response()
        for status, identifier in send(retrieve_identifier(request), number):
            # Pending responses carry running counts; the last response is the final one.
            if status and code_to_category(int(status.Status)) != PENDING:
                final = _final(status, identifier, table)
        statuses.append(final)
    return statuses


def _final(
    status: Dataset, identifier: Dataset | None, table: dict[int, tuple[str, str]]
) -> FinalStatus:
    code = int(status.Status)
    category = code_to_category(code)
    description = table.get(code, ("", ""))[1] or _DESCRIPTIONS.get(category, "unknown status")
    failed_uids: tuple[str, ...] = ()
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        items = value if isinstance(value, list | tuple) else str(value or "").split("\\")
        failed_uids = tuple(str(uid) for uid in items if str(uid))
    comment = status.get("ErrorComment")
    return FinalStatus(
        code=code,
        category=category,
        description=description,
        completed=_count(status, "NumberOfCompletedSuboperations"),
        failed=_count(status, "NumberOfFailedSuboperations"),
        warning=_count(status, "NumberOfWarningSuboperations"),
        remaining=_count(status, "NumberOfRemainingSuboperations"),
        failed_uids=failed_uids,
        error_comment=str(comment) if comment else None,
    )


# pynetdicom's tables name the service-specific codes only.
_DESCRIPTIONS = {SUCCESS: "complete", CANCEL: "cancelled", PENDING: "pending"}


def _count(status: Dataset, keyword: str) -> int | None:
    value = status.get(keyword)
    return int(value) if value is not None and value != "" else None


def _no_response(why: str = "no final response: association aborted or timed out") -> FinalStatus:
    return FinalStatus(code=None, category=FAILURE, description=why)


def _accepted(assoc: Association, abstract_syntax: str) -> bool:
    return any(str(cx.abstract_syntax) == abstract_syntax for cx in assoc.accepted_contexts)


def local_address(config: NodeConfig) -> tuple[str, int]:
    """Where our own storage SCP listens, as a client reaches it."""
    host = config.node.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, config.node.port


def is_serving(config: NodeConfig) -> bool:
    """True when our own node answers on its configured address (C-ECHO).

    A rejection also proves a DICOM listener is there. With TLS configured for incoming
    associations a plain C-ECHO cannot be made, so a TCP connection must do.
    """
    host, port = local_address(config)
    if not 0 < port < 65536:
        return False
    if config.tls is not None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=5):
            return True
        return False
    ourselves = RemoteAE(name="this node", ae_title=config.node.ae_title, host=host, port=port)
    try:
        with associate(config, ourselves) as assoc:  # proposes Verification
            assoc.send_c_echo()
    except AssociationFailed as exc:
        # An A-ASSOCIATE-RJ counts, even when pynetdicom then reports an abort.
        return exc.rejected
    return True
