"""Guards on the pynetdicom path: C-STORE-RQ checks before pynetdicom's own (PS3.7 9.3.1),
association ends it misses, and its exception logs in one line.

Left to itself, pynetdicom drops a C-STORE-RQ without an Affected SOP Instance UID
unanswered, aborts with a traceback on a UID of more than 64 characters, and hands a
C-STORE on any context to the Storage SCP by the SOP class the command names, whatever
the context was accepted for. The fast path answers all of these from
:meth:`StoreService.receive`; this DIMSE provider makes the pynetdicom path do the same:
a complete C-STORE-RQ whose command set :func:`request_problem` refuses is answered here,
through that same ``receive`` (so the status, log line, counters and audit record are
the fast path's), and never reaches pynetdicom's conversion of the command into a
primitive. A message pynetdicom cannot convert at all is aborted with one log line
(PS3.8 Table 9-10, AA-8), as pynetdicom would, without the traceback.

This module is the only one that reaches into pynetdicom's DIMSE and DUL internals; it
relies on ``DIMSEServiceProvider.receive_primitive`` calling ``message.decode_msg`` and
then ``message.message_to_primitive``, on the acceptor waiting for its request on
``dul.to_user_queue`` and on ``StateMachine.do_action`` (pynetdicom 3.0).
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.fsm import InvalidEventError

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


def _raw(command_set: Any, tag: int) -> bytes | str | int | None:
    element = command_set.get_item(tag)
    return None if element is None else element.value


def _text(command_set: Any, tag: int) -> str:
    value = _raw(command_set, tag)
    if isinstance(value, bytes):
        return value.rstrip(b"\0 ").decode("ascii", "replace")
    return "" if value is None else str(value).rstrip("\0 ")


def _us(command_set: Any, tag: int) -> int | None:
    value = _raw(command_set, tag)
    if isinstance(value, bytes):
        return int.from_bytes(value, "little") if len(value) == 2 else None
    return value if isinstance(value, int) else None


def _echoable(uid: str) -> bool:
    """A UID that may go back in the response (digits and dots, at most 64)."""
    return 0 < len(uid) <= _UID_LIMIT and all(c in "0123456789." for c in uid)


class GuardedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, answering refused C-STORE requests itself."""

    def __init__(self, assoc: Any, store: StoreService, registry: AssociationRegistry) -> None:
        super().__init__(assoc)
        self._store = store
        self._registry = registry

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
        message = self.message
        try:
            complete = type(message).decode_msg(message, primitive, self.assoc)
            if not complete:
                return
            if self._answered(message):
                self.message = None
                return
            converted = message.message_to_primitive()
        except Exception as exc:  # peer bytes pynetdicom cannot decode: abort, one line
            log.warning(
                "A-ABORT to %s: invalid DIMSE message (%s: %s)",
                self.assoc.requestor.address,
                type(exc).__name__,
                exc,
            )
            self.message = None
            self.dul.event_queue.put("Evt19")  # AA-8: A-ABORT, as pynetdicom does
            return
        # Decoded and converted once: pynetdicom's own code takes it from here.
        message.decode_msg = lambda *_: True  # type: ignore[method-assign]
        message.message_to_primitive = lambda: converted  # type: ignore[method-assign]
        super().receive_primitive(primitive)

    def _answered(self, message: Any) -> bool:
        """Answer a C-STORE-RQ that :func:`request_problem` refuses; True if it did."""
        if not isinstance(message, C_STORE_RQ):
            return False
        context_id = message.context_id
        context = None if context_id is None else self.assoc._accepted_cx.get(context_id)
        if context_id is None or context is None:
            return False  # pynetdicom aborts a message on an unaccepted context
        command = message.command_set
        sop_class = _text(command, _AFFECTED_SOP_CLASS_UID)
        sop_instance = _text(command, _AFFECTED_SOP_INSTANCE_UID)
        has_data_set = _us(command, _COMMAND_DATA_SET_TYPE) != _NO_DATA_SET
        problem = request_problem(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            context_sop_class_uid=str(context.abstract_syntax),
            has_data_set=has_data_set,
            storage_classes=self._store.storage_classes,
        )
        if problem is None:
            return False
        data = message.data_set
        status, comment = self._store.receive(
            self._registry.info(self.assoc),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            context_sop_class_uid=str(context.abstract_syntax),
            transfer_syntax_uid=str(context.transfer_syntax[0]),
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
        self.send_msg(response, context_id)
        return True


# Events a local primitive on the DUL's to-provider queue stands for (PS3.8 Table 9-10):
# the primitive stays on that queue until the event's action takes it.
_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def _tolerant(do_action: Callable[[str], None], dul: Any) -> Callable[[str], None]:
    """A state machine step that cannot kill pynetdicom's DUL thread.

    Two failures did, each with a traceback, leaving the association registered and its
    thread waiting: an action that fails on peer bytes (an A-ABORT whose source is not
    0, 1 or 2 fails to become a primitive in AA-3), and a local primitive arriving too
    late (the acceptor answers an A-ASSOCIATE-RQ, Evt7/Evt8, after the DUL has already
    aborted on the peer's next, malformed PDU: Sta13 has no entry for it). pynetdicom has
    logged either in one line by then. A late local primitive is dropped (it would be
    offered again on every turn of the DUL loop otherwise): in Sta13 PS3.8 9.2 only
    waits for the transport to close. A failed action closes the transport, which the
    state machine answers as a connection lost (Evt17), ending the association.
    """

    def step(event: str) -> None:
        try:
            do_action(event)
        except InvalidEventError:
            if event in _LOCAL_EVENTS:
                with contextlib.suppress(queue.Empty):
                    dul.to_provider_queue.get_nowait()
        except Exception:
            if dul.socket is not None:
                dul.socket.close()

    return step


def guard_handlers(store: StoreService, registry: AssociationRegistry) -> list[tuple[Any, Any]]:
    """pynetdicom event handlers for every association the node accepts.

    On opening: :class:`GuardedDIMSE`, a state machine that survives peer bytes
    (:func:`_tolerant`), and the association's end recorded when it is killed. pynetdicom
    triggers neither EVT_RELEASED nor EVT_ABORTED when its DUL thread stops on a
    malformed PDU or a peer that closed mid-exchange, or when the connection closed
    before the acceptor had answered; the registry then kept the association, counted
    against ``node.max_associations`` until the garbage collector took it. ``kill`` ends
    every association, and ``ended`` forgets one once, so the usual release or abort is
    unaffected. On closing: an acceptor still waiting for its A-ASSOCIATE-RQ (the DUL
    stopped before one could be decoded) is woken instead of waiting
    ``node.acse_timeout``, its thread counted by pynetdicom's own limit: ten malformed
    requests locked every peer out for that long.
    """

    def opened(event: Any) -> None:
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        assoc.dimse = GuardedDIMSE(assoc, store, registry)
        machine = assoc.dul.state_machine
        machine.do_action = _tolerant(machine.do_action, assoc.dul)
        kill = assoc.kill

        def killed() -> None:
            kill()
            if assoc.is_released:
                registry.ended(assoc, "released")
            else:
                registry.ended(assoc, "aborted", "connection closed")

        assoc.kill = killed

    def closed(event: Any) -> None:
        assoc = event.assoc
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            # Nothing more can arrive: the acceptor takes None as its ACSE timeout.
            assoc.dul.to_user_queue.put(None)

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
