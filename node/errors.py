"""The node's exception hierarchy.

Domain code raises these; the DICOM service layer maps them to named statuses in one
place (:mod:`node.net.statusmap`) and the CLI maps them to exit codes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path


class NodeError(Exception):
    """Base of every error the node reports to a user or a peer."""


class ConfigError(NodeError):
    """The configuration is invalid; carries every problem found, each with its key path."""

    def __init__(self, source: Path | None, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


class UsageError(NodeError):
    """A command was called with arguments that cannot work (exit status 2)."""


class InvalidRequest(NodeError):
    """A peer sent something we cannot accept: malformed data, bad UIDs, a mismatch."""


class DatasetMismatch(InvalidRequest):
    """The data set does not match the request (SOP Class or Instance UID differ)."""


class StorageError(NodeError):
    """The archive could not durably store something (disk full, I/O error)."""


class NotAuthorized(NodeError):
    """The calling peer lacks the role for this operation."""


class OperationFailed(NodeError):
    """An operation ran but did not succeed (exit status 1)."""


class MppsProblem(enum.Enum):
    """Why an MPPS request is refused; each has its DIMSE status (PS3.7 10.1.3, 10.1.5)."""

    INVALID_ATTRIBUTE_VALUE = "invalid attribute value"  # 0106
    PROCESSING_FAILURE = "processing failure"  # 0110
    DUPLICATE_INSTANCE = "duplicate SOP instance"  # 0111
    NO_SUCH_INSTANCE = "no such SOP instance"  # 0112
    INVALID_INSTANCE = "invalid SOP instance"  # 0117
    MISSING_ATTRIBUTE = "missing attribute"  # 0120
    MISSING_ATTRIBUTE_VALUE = "missing attribute value"  # 0121


class MppsRefused(NodeError):
    """An N-CREATE or N-SET that must be refused, with the attributes at fault.

    ``tags`` become the Attribute Identifier List and ``error_id`` the Error ID of the
    response (PS3.7 10.1.3.1.9, PS3.4 Table F.7.2-2).
    """

    def __init__(
        self,
        problem: MppsProblem,
        message: str,
        tags: Iterable[int] = (),
        error_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.tags = tuple(tags)
        self.error_id = error_id
