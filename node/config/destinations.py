"""Where a C-MOVE may send: the configured partners and peers (PS3.4 C.4.2.1.4.1).

The Move Destination of a request is an AE title; only AEs the configuration gives an
address for are destinations: every partner, and every peer with ``host`` and ``port``.
Sources are not destinations (they are where our own retrieves come from). A title that
is none of these is unknown, which the SCP answers with 0xA801. When a partner and a
peer share a title, the partner (with its TLS settings) wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config import ClientTLS, NodeConfig


@dataclass(frozen=True, slots=True)
class MoveDestination:
    ae_title: str
    host: str
    port: int
    tls: ClientTLS | None = None


def move_destination(config: NodeConfig, ae_title: str) -> MoveDestination | None:
    """The destination configured for ``ae_title``, or None when it is unknown."""
    title = ae_title.strip()
    for partner in config.partners:
        if partner.ae_title == title:
            return MoveDestination(partner.ae_title, partner.host, partner.port, partner.tls)
    for peer in config.peers:
        if peer.ae_title == title and peer.host and peer.port:
            return MoveDestination(peer.ae_title, peer.host, peer.port)
    return None
