"""Retrieve objects from a configured source by C-GET or C-MOVE (PS3.4 C.4.2, C.4.3).

PS3.17 X.4.3: a WADO reference gives the Study, Series and SOP Instance UIDs; the
Q/R SCP to ask (AE title, host, port) is configuration, never taken from the URL.

- **C-GET**: the instances come back on our association. The storage SOP classes must
  be negotiated up front, so they are learnt first: from the caller's hints, else by a
  C-FIND at IMAGE level (SOP Class UID is an optional key, so it may be missing), else a
  broad set of common storage classes is proposed; each class with one context per
  transfer syntax as far as 128 contexts allow (:func:`node.scu.retrieve.get_contexts`).
  Each arrival is received as the Storage SCP receives a C-STORE
  (:func:`node.services.receive.receive_instance`: the same checks, custody records and
  statuses), and its C-STORE answered Success only after the archive has stored it.
- **C-MOVE**: the source opens its own association to our storage SCP, so the node must
  be serving (checked by C-ECHO first). Arrivals are read back from the audit log that
  the serving node writes, and each requested object is looked up in the index.

Either way every requested object gets a result (stored, duplicate, failed, missing), a
``retrieved`` or ``retrieve-failed`` custody record with source, method and WADO URL,
and, when a signed KOS of the archive references it, a MAC check on arrival.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from node.config import NodeConfig, RemoteAE, Role
from node.errors import OperationFailed, UsageError
from node.net.status import StorageStatus
from node.retrieve.kos_check import KosChecker
from node.retrieve.result import ObjectResult, Outcome, RequestResult, RetrieveResult
from node.scu import retrieve as scu
from node.scu.request import CANCEL, FAILURE, FinalStatus, RetrieveRequest
from node.services.receive import StoreRequest, receive_instance
from node.signatures import load_trust
from node.storage import audit
from node.storage.archive import Archive, Custody, StoreResult
from node.storage.audit import AuditEvent
from node.storage.index import find_instance
from node.storage.uids import is_valid_uid

__all__ = ["RetrieveRequest", "RetrieveResult", "find_series", "retrieve"]

log = logging.getLogger("node.retrieve")

METHODS = ("get", "move")
Progress = Callable[[ObjectResult], None]


def find_series(
    config: NodeConfig, source: RemoteAE, study_uid: str, modality: str | None = None
) -> list[tuple[str, str]]:
    """(Series Instance UID, Modality) of each series of a study at ``source`` (C-FIND)."""
    if not is_valid_uid(study_uid):
        raise UsageError(f"not a valid Study Instance UID: {study_uid!r}")
    return scu.find_series(config, source, study_uid, modality)


@dataclass(frozen=True, slots=True)
class _Arrived:
    """An instance that arrived during this retrieve, as the archive took it."""

    study_uid: str
    series_uid: str
    outcome: Outcome
    path: Path | None
    conflict: bool


def retrieve(
    config: NodeConfig,
    archive: Archive,
    source: RemoteAE,
    requests: Sequence[RetrieveRequest],
    method: str = "get",
    progress: Progress | None = None,
) -> RetrieveResult:
    """Retrieve ``requests`` from ``source`` by C-GET or C-MOVE into ``archive``.

    Raises UsageError for bad requests and OperationFailed when the source cannot be
    used at all (refused association, unsupported service, node not serving for a
    C-MOVE); everything else is in the result, whose ``ok`` is the verdict.
    """
    if method not in METHODS:
        raise UsageError(f"method must be get or move, not {method!r}")
    work = [chunk for request in requests for chunk in _checked(request).chunks()]
    if not work:
        raise UsageError("nothing to retrieve")
    retrieved = RetrieveResult()
    urls = {uid: r.url_for(uid) for r in work for uid in r.sop_instance_uids}
    if method == "get":
        found = _learn_for_get(config, source, work, retrieved)
        storage_classes = frozenset(found.classes or scu.broad_storage_classes())
        receiver = _Receiver(archive, source, urls, storage_classes)
        statuses = scu.get(config, source, work, found.classes, receiver)
        arrived, errors = receiver.arrived, receiver.errors
    else:
        _check_serving(config, source, retrieved)
        found = _enumerate_for_move(config, source, work, retrieved)
        head = audit.head_seq(archive.engine)
        statuses = scu.move(config, source, work, config.node.ae_title)
        arrived = _ours(_arrived_since(archive, head, {r.study_uid for r in work}), work, found)
        errors = {}
    checker = KosChecker(archive, load_trust(config.trust))
    results = _results(method, work, statuses, found.listed, arrived, errors, urls)
    for plain in results:
        result = plain
        if plain.path is not None:
            checks = checker.check(plain.study_uid, plain.sop_instance_uid, plain.path)
            result = replace(plain, kos_checks=checks)
        _record(archive, source, method, result)
        retrieved.objects.append(result)
        if progress is not None:
            progress(result)
    retrieved.requests.extend(
        RequestResult(request, method, status)
        for request, status in zip(work, statuses, strict=True)
    )
    return retrieved


def _checked(request: RetrieveRequest) -> RetrieveRequest:
    for name, uid in (("Study", request.study_uid), ("Series", request.series_uid)):
        if not is_valid_uid(uid):
            raise UsageError(f"not a valid {name} Instance UID: {uid!r}")
    for uid in (*request.sop_instance_uids, *request.sop_class_uids):
        if not is_valid_uid(uid):
            raise UsageError(f"not a valid UID: {uid!r}")
    return request


@dataclass
class _Found:
    """What C-FIND told us: SOP classes to negotiate, and the objects of each request."""

    classes: list[str]
    listed: list[list[str] | None]  # per request: SOP Instance UIDs the source listed


def _learn_for_get(
    config: NodeConfig, source: RemoteAE, work: list[RetrieveRequest], retrieved: RetrieveResult
) -> _Found:
    """SOP classes for the C-GET contexts: hints, else C-FIND, else a broad set (X.4.3).

    A request with hints and a list of objects needs no query; a whole series is always
    listed first so that each of its objects can be accounted for.
    """
    classes = [uid for r in work for uid in r.sop_class_uids]
    listed: list[list[str] | None] = [None] * len(work)
    asked = [i for i, r in enumerate(work) if not (r.sop_class_uids and r.sop_instance_uids)]
    known = True
    answers = scu.find_images(config, source, [work[i] for i in asked]) if asked else []
    for i, answer in zip(asked, answers, strict=True):
        request = work[i]
        if answer.matches is None:
            retrieved.notes.append(answer.problem)
            known = known and bool(request.sop_class_uids)
            continue
        listed[i] = list(answer.matches)
        classes.extend(c for c in answer.matches.values() if c)
        if not request.sop_class_uids:
            wanted = request.sop_instance_uids or tuple(answer.matches)
            known = known and bool(wanted) and all(answer.matches.get(u) for u in wanted)
    classes = list(dict.fromkeys(classes))
    if not known or not classes:
        retrieved.notes.append(
            "the SOP classes of the objects are not all known (no hint, and C-FIND gave "
            f"none): proposing up to {scu.BROAD_LIMIT} common storage SOP classes"
        )
        classes = scu.broad_storage_classes(classes)
    return _Found(classes, listed)


def _enumerate_for_move(
    config: NodeConfig, source: RemoteAE, work: list[RetrieveRequest], retrieved: RetrieveResult
) -> _Found:
    """A C-MOVE of a whole series: list its objects first, to know what must arrive."""
    listed: list[list[str] | None] = [None] * len(work)
    whole = [i for i, r in enumerate(work) if not r.sop_instance_uids]
    if whole:
        answers = scu.find_images(config, source, [work[i] for i in whole])
        for i, answer in zip(whole, answers, strict=True):
            if answer.matches is not None:
                listed[i] = list(answer.matches)
            elif answer.problem:
                retrieved.notes.append(answer.problem)
    return _Found([], listed)


def _check_serving(config: NodeConfig, source: RemoteAE, retrieved: RetrieveResult) -> None:
    host, port = scu.local_address(config)
    if not scu.is_serving(config):
        raise OperationFailed(
            f"the node is not serving on {host}:{port}; start `dicom-node serve` first "
            "(C-MOVE delivers to our storage SCP)"
        )
    peer = config.peer_for(source.ae_title)
    if config.peers and (peer is None or Role.STORE not in peer.roles):
        retrieved.notes.append(
            f"{source.ae_title} is not a configured peer with the store role: the node "
            "will refuse the C-MOVE sub-operations"
        )


class _Receiver:
    """Receives C-GET arrivals as the Storage SCP does, and remembers each outcome."""

    def __init__(
        self,
        archive: Archive,
        source: RemoteAE,
        urls: dict[str, str | None],
        storage_classes: frozenset[str],
    ) -> None:
        self.archive = archive
        self.source = source
        self.urls = urls
        self.storage_classes = storage_classes  # those we proposed storage contexts for
        self.arrived: dict[str, _Arrived] = {}
        self.errors: dict[str, str] = {}

    def __call__(self, arrival: scu.Arrival) -> tuple[StorageStatus, str | None]:
        uid = arrival.sop_instance_uid
        extra: dict[str, str] = {"method": "get", "source": self.source.name}
        url = self.urls.get(uid)
        if url:
            extra["wado_url"] = url
        request = StoreRequest(
            sop_class_uid=arrival.sop_class_uid,
            sop_instance_uid=uid,
            context_sop_class_uid=arrival.context_sop_class_uid,
            transfer_syntax_uid=arrival.transfer_syntax_uid,
            dataset=arrival.dataset,
        )
        custody = Custody(
            calling_ae=self.source.ae_title,
            peer_address=arrival.peer_address,
            association_id=arrival.association_id,
            via="C-GET",
            extra=extra,
        )
        receipt = receive_instance(
            self.archive,
            request,
            custody,
            storage_classes=self.storage_classes,
            record=self.archive.record,
            peer=f"{self.source.ae_title}@{arrival.peer_address}",
        )
        outcome = receipt.outcome
        if outcome is None:
            self.errors[uid] = receipt.comment or receipt.status.name
            return receipt.status, receipt.comment
        self.arrived[uid] = _Arrived(
            outcome.header.study_uid,
            outcome.header.series_uid,
            Outcome.STORED if outcome.result is StoreResult.STORED else Outcome.DUPLICATE,
            self.archive.files.path(outcome.relpath),
            outcome.result is StoreResult.DUPLICATE_CONFLICT,
        )
        return receipt.status, receipt.comment


_ARRIVAL_EVENTS = {
    AuditEvent.INSTANCE_STORED: Outcome.STORED,
    AuditEvent.DUPLICATE_IDENTICAL: Outcome.DUPLICATE,
    AuditEvent.DUPLICATE_CONFLICT: Outcome.DUPLICATE,
}


def _arrived_since(archive: Archive, head: int, studies: Iterable[str]) -> dict[str, _Arrived]:
    """Instances the serving node took in for these studies after audit record ``head``."""
    arrived: dict[str, _Arrived] = {}
    for rec in audit.arrivals_since(archive.engine, head, studies):
        outcome = _ARRIVAL_EVENTS[rec.event]
        assert rec.sop_instance_uid is not None  # arrivals_since names the instance
        with archive.engine.connect() as conn:
            row = find_instance(conn, rec.sop_instance_uid)
        if row is None:
            continue
        conflict = rec.event == AuditEvent.DUPLICATE_CONFLICT
        relpath = rec.details.get("path") if conflict else row.path
        path = archive.files.path(relpath) if relpath else None
        arrived[rec.sop_instance_uid] = _Arrived(
            row.study_uid, row.series_uid, outcome, path, conflict
        )
    return arrived


def _ours(
    arrived: dict[str, _Arrived], work: list[RetrieveRequest], found: _Found
) -> dict[str, _Arrived]:
    """The arrivals this C-MOVE asked for: the serving node may be receiving others too."""
    named = {uid for r in work for uid in r.sop_instance_uids}
    named.update(uid for listed in found.listed for uid in listed or [])
    whole = {(r.study_uid, r.series_uid) for r in work if not r.sop_instance_uids}
    return {
        uid: a for uid, a in arrived.items() if uid in named or (a.study_uid, a.series_uid) in whole
    }


def _results(
    method: str,
    work: list[RetrieveRequest],
    statuses: list[FinalStatus],
    listed: list[list[str] | None],
    arrived: dict[str, _Arrived],
    errors: dict[str, str],
    urls: dict[str, str | None],
) -> list[ObjectResult]:
    """One result per requested (or listed, or arrived) object, request by request."""
    results: list[ObjectResult] = []
    reported: set[str] = set()
    service = f"C-{method.upper()}"
    for request, status, names in zip(work, statuses, listed, strict=True):
        in_series = [
            uid
            for uid, a in arrived.items()
            if a.series_uid == request.series_uid and a.study_uid == request.study_uid
        ]
        expected = list(request.sop_instance_uids) or (names or [])
        extra = in_series if not request.sop_instance_uids else []
        for uid in dict.fromkeys(expected + extra):
            if uid in reported:
                continue
            reported.add(uid)
            url = urls.get(uid) or request.wado_url
            results.append(
                _result(
                    service, request, status, uid, arrived.get(uid), errors.get(uid), names, url
                )
            )
    for uid, a in arrived.items():  # sent although nobody asked for it
        if uid not in reported:
            results.append(
                ObjectResult(
                    uid, a.study_uid, a.series_uid, a.outcome, "not requested", a.path, a.conflict
                )
            )
    return results


def _result(
    service: str,
    request: RetrieveRequest,
    status: FinalStatus,
    uid: str,
    arrived: _Arrived | None,
    error: str | None,
    listed: list[str] | None,
    url: str | None,
) -> ObjectResult:
    study, series = request.study_uid, request.series_uid
    if arrived is not None:
        message = ""
        if arrived.conflict:
            message = (
                "a different copy is archived under this SOP Instance UID; this one was "
                f"kept aside as {arrived.path}"
            )
        elif arrived.outcome is Outcome.DUPLICATE:
            message = "identical to the archived copy"
        return ObjectResult(
            uid, study, series, arrived.outcome, message, arrived.path, arrived.conflict,
            wado_url=url,
        )  # fmt: skip
    if error is not None:
        message = f"not stored: {error}"
        return ObjectResult(uid, study, series, Outcome.FAILED, message, wado_url=url)
    if uid in status.failed_uids:
        message = f"the source reports the sub-operation failed ({service} {status.summary()})"
        return ObjectResult(uid, study, series, Outcome.FAILED, message, wado_url=url)
    if status.category in (FAILURE, CANCEL) or (status.failed or 0) > 0:
        message = f"{service} {status.summary()}"
        return ObjectResult(uid, study, series, Outcome.FAILED, message, wado_url=url)
    message = f"the source did not send it ({service} {status.summary()})"
    if listed is not None and uid not in listed:
        message = f"not found at the source: C-FIND lists no such object; {message}"
    return ObjectResult(uid, study, series, Outcome.MISSING, message, wado_url=url)


def _record(archive: Archive, source: RemoteAE, method: str, result: ObjectResult) -> None:
    """The custody record of one requested object: where it came from, how, and why."""
    event = AuditEvent.RETRIEVED if result.arrived else AuditEvent.RETRIEVE_FAILED
    details: dict[str, object] = {
        "source": source.name,
        "source_ae": source.ae_title,
        "method": method,
        "outcome": result.outcome.value,
    }
    if result.wado_url:
        details["wado_url"] = result.wado_url
    if result.message:
        details["message"] = result.message
    if result.kos_checks:
        details["kos_checks"] = [check.describe() for check in result.kos_checks]
    valid = is_valid_uid(result.sop_instance_uid)
    if not valid:
        details["sop_instance_uid"] = result.sop_instance_uid
    archive.record(
        event,
        study_uid=result.study_uid,
        sop_instance_uid=result.sop_instance_uid if valid else None,
        **details,
    )
