"""The HTTP service inside ``serve``: Starlette routes on uvicorn, in one thread of the node.

It shares the node's archive, index and audit log with the DICOM services. The socket is
bound here, before uvicorn starts, so a port of 0 gets its OS-chosen number at once and
a port in use is a configuration error with its key, as ``node.port`` is.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from node.config import HttpConfig
from node.errors import ConfigError
from node.storage.archive import Archive
from node.web.wado_uri import WadoUri

log = logging.getLogger("node.web")

STARTUP_TIMEOUT = 10.0  # uvicorn starts in milliseconds; beyond this something is wrong


def build_app(archive: Archive) -> Starlette:
    """The routes the node serves (PS3.18 9: WADO-URI)."""
    return Starlette(routes=[Route("/wado", WadoUri(archive).handle, methods=["GET"])])


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            None, [f"http.port: cannot listen on {host}:{port}: {exc.strerror or exc}"]
        ) from exc
    return sock


class HttpService:
    """Start and stop the node's HTTP listener; ``url`` once it listens."""

    def __init__(self, config: HttpConfig, archive: Archive, *, grace: float) -> None:
        self.config = config
        self.app = build_app(archive)
        self.grace = grace
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.config.scheme}://{shown}:{self.port}"

    def start(self) -> None:
        sock = _bound_socket(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        tls = self.config.tls
        settings = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # The peer's own address goes into custody records: no X-Forwarded-For (every
            # client is local, so uvicorn would trust any of them as a proxy).
            proxy_headers=False,
            # BCP 195 (PS3.15 B.9), as the DICOM TLS contexts; uvicorn's default allows CBC.
            ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20",
            timeout_graceful_shutdown=max(1, int(self.grace)),
            ssl_certfile=str(tls.certificate) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            ssl_keyfile_password=os.environ.get(tls.passphrase_env)
            if tls and tls.passphrase_env
            else None,
            ssl_ca_certs=str(tls.ca) if tls and tls.ca else None,
            ssl_cert_reqs=(
                ssl.CERT_REQUIRED
                if tls and tls.require_client_certificate
                else ssl.CERT_OPTIONAL
                if tls and tls.ca
                else ssl.CERT_NONE
            ),
        )
        server = uvicorn.Server(settings)
        # uvicorn installs no signal handlers off the main thread: serve's own handle SIGTERM.
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:  # uvicorn offers a flag, not an event, for readiness
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(STARTUP_TIMEOUT)
                sock.close()
                raise ConfigError(None, [f"http: the service did not start on {self.url}"])
            time.sleep(0.005)
        self._server, self._thread = server, thread
        log.info("HTTP service listening on %s", self.url)

    def stop(self, deadline: float | None = None) -> None:
        """Stop accepting; requests in progress may finish until ``deadline`` (monotonic),
        by default the node's shutdown grace from now."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        end = time.monotonic() + self.grace if deadline is None else deadline
        self._thread.join(max(0.0, end - time.monotonic()) + 1.0)
        self._server = None
