"""The closed sets of the configuration whose members the code names: roles, MACs, triggers."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """What a calling peer may do on an association with us."""

    STORE = "store"
    MPPS = "mpps"
    QUERY = "query"
    RETRIEVE = "retrieve"


ALL_ROLES = frozenset(Role)


class MacAlgorithm(enum.StrEnum):
    """MAC algorithms the node creates (PS3.15 C.1; RIPEMD160, MD5, SHA1 are verify-only)."""

    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


class SendTrigger(enum.StrEnum):
    """Events that can queue a transfer by rule."""

    ACQUISITION_KOS = "acquisition-kos"  # a Signed Complete Acquisition Content KOS was built
