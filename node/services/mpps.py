"""MPPS SCP (PS3.4 Annex F): N-CREATE and N-SET handlers.

Thin: decode the event, call the registry, answer :class:`MppsRefused` with the status
:func:`node.net.statusmap.status_for` names, the Attribute Identifier List or Error ID,
and hand a COMPLETED step to the acquisition wait (which runs in the scheduler, not on
the association thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event

from node.config import Role
from node.errors import MppsRefused
from node.identity import new_uid
from node.mpps import rules
from node.mpps.registry import MppsChange, MppsRegistry
from node.net.status import MppsStatus, Service
from node.net.statusmap import status_dataset, status_for
from node.services.associations import AssociationRegistry

log = logging.getLogger("node.mpps")

# Called with the MPPS UID once a step is COMPLETED (starts the completeness check).
CompletedListener = Callable[[str], None]


def refusal(exc: MppsRefused) -> Dataset:
    status = status_dataset(status_for(exc, Service.MPPS), str(exc))
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

    def _run(
        self, event: Event, name: str, uid: str, action: Callable[[str, str], MppsChange]
    ) -> MppsChange | Dataset:
        """Check the role, run ``action(uid, calling_ae)``; a refusal becomes its status."""
        info = self.associations.info(event.assoc)
        if Role.MPPS not in info.roles:
            log.warning("%s refused: %s has no mpps role", name, info.peer)
            refused = MppsStatus.FAILURE_REFUSED_NOT_AUTHORIZED
            return status_dataset(refused, "peer has no mpps role")
        try:
            change = action(uid, info.calling_ae)
        except MppsRefused as exc:
            log.warning("%s %s from %s refused: %s", name, uid, info.peer, exc)
            return refusal(exc)
        except Exception as exc:
            log.exception("%s %s failed", name, uid)
            return status_dataset(status_for(exc, Service.MPPS), str(exc))
        log.info("MPPS %s is %s after %s from %s", uid, change.status, name, info.peer)
        return change

    def handle_create(self, event: Event) -> tuple[Dataset, Dataset | None]:
        """EVT_N_CREATE handler."""
        request = event.request
        assert isinstance(request, N_CREATE)  # what pynetdicom hands an EVT_N_CREATE handler
        requested = request.AffectedSOPInstanceUID
        uid = str(requested) if requested else new_uid()  # the SCP may assign it (F.7.2.1.2)
        attributes = event.attribute_list
        result = self._run(
            event, "N-CREATE", uid, lambda u, ae: self.registry.create(u, attributes, ae)
        )
        if isinstance(result, Dataset):
            return result, None
        reply = self._reply(result)
        if not requested:
            reply.AffectedSOPInstanceUID = uid
        return status_dataset(MppsStatus.SUCCESS), reply

    def handle_set(self, event: Event) -> tuple[Dataset, Dataset | None]:
        """EVT_N_SET handler."""
        request = event.request
        assert isinstance(request, N_SET)  # what pynetdicom hands an EVT_N_SET handler
        uid = str(request.RequestedSOPInstanceUID or "")
        modification = event.modification_list
        result = self._run(
            event, "N-SET", uid, lambda u, ae: self.registry.update(u, modification, ae)
        )
        if isinstance(result, Dataset):
            return result, None
        if result.status == rules.COMPLETED:
            self.on_completed(uid)
        return status_dataset(MppsStatus.SUCCESS), self._reply(result)

    @staticmethod
    def _reply(change: MppsChange) -> Dataset:
        reply = Dataset()
        reply.update(change.attributes)
        return reply
