"""Open associations to remote AEs, and report failures as one clear line.

:func:`associate` is the one way an SCU of the node opens a pynetdicom association
(PS3.8 7.1, A-ASSOCIATE): the node's AE title and ACSE, DIMSE and network timeouts,
TLS when the peer is configured with it (PS3.15 B.9), TCP_NODELAY on the socket, and a
refusal reported as :class:`AssociationFailed`. The plain-TCP C-STORE path uses the
node's own requestor (:func:`store_association`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pynetdicom import AE, evt
from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.config import NodeConfig, RemoteAE
from node.errors import OperationFailed
from node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.net.link import PeerAborted, PeerClosed
from node.net.pdu import PduError, ProposedContext
from node.net.requestor import (
    Association,
    AssociationRejected,
    ConnectFailed,
    RequestorSettings,
    request_association,
)
from node.net.tls import client_context
from node.pynetdicom_compat import ever_connected, transport_socket

log = logging.getLogger("node.scu")


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket.

    Without it the last segment of each message waits for the peer's delayed ACK, and
    every C-STORE costs tens of milliseconds on loopback (both as SCU and as SCP).
    """
    sock = transport_socket(event.assoc)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AssociationFailed(OperationFailed):
    """No association: the peer could not be reached, rejected it, or aborted."""

    def __init__(self, message: str, *, rejected: bool) -> None:
        super().__init__(message)
        self.rejected = rejected  # the peer answered with an A-ASSOCIATE-RJ


@contextmanager
def associate(
    config: NodeConfig,
    remote: RemoteAE,
    contexts: Sequence[PresentationContext] | None = None,
    *,
    ext_neg: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
    evt_handlers: Sequence[EventHandlerType] = (),
) -> Iterator[PynetdicomAssociation]:
    """An established association to ``remote``, released on exit.

    ``ext_neg`` (SCP/SCU role selection items) and ``evt_handlers`` are passed to
    pynetdicom unchanged. Raises :class:`AssociationFailed` when no association is made.
    """
    ae = AE(ae_title=config.node.ae_title)
    ae.acse_timeout = config.node.acse_timeout
    ae.dimse_timeout = config.node.dimse_timeout
    ae.network_timeout = config.node.network_timeout
    if contexts:
        ae.requested_contexts = list(contexts)
    else:
        ae.add_requested_context(Verification)
    tls_args = (client_context(remote.tls), remote.host) if remote.tls else None
    rejections: list[str] = []
    opened: list[bool] = []

    def on_pdu(event: Event) -> None:
        # Keep an A-ASSOCIATE-RJ and its reason as the PDU arrives: when the peer closes
        # the connection right after it, pynetdicom (3.0) may report an abort instead.
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            try:
                rejections.append(event.pdu.reason_str)
            except ValueError:
                rejections.append("reason not valid")

    assoc = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        tls_args=tls_args,
        ext_neg=list(ext_neg) or None,
        evt_handlers=[
            *evt_handlers,
            (evt.EVT_PDU_RECV, on_pdu),
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_OPEN, lambda _event: opened.append(True)),
        ],
    )
    if not assoc.is_established:
        # pynetdicom reports a refused TCP connection as an abort without a socket; a
        # peer that closes without answering has closed the socket too, so remember
        # whether the connection was ever made.
        connected = bool(opened) or ever_connected(assoc)
        if assoc.is_rejected or rejections:
            why = "rejected the association"
            if rejections:
                why += f" ({rejections[0]})"
        elif assoc.is_aborted and connected:
            why = "aborted the association"
        else:
            why = "could not be reached"
        rejected = bool(assoc.is_rejected or rejections)
        raise AssociationFailed(f"{_named(remote)} {why}", rejected=rejected)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _named(remote: RemoteAE) -> str:
    return f"{remote.name} ({remote.ae_title}@{remote.host}:{remote.port})"


@contextmanager
def store_association(
    config: NodeConfig, remote: RemoteAE, proposals: Sequence[tuple[str, Sequence[str]]]
) -> Iterator[Association | PynetdicomAssociation]:
    """An association to send C-STORE requests to ``remote`` on, released on exit.

    ``proposals``: (abstract syntax, transfer syntaxes) of each presentation context.
    Plain TCP uses our own requestor (:mod:`node.net.requestor`), which sends a stored
    data set without copying it through pynetdicom's PDU loop; a TLS partner gets a
    pynetdicom association (``sendmsg`` does not exist on TLS sockets).
    :func:`node.scu.store.send_instance` sends on either.
    """
    if remote.tls is not None:
        contexts = [build_context(sop, list(syntaxes)) for sop, syntaxes in proposals]
        with associate(config, remote, contexts) as pynetdicom_assoc:
            yield pynetdicom_assoc
        return
    assoc = _request(config, remote, proposals)
    try:
        yield assoc
    finally:
        if assoc.is_open:
            try:
                assoc.release()
            except (OSError, PduError) as exc:
                # Every answer that mattered has arrived; the association was aborted.
                log.warning("release of the association to %s failed: %s", _named(remote), exc)


def _request(
    config: NodeConfig, remote: RemoteAE, proposals: Sequence[tuple[str, Sequence[str]]]
) -> Association:
    """Open a plain-TCP association with :mod:`node.net.requestor`, or OperationFailed."""
    settings = RequestorSettings(
        calling_ae=config.node.ae_title,
        called_ae=remote.ae_title,
        host=remote.host,
        port=remote.port,
        max_pdu=config.node.max_pdu,
        acse_timeout=config.node.acse_timeout,
        network_timeout=config.node.network_timeout,
        dimse_timeout=config.node.dimse_timeout,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
    )
    # Presentation context IDs are odd, 1 to 255 (PS3.8 9.3.2.2).
    contexts = [
        ProposedContext(2 * n + 1, sop, tuple(syntaxes))
        for n, (sop, syntaxes) in enumerate(proposals)
    ]
    try:
        return request_association(settings, contexts)
    except ConnectFailed as exc:
        why = f"could not be reached ({exc})"
    except AssociationRejected as exc:
        why = f"rejected the association ({exc})"
    except PeerAborted:
        why = "aborted the association"
    except PeerClosed:
        why = "closed the connection instead of answering the association request"
    except TimeoutError:
        why = f"did not answer the association request within {config.node.acse_timeout:g} s"
    except PduError as exc:
        why = f"answered the association request with an invalid PDU ({exc})"
    except OSError as exc:
        why = f"lost the connection during association ({exc})"
    raise OperationFailed(f"{_named(remote)} {why}")


def echo(config: NodeConfig, remote: RemoteAE) -> tuple[bool, str]:
    """C-ECHO ``remote``; return success and a one-line report."""
    with associate(config, remote) as assoc:
        status = assoc.send_c_echo()
    code = getattr(status, "Status", None)
    if code == 0:
        return True, f"C-ECHO {remote.name}: Success"
    return False, f"C-ECHO {remote.name}: failed (status {code})"
