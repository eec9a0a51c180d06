"""What to retrieve, and the final status of one C-GET or C-MOVE (PS3.4 C.4.2, C.4.3).

Plain data, no pynetdicom: the WADO parser builds requests, the SCU fills statuses and
the orchestration (:mod:`node.retrieve.client`) reads both.
"""

from __future__ import annotations

from dataclasses import dataclass

# Status categories of PS3.7 C.1 as pynetdicom names them.
SUCCESS = "Success"
WARNING = "Warning"
FAILURE = "Failure"
CANCEL = "Cancel"
PENDING = "Pending"

# One identifier carries at most this many SOP Instance UIDs: UI values are at most 64
# characters plus a separator, and an Explicit VR UI element holds at most 65534 bytes.
MAX_UIDS_PER_REQUEST = 500


@dataclass(frozen=True)
class RetrieveRequest:
    """Objects of one series to retrieve in one C-GET or C-MOVE.

    ``sop_instance_uids`` empty means the whole series. ``sop_class_uids`` are hints for
    the storage contexts of a C-GET. ``object_urls``, when given, holds the WADO URL of
    each object in ``sop_instance_uids`` (same order); otherwise ``wado_url`` applies to
    all of them.
    """

    study_uid: str
    series_uid: str
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    wado_url: str | None = None
    object_urls: tuple[str, ...] = ()

    def url_for(self, sop_instance_uid: str) -> str | None:
        """The WADO URL that asked for this object, if any."""
        if self.object_urls:
            for uid, url in zip(self.sop_instance_uids, self.object_urls, strict=False):
                if uid == sop_instance_uid:
                    return url
        return self.wado_url

    def chunks(self) -> list[RetrieveRequest]:
        """This request split so that no identifier lists more than the limit of UIDs."""
        uids = self.sop_instance_uids
        if len(uids) <= MAX_UIDS_PER_REQUEST:
            return [self]
        parts = []
        for start in range(0, len(uids), MAX_UIDS_PER_REQUEST):
            end = start + MAX_UIDS_PER_REQUEST
            parts.append(
                RetrieveRequest(
                    self.study_uid,
                    self.series_uid,
                    uids[start:end],
                    self.sop_class_uids,
                    self.wado_url,
                    self.object_urls[start:end] if self.object_urls else (),
                )
            )
        return parts


@dataclass(frozen=True)
class FinalStatus:
    """The final response of a C-GET or C-MOVE: status and sub-operation counts.

    ``code`` is None when no final response came (association aborted or timed out).
    """

    code: int | None
    category: str
    description: str
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    remaining: int | None = None
    failed_uids: tuple[str, ...] = ()
    error_comment: str | None = None

    @property
    def ok(self) -> bool:
        """Success with no failed sub-operation."""
        return self.category == SUCCESS and not self.failed and not self.failed_uids

    def summary(self) -> str:
        """``Success (...)`` or ``Failure 0xA801 (...)``, then the counts that were sent."""
        code = "" if self.code is None or self.code == 0 else f" 0x{self.code:04X}"
        text = f"{self.category}{code} ({self.description})"
        if self.error_comment:
            text += f": {self.error_comment}"
        counts = [
            f"{value} {name}"
            for name, value in (
                ("completed", self.completed),
                ("failed", self.failed),
                ("warning", self.warning),
                ("remaining", self.remaining),
            )
            if value is not None
        ]
        return f"{text}; {', '.join(counts)}" if counts else text
