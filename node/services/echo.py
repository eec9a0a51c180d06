"""Verification SCP (PS3.4 Annex A): C-ECHO always succeeds once associated."""

from __future__ import annotations

from pynetdicom.events import Event

from node.net.status import VerificationStatus


def handle_echo(_event: Event) -> int:
    return int(VerificationStatus.SUCCESS)
