"""TLS contexts for associations (PS3.15 B.9 BCP 195 profile: TLS 1.2 or newer)."""

from __future__ import annotations

import os
import ssl

from node.config import ClientTLS, TLSConfig
from node.errors import ConfigError


def _passphrase(env_name: str | None) -> str | None:
    return os.environ.get(env_name) if env_name else None


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The context that wraps accepted sockets; client certificates checked against ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certificate, tls.key, password=_passphrase(tls.passphrase_env))
        if tls.ca:
            context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(None, [f"tls: cannot load certificate or key: {exc}"]) from exc
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """The context for an association we open; verifies the server against ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # DICOM peers are named by AE title, not host name
    if tls.certificate and tls.key:
        context.load_cert_chain(tls.certificate, tls.key)
    return context
