"""Named DIMSE status codes, one enum per service (PS3.7 Annex C, PS3.4 B.2.3, C.4, F.7.2).

A code means different things in different services (0xB000 is "Coercion of Data
Elements" in a C-STORE response, "Sub-operations complete, one or more failures or
warnings" in a C-MOVE or C-GET response), so each service has its own enum and no enum
has aliases: a member's ``name``, which goes into logs and audit records, is always the
meaning of its code for that service. No bare hex elsewhere.
"""

from __future__ import annotations

import enum


class Service(enum.Enum):
    """The DIMSE services the node answers as an SCP, or stores arrivals of as an SCU."""

    STORAGE = "C-STORE"  # PS3.4 Annex B; also C-GET/C-MOVE arrivals on our association
    MPPS = "N-CREATE/N-SET"  # PS3.4 Annex F
    FIND = "C-FIND"  # PS3.4 C.4.1
    MOVE = "C-MOVE"  # PS3.4 C.4.2
    GET = "C-GET"  # PS3.4 C.4.3


class VerificationStatus(enum.IntEnum):
    """C-ECHO (PS3.4 A.4, PS3.7 9.1.5.1.4): the node only ever answers Success."""

    SUCCESS = 0x0000


class StorageStatus(enum.IntEnum):
    """C-STORE responses the node sends (PS3.4 Table B.2-1; general ones PS3.7 C.4, C.5)."""

    SUCCESS = 0x0000
    WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
    FAILURE_PROCESSING = 0x0110  # PS3.7 C.4.1
    FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5.5
    FAILURE_REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.19
    FAILURE_OUT_OF_RESOURCES = 0xA700
    FAILURE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    FAILURE_CANNOT_UNDERSTAND = 0xC000


class MppsStatus(enum.IntEnum):
    """N-CREATE and N-SET responses of the MPPS SCP (PS3.4 F.7.2, PS3.7 10.1.3, 10.1.5, C)."""

    SUCCESS = 0x0000
    FAILURE_INVALID_ATTRIBUTE_VALUE = 0x0106
    FAILURE_PROCESSING = 0x0110
    FAILURE_DUPLICATE_SOP_INSTANCE = 0x0111
    FAILURE_NO_SUCH_SOP_INSTANCE = 0x0112
    FAILURE_INVALID_SOP_INSTANCE = 0x0117
    FAILURE_MISSING_ATTRIBUTE = 0x0120
    FAILURE_MISSING_ATTRIBUTE_VALUE = 0x0121
    FAILURE_REFUSED_NOT_AUTHORIZED = 0x0124


class QueryRetrieveStatus(enum.IntEnum):
    """C-FIND, C-MOVE and C-GET responses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).

    One enum for the three: no code has two meanings among them. Which service may send
    which code is noted per member.
    """

    SUCCESS = 0x0000
    PENDING = 0xFF00  # all three
    PENDING_OPTIONAL_KEYS_NOT_SUPPORTED = 0xFF01  # C-FIND
    CANCEL = 0xFE00  # all three
    WARNING_SUBOPERATIONS_INCOMPLETE = 0xB000  # C-MOVE, C-GET
    FAILURE_REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.19
    FAILURE_OUT_OF_RESOURCES = 0xA700  # C-FIND
    FAILURE_UNABLE_TO_CALCULATE_MATCHES = 0xA701  # C-MOVE, C-GET
    FAILURE_UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702  # C-MOVE, C-GET
    FAILURE_MOVE_DESTINATION_UNKNOWN = 0xA801  # C-MOVE
    FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # all three
    FAILURE_UNABLE_TO_PROCESS = 0xC000  # all three


# Any of the enums above: what a handler answers with.
AnyStatus = VerificationStatus | StorageStatus | MppsStatus | QueryRetrieveStatus

STATUSES: dict[Service, type[StorageStatus] | type[MppsStatus] | type[QueryRetrieveStatus]] = {
    Service.STORAGE: StorageStatus,
    Service.MPPS: MppsStatus,
    Service.FIND: QueryRetrieveStatus,
    Service.MOVE: QueryRetrieveStatus,
    Service.GET: QueryRetrieveStatus,
}

# A duplicate SOP Instance UID with different bytes: the first copy is kept, so what
# the archive holds differs from what the peer sent. No storage warning names this
# case; B000 (coercion) is the closest meaning and every SCU treats it as a warning.
DUPLICATE_CONFLICT_STATUS = StorageStatus.WARNING_COERCION_OF_DATA_ELEMENTS
