"""Who may associate with the node, and what each peer may do.

Rules (A-ASSOCIATE-RJ reasons of PS3.8 9.3.4; every refusal is audited, PS3.15 A.5):
- the called AE title must be ours, else the association is rejected (PS3.8 Table 9-21:
  rejected-permanent, service-user, reason 7 "called-AE-title-not-recognized");
- when peers are configured, the calling AE title must be one of them, and the
  connection must come from that peer's host when one is given, else reason 3
  "calling-AE-title-not-recognized" (an AE title claimed from the wrong host is, for
  us, not that AE);
- an empty peer list lets anyone in with every role.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass

from node.config import ALL_ROLES, NodeConfig, Role
from node.errors import ConfigError


class RejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ reasons for source 1, DICOM UL service-user (PS3.8 9.3.4)."""

    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    message: str


def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        return frozenset(str(info[4][0]) for info in infos)


def _normal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


class AccessPolicy:
    """The association and role checks, resolved once from the configuration."""

    def __init__(self, config: NodeConfig) -> None:
        self.ae_title = config.node.ae_title
        self._roles = {p.ae_title: p.roles for p in config.peers}
        self._hosts: dict[str, frozenset[str]] = {}
        problems = []
        for i, peer in enumerate(config.peers):
            if peer.host is None:
                continue
            try:
                self._hosts[peer.ae_title] = _addresses(peer.host)
            except OSError as exc:
                problems.append(f"peers[{i}].host: cannot resolve {peer.host!r} ({exc})")
        if problems:
            raise ConfigError(config.source, problems)

    @property
    def open(self) -> bool:
        """True when no peers are configured: anyone may associate."""
        return not self._roles

    def check(self, calling_ae: str, called_ae: str, address: str) -> Rejection | None:
        """Decide an association request; None means accept."""
        if called_ae.strip() != self.ae_title.strip():
            return Rejection(
                RejectReason.CALLED_AE_NOT_RECOGNIZED,
                f"called AE title {called_ae!r} is not ours ({self.ae_title!r})",
            )
        if self.open:
            return None
        calling = calling_ae.strip()
        if calling not in self._roles:
            return Rejection(
                RejectReason.CALLING_AE_NOT_RECOGNIZED,
                f"calling AE title {calling!r} is not a configured peer",
            )
        allowed = self._hosts.get(calling)
        if allowed is not None and _normal(address) not in allowed:
            return Rejection(
                RejectReason.CALLING_AE_NOT_RECOGNIZED,
                f"calling AE title {calling!r} is not allowed from host {address}",
            )
        return None

    def roles(self, calling_ae: str) -> frozenset[Role]:
        """The roles of an accepted calling AE (all roles when the peer list is empty)."""
        if self.open:
            return ALL_ROLES
        return self._roles.get(calling_ae.strip(), frozenset())
