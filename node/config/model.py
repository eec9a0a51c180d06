"""The typed, frozen configuration tree of a node.

Every default lives here, as a field default, and nowhere else. Instances are built
only by :func:`node.config.load.load_config`, which validates the YAML completely
before any of these objects exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass(frozen=True, slots=True)
class LocalNode:
    """Our own Application Entity and its listening socket."""

    ae_title: str = "DICOM_NODE"
    host: str = "127.0.0.1"
    port: int = 11112
    max_associations: int = 10
    max_pdu: int = 262144
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    shutdown_grace: float = 10.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the archive files and the index live.

    ``database`` is an SQLAlchemy URL; a plain path in the YAML becomes an SQLite URL.
    """

    archive: Path = Path("var/archive")
    database: str = "sqlite:///var/node.sqlite"
    fsync: bool = True


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """The node's signing key and certificate (PS3.15 Annex C)."""

    key: Path = Path("var/keys/signer.key.pem")
    certificate: Path = Path("var/keys/signer.cert.pem")
    passphrase_env: str | None = None
    mac_algorithm: MacAlgorithm = MacAlgorithm.SHA256
    create_if_missing: bool = False


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for incoming associations (TLS 1.2 or newer)."""

    certificate: Path
    key: Path
    ca: Path | None = None
    require_client_certificate: bool = False
    passphrase_env: str | None = None


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS for an association we open to a partner or source."""

    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote AE that may associate with us, from one host, with some roles."""

    ae_title: str
    host: str | None = None
    roles: frozenset[Role] = ALL_ROLES
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for outbound work: delay = initial * factor**attempt, capped."""

    initial: float = 30.0
    factor: float = 2.0
    maximum: float = 3600.0
    attempts: int = 20


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """A remote SCP we open associations to (a partner we send to, or a source)."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: ClientTLS | None = None
    max_associations: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class AcquisitionConfig:
    """How long to wait for listed instances after an MPPS is COMPLETED."""

    completion_timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The whole configuration of one node."""

    source: Path | None = None
    node: LocalNode = field(default_factory=LocalNode)
    storage: StorageConfig = field(default_factory=StorageConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    trust: tuple[Path, ...] = ()
    peers: tuple[Peer, ...] = ()
    partners: tuple[RemoteAE, ...] = ()
    sources: tuple[RemoteAE, ...] = ()
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    tls: TLSConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def peer_for(self, ae_title: str) -> Peer | None:
        """The configured peer with this calling AE title, if any."""
        for peer in self.peers:
            if peer.ae_title == ae_title:
                return peer
        return None

    def remote(self, name_or_ae: str) -> RemoteAE | None:
        """A partner or source by name or AE title (names first)."""
        remotes = (*self.partners, *self.sources)
        for remote in remotes:
            if remote.name == name_or_ae:
                return remote
        for remote in remotes:
            if remote.ae_title == name_or_ae:
                return remote
        return None
