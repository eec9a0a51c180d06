"""Guards on the pynetdicom path: C-STORE-RQ checks before pynetdicom's own (PS3.7 9.3.1),
association ends it misses, and its exception logs in one line.

Left to itself, pynetdicom drops a C-STORE-RQ without an Affected SOP Instance UID
unanswered, aborts with a traceback on a UID of more than 64 characters, and hands a
C-STORE on any context to the Storage SCP by the SOP class the command names, whatever
the context was accepted for. The fast path answers all of these from
:meth:`StoreService.receive`; this guard makes the pynetdicom path do the same: a
complete C-STORE-RQ whose command set :func:`request_problem` refuses is answered here,
through that same ``receive`` (so the status, log line, counters and audit record are
the fast path's), and never reaches pynetdicom's conversion of the command into a
primitive. A message pynetdicom cannot convert at all is aborted with one log line
(PS3.8 Table 9-10, AA-8), as pynetdicom would, without the traceback.

What these guards need of pynetdicom's DIMSE and DUL internals is in
:mod:`node.pynetdicom_compat`; this module decides, through public API only.
"""

from __future__ import annotations

import logging

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType

from node.pynetdicom_compat import (
    UncheckedStore,
    on_kill,
    screen_store_requests,
    survive_peer_errors,
    wake_acceptor,
)
from node.services.associations import AssociationRegistry
from node.services.store import StoreService, request_problem

log = logging.getLogger("node.association")

# Command elements (PS3.7 Annex E) read from the raw command set, never converted by
# pydicom: conversion validates (and warns about) exactly the values we refuse.
_AFFECTED_SOP_CLASS_UID = 0x00000002
_MESSAGE_ID = 0x00000110
_COMMAND_DATA_SET_TYPE = 0x00000800
_AFFECTED_SOP_INSTANCE_UID = 0x00001000
_NO_DATA_SET = 0x0101
_UID_LIMIT = 64
_COMMENT_LIMIT = 64


def _raw(command_set: Dataset, tag: int) -> bytes | str | int | None:
    # The raw element (no conversion); pydicom types get_item as never None, but a
    # command element the peer left out is None.
    element: DataElement | RawDataElement | None = command_set.get_item(tag)
    if element is None:
        return None
    value: bytes | str | int | None = element.value
    return value


def _text(command_set: Dataset, tag: int) -> str:
    value = _raw(command_set, tag)
    if isinstance(value, bytes):
        return value.rstrip(b"\0 ").decode("ascii", "replace")
    return "" if value is None else str(value).rstrip("\0 ")


def _us(command_set: Dataset, tag: int) -> int | None:
    value = _raw(command_set, tag)
    if isinstance(value, bytes):
        return int.from_bytes(value, "little") if len(value) == 2 else None
    return value if isinstance(value, int) else None


def _echoable(uid: str) -> bool:
    """A UID that may go back in the response (digits and dots, at most 64)."""
    return 0 < len(uid) <= _UID_LIMIT and all(c in "0123456789." for c in uid)


class _StoreGuard:
    """Answers, through :meth:`StoreService.receive`, a C-STORE-RQ pynetdicom must not see."""

    def __init__(self, store: StoreService, registry: AssociationRegistry) -> None:
        self._store = store
        self._registry = registry

    def __call__(self, assoc: Association, request: UncheckedStore) -> C_STORE | None:
        """The response to a request :func:`request_problem` refuses; None for the others."""
        command = request.command_set
        sop_class = _text(command, _AFFECTED_SOP_CLASS_UID)
        sop_instance = _text(command, _AFFECTED_SOP_INSTANCE_UID)
        has_data_set = _us(command, _COMMAND_DATA_SET_TYPE) != _NO_DATA_SET
        problem = request_problem(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            context_sop_class_uid=request.abstract_syntax,
            has_data_set=has_data_set,
            storage_classes=self._store.storage_classes,
        )
        if problem is None:
            return None
        data = request.data_set
        status, comment = self._store.receive(
            self._registry.info(assoc),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            context_sop_class_uid=request.abstract_syntax,
            transfer_syntax_uid=request.transfer_syntax,
            dataset=data.getvalue() if has_data_set and data is not None else None,
        )
        response = C_STORE()
        response.MessageIDBeingRespondedTo = _us(command, _MESSAGE_ID) or 0
        if _echoable(sop_class):
            response.AffectedSOPClassUID = sop_class
        if _echoable(sop_instance):
            response.AffectedSOPInstanceUID = sop_instance
        response.Status = int(status)
        if comment:
            shown = comment.encode("ascii", "replace").decode()[:_COMMENT_LIMIT]
            response.ErrorComment = shown  # type: ignore[assignment]
        return response


def guard_handlers(store: StoreService, registry: AssociationRegistry) -> list[EventHandlerType]:
    """pynetdicom event handlers for every association the node accepts.

    On opening: refused C-STORE requests answered by :class:`_StoreGuard`
    (:func:`node.pynetdicom_compat.screen_store_requests`), a state machine that
    survives peer bytes (:func:`node.pynetdicom_compat.survive_peer_errors`), and the
    association's end recorded when it is killed. pynetdicom triggers neither
    EVT_RELEASED nor EVT_ABORTED when its DUL thread stops on a malformed PDU or a peer
    that closed mid-exchange, or when the connection closed before the acceptor had
    answered; the registry then kept the association, counted against
    ``node.max_associations`` until the garbage collector took it. ``kill`` ends every
    association, and ``ended`` forgets one once, so the usual release or abort is
    unaffected. On closing: an acceptor still waiting for its A-ASSOCIATE-RQ (the DUL
    stopped before one could be decoded) is woken instead of waiting
    ``node.acse_timeout``, its thread counted by pynetdicom's own limit: ten malformed
    requests locked every peer out for that long.
    """
    guard = _StoreGuard(store, registry)

    def opened(event: Event) -> None:
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        screen_store_requests(assoc, guard)
        survive_peer_errors(assoc)

        def killed() -> None:
            if assoc.is_released:
                registry.ended(assoc, "released")
            else:
                registry.ended(assoc, "aborted", "connection closed")

        on_kill(assoc, killed)

    def closed(event: Event) -> None:
        assoc = event.assoc
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            # Nothing more can arrive: the acceptor takes None as its ACSE timeout.
            wake_acceptor(assoc)

    return [(evt.EVT_CONN_OPEN, opened), (evt.EVT_CONN_CLOSE, closed)]


class _OneLine(logging.Filter):
    """Turn a pynetdicom exception record into one line: its message and the exception's.

    pynetdicom logs the traceback of every PDU or DIMSE message it cannot decode, which
    is peer input, not a fault of the node: a hostile or broken peer would fill the log
    with tracebacks. The traceback is kept when the pynetdicom logger is set to DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        message = record.getMessage()
        detail = f"{type(exc).__name__}: {exc}"
        record.msg = detail if message == str(exc) else f"{message} ({detail})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_ONE_LINE = _OneLine()


def one_line_pynetdicom_errors() -> None:
    """Put :class:`_OneLine` on every pynetdicom logger (a logger's filters are its own)."""
    import pynetdicom  # noqa: F401  (its modules create their loggers on import)

    names = [name for name in logging.root.manager.loggerDict if name.startswith("pynetdicom")]
    for name in ["pynetdicom", *names]:
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)
