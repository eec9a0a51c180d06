"""Verification SCP (PS3.4 Annex A): C-ECHO always succeeds once associated."""

from __future__ import annotations

from typing import Any

from node.net.status import VerificationStatus


def handle_echo(_event: Any) -> int:
    return int(VerificationStatus.SUCCESS)
