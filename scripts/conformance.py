"""Print the conformance tables of the README from the tables the SCPs are built from.

Usage: python scripts/conformance.py   (Markdown on stdout)
"""

from __future__ import annotations

from pydicom.uid import UID

from node.net.contexts import (
    QR_FIND_SOP_CLASSES,
    QR_GET_SOP_CLASSES,
    QR_MOVE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION_TRANSFER_SYNTAXES,
    storage_sop_classes,
)
from node.net.status import STATUSES, Service, VerificationStatus
from node.services.contexts import mpps_context


def _name(uid: UID) -> str:
    return f"{uid.name} (`{uid}`)"


def main() -> None:
    print("| SOP class | role | transfer syntaxes |")
    print("|---|---|---|")
    verification = UID("1.2.840.10008.1.1")
    syntaxes = ", ".join(f"`{ts}`" for ts in VERIFICATION_TRANSFER_SYNTAXES)
    print(f"| {_name(verification)} | SCP | {syntaxes} |")
    mpps = UID(str(mpps_context().abstract_syntax))
    print(f"| {_name(mpps)} | SCP (N-CREATE, N-SET) | {syntaxes} |")
    print(
        f"| all {len(storage_sop_classes())} storage SOP classes of pynetdicom | SCP | "
        "every syntax in the list below |"
    )
    for classes, role in (
        (QR_FIND_SOP_CLASSES, "SCP (C-FIND)"),
        (QR_MOVE_SOP_CLASSES, "SCP (C-MOVE)"),
        (QR_GET_SOP_CLASSES, "SCP (C-GET)"),
    ):
        for uid in classes:
            print(f"| {_name(uid)} | {role} | {syntaxes} |")
    print(
        "| the same storage SOP classes | SCU (C-MOVE and C-GET sub-operations; SCP/SCU "
        "role selection accepted for C-GET) | the syntax each instance is stored in |"
    )
    print(
        "| the same storage SOP classes | SCU (transfers to partners, `dicom-node send`; the "
        "node's own requestor without TLS, pynetdicom with TLS; priority MEDIUM; no role "
        "selection, extended negotiation, user identity or asynchronous window proposed) | "
        "the syntax each instance is stored in, Explicit/Implicit VR LE fallback |"
    )
    print(
        "| Study Root Q/R FIND, GET, MOVE | SCU (`dicom-node retrieve`) | "
        "`1.2.840.10008.1.2.1`, `1.2.840.10008.1.2` |"
    )
    print(
        "| storage SOP classes of retrieved objects | SCP during C-GET (role selection) | "
        "every syntax in the list below |"
    )
    print("\nStorage transfer syntaxes (stored as received, never transcoded):\n")
    for ts in STORAGE_TRANSFER_SYNTAXES:
        print(f"- {_name(ts)}")
    print("\nStatuses, per service (a code's name is its meaning in that service):\n")
    services: dict[type, list[str]] = {VerificationStatus: ["C-ECHO"]}
    for service in Service:
        services.setdefault(STATUSES[service], []).append(service.value)
    for enum, names in services.items():
        codes = ", ".join(f"`0x{int(m):04X}` {m.name}" for m in enum)
        print(f"- {', '.join(names)}: {codes}")


if __name__ == "__main__":
    main()
