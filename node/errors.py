"""The node's exception hierarchy.

Domain code raises these; the DICOM service layer maps them to named statuses in one
place (:mod:`node.net.statusmap`) and the CLI maps them to exit codes.
"""

from __future__ import annotations

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
