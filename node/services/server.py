"""The node's listening server: each connection goes to the fast path or to pynetdicom.

The choice is made on the connection's own thread by peeking at the A-ASSOCIATE-RQ
(nothing is consumed), so pynetdicom gets the connection exactly as it arrived when the
request proposes anything the fast path leaves to it. TLS connections always go to
pynetdicom: a TLS stream cannot be peeked at.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from node.net.acceptor import NoRequest, peek_associate_request
from node.services.fastpath import FastStoragePath

log = logging.getLogger("node.association")


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the storage fast path in front of it."""

    # Connection threads must not keep a stopping process alive or pile up in a list;
    # Node.stop() waits for associations itself.
    daemon_threads = True
    block_on_close = False
    fast_path: FastStoragePath | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        fast = self.fast_path
        if fast is not None and self.ssl_context is None:
            try:
                proposal = peek_associate_request(request, fast.acse_timeout)
            except NoRequest as exc:
                # A port probe, or a peer that never spoke: nothing to answer.
                log.info("connection from %s closed: %s", client_address[0], exc)
                request.close()
                return
            if proposal is not None and fast.takes(proposal):
                try:
                    fast.serve(request, client_address, proposal)
                except Exception:  # a bug must cost this association only, never the node
                    log.exception("fast-path association from %s failed", client_address)
                finally:
                    request.close()
                return
        super().process_request_thread(request, client_address)
