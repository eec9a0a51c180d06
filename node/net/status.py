"""Named DIMSE status codes (PS3.7 Annex C, PS3.4 B.2.3). No bare hex elsewhere."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Statuses the node answers with; names start with their category."""

    SUCCESS = 0x0000
    # Storage (PS3.4 Table B.2-1) and general (PS3.7 C.4) statuses.
    WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
    FAILURE_REFUSED_NOT_AUTHORIZED = 0x0124
    FAILURE_OUT_OF_RESOURCES = 0xA700
    FAILURE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    FAILURE_CANNOT_UNDERSTAND = 0xC000
    FAILURE_PROCESSING = 0x0110
    FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122
    # N-CREATE / N-SET (PS3.7 10.1.3, 10.1.5, Annex C).
    FAILURE_INVALID_ATTRIBUTE_VALUE = 0x0106
    FAILURE_DUPLICATE_SOP_INSTANCE = 0x0111
    FAILURE_NO_SUCH_SOP_INSTANCE = 0x0112
    FAILURE_INVALID_SOP_INSTANCE = 0x0117
    FAILURE_MISSING_ATTRIBUTE = 0x0120
    FAILURE_MISSING_ATTRIBUTE_VALUE = 0x0121
    # Query/Retrieve C-FIND, C-MOVE, C-GET (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
    PENDING = 0xFF00
    PENDING_OPTIONAL_KEYS_NOT_SUPPORTED = 0xFF01
    CANCEL = 0xFE00
    WARNING_SUBOPERATIONS_INCOMPLETE = 0xB000  # same code as the storage coercion warning
    FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # same code as the storage A900
    FAILURE_UNABLE_TO_PROCESS = 0xC000  # same code as "cannot understand"
    FAILURE_UNABLE_TO_CALCULATE_MATCHES = 0xA701
    FAILURE_UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
    FAILURE_MOVE_DESTINATION_UNKNOWN = 0xA801


# A duplicate SOP Instance UID with different bytes: the first copy is kept, so what
# the archive holds differs from what the peer sent. No storage warning names this
# case; B000 (coercion) is the closest meaning and every SCU treats it as a warning.
DUPLICATE_CONFLICT_STATUS = Status.WARNING_COERCION_OF_DATA_ELEMENTS
