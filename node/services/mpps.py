"""MPPS SCP (PS3.4 Annex F): N-CREATE and N-SET handlers.

Thin: decode the event, call the registry, map :class:`MppsRefused` to its status with
the Attribute Identifier List or Error ID, and hand a COMPLETED step to the acquisition
wait (which runs in the scheduler, not on the association thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from node.config import Role
from node.identity import new_uid
from node.mpps import rules
from node.mpps.registry import MppsChange, MppsRegistry
from node.mpps.rules import MppsRefused, Problem
from node.services.associations import AssociationRegistry
from node.services.status import Status
from node.services.statusmap import status_dataset

log = logging.getLogger("node.mpps")

_STATUS = {
    Problem.INVALID_ATTRIBUTE_VALUE: Status.FAILURE_INVALID_ATTRIBUTE_VALUE,
    Problem.PROCESSING_FAILURE: Status.FAILURE_PROCESSING,
    Problem.DUPLICATE_INSTANCE: Status.FAILURE_DUPLICATE_SOP_INSTANCE,
    Problem.NO_SUCH_INSTANCE: Status.FAILURE_NO_SUCH_SOP_INSTANCE,
    Problem.INVALID_INSTANCE: Status.FAILURE_INVALID_SOP_INSTANCE,
    Problem.MISSING_ATTRIBUTE: Status.FAILURE_MISSING_ATTRIBUTE,
    Problem.MISSING_ATTRIBUTE_VALUE: Status.FAILURE_MISSING_ATTRIBUTE_VALUE,
}

# Called with the MPPS UID once a step is COMPLETED (starts the completeness check).
CompletedListener = Callable[[str], None]


def refusal(exc: MppsRefused) -> Dataset:
    status = status_dataset(_STATUS[exc.problem], str(exc))
    if exc.tags:
        status.AttributeIdentifierList = list(exc.tags)
    if exc.error_id is not None:
        status.ErrorID = exc.error_id
    return status


@dataclass
class MppsService:
    registry: MppsRegistry
    associations: AssociationRegistry
    on_completed: CompletedListener

    def _refuse_role(self, info: Any) -> Dataset | None:
        if Role.MPPS in info.roles:
            return None
        log.warning("MPPS refused: %s has no mpps role", info.peer)
        return status_dataset(Status.FAILURE_REFUSED_NOT_AUTHORIZED, "peer has no mpps role")

    def handle_create(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_CREATE handler."""
        info = self.associations.info(event.assoc)
        refused = self._refuse_role(info)
        if refused is not None:
            return refused, None
        uid = event.request.AffectedSOPInstanceUID
        assigned = uid is None
        uid = str(uid) if uid else new_uid()  # the SCP may assign it (PS3.4 F.7.2.1.2)
        try:
            change = self.registry.create(uid, event.attribute_list, info.calling_ae)
        except MppsRefused as exc:
            log.warning("N-CREATE %s from %s refused: %s", uid, info.peer, exc)
            return refusal(exc), None
        except Exception as exc:
            log.exception("N-CREATE %s failed", uid)
            return status_dataset(Status.FAILURE_PROCESSING, str(exc)), None
        status = status_dataset(Status.SUCCESS)
        reply = self._reply(change)
        if assigned:
            reply.AffectedSOPInstanceUID = uid
        log.info("MPPS %s created by %s", uid, info.peer)
        return status, reply

    def handle_set(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_SET handler."""
        info = self.associations.info(event.assoc)
        refused = self._refuse_role(info)
        if refused is not None:
            return refused, None
        uid = str(event.request.RequestedSOPInstanceUID or "")
        try:
            change = self.registry.update(uid, event.modification_list, info.calling_ae)
        except MppsRefused as exc:
            log.warning("N-SET %s from %s refused: %s", uid, info.peer, exc)
            return refusal(exc), None
        except Exception as exc:
            log.exception("N-SET %s failed", uid)
            return status_dataset(Status.FAILURE_PROCESSING, str(exc)), None
        log.info("MPPS %s set to %s by %s", uid, change.status, info.peer)
        if change.status == rules.COMPLETED:
            self.on_completed(uid)
        return status_dataset(Status.SUCCESS), self._reply(change)

    @staticmethod
    def _reply(change: MppsChange) -> Dataset:
        reply = Dataset()
        reply.update(change.attributes)
        return reply
