"""Open associations to configured remote AEs, and report failures as one clear line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.config import NodeConfig, RemoteAE
from node.errors import OperationFailed
from node.services.tls import client_context


@contextmanager
def associate(
    config: NodeConfig, remote: RemoteAE, contexts: Sequence[PresentationContext] | None = None
) -> Iterator[Any]:
    """An established association to ``remote``, released on exit."""
    ae = AE(ae_title=config.node.ae_title)
    ae.acse_timeout = config.node.acse_timeout
    ae.dimse_timeout = config.node.dimse_timeout
    ae.network_timeout = config.node.network_timeout
    if contexts:
        ae.requested_contexts = list(contexts)
    else:
        ae.add_requested_context(Verification)
    tls_args = (client_context(remote.tls), remote.host) if remote.tls else None
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        # pynetdicom reports a refused TCP connection as an abort without a socket.
        connected = getattr(assoc.dul.socket, "_is_connected", False)
        if assoc.is_rejected:
            why = "rejected the association"
        elif assoc.is_aborted and connected:
            why = "aborted the association"
        else:
            why = "could not be reached"
        raise OperationFailed(
            f"{remote.name} ({remote.ae_title}@{remote.host}:{remote.port}) {why}"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(config: NodeConfig, remote: RemoteAE) -> tuple[bool, str]:
    """C-ECHO ``remote``; return success and a one-line report."""
    with associate(config, remote) as assoc:
        status = assoc.send_c_echo()
    code = getattr(status, "Status", None)
    if code == 0:
        return True, f"C-ECHO {remote.name}: Success"
    return False, f"C-ECHO {remote.name}: failed (status {code})"
