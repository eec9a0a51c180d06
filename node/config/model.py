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
    # Storage-only associations served by node.net instead of pynetdicom (README).
    fast_path: bool = True


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the archive files and the index live.

    ``root`` holds everything the node writes whose path the configuration does not
    name (archive, index, development keys, manifest reports, draft reports).
    ``database`` is an SQLAlchemy URL; a plain path in the YAML becomes an SQLite URL.
    """

    root: Path = Path("var")
    archive: Path = Path("var/archive")
    database: str = "sqlite:///var/node.sqlite"
    fsync: bool = True
    # A Deflated Explicit VR data set inflating beyond this is refused (PS3.5 A.5).
    max_inflated_size: int = 4 << 30


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
    """A remote AE that may associate with us, from one host, with some roles.

    ``port`` is where the peer listens: with ``host`` it makes the peer a C-MOVE
    destination of our Q/R SCP.
    """

    ae_title: str
    host: str | None = None
    roles: frozenset[Role] = ALL_ROLES
    name: str | None = None
    port: int | None = None


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


class SendTrigger(enum.StrEnum):
    """Events that can queue a transfer by rule."""

    ACQUISITION_KOS = "acquisition-kos"  # a Signed Complete Acquisition Content KOS was built


@dataclass(frozen=True, slots=True)
class SendRule:
    """Queue a transfer of the study to ``partner`` when ``when`` happens.

    ``from_ae``: only for procedures reported (MPPS N-CREATE) by this calling AE.
    """

    partner: str
    when: SendTrigger = SendTrigger.ACQUISITION_KOS
    from_ae: str | None = None


@dataclass(frozen=True, slots=True)
class TransfersConfig:
    """Outgoing transfers to partners (PS3.17 Annex W case 2, sending side)."""

    rules: tuple[SendRule, ...] = ()
    poll_interval: float = 5.0  # how often the serving node looks for newly queued transfers


@dataclass(frozen=True, slots=True)
class ManifestsConfig:
    """Received "Signed Manifest" KOS checks (PS3.17 Annex W case 2, receiving side)."""

    wait: float = 600.0  # how long to wait for instances listed but not yet arrived
    reports: Path = Path("var/manifests")  # one JSON report per received manifest


@dataclass(frozen=True, slots=True)
class ReportingPerson:
    """Someone who authors or verifies reports, and the key that signs for them.

    ``name`` is a DICOM person name (``Family^Given``); ``observer_id`` (with
    ``observer_scheme``) becomes the Person Identification Code of the observer.
    """

    name: str
    key: Path
    certificate: Path
    passphrase_env: str | None = None
    observer_id: str | None = None
    observer_scheme: str = "99LOCAL"
    institution: str | None = None


@dataclass(frozen=True, slots=True)
class ReportingConfig:
    """Dictation reports (PS3.17 Annex X): CDA links, where key-image KOS come from, who signs."""

    wado_base_url: str | None = None  # WADO-URI base for CDA links (PS3.17 Table X.3-1)
    source: str | None = None  # configured source to fetch "For Report Attachment" KOS from
    language: str = "en-US"  # RFC 5646 tag of TID 1204 (Language of Content)
    language_meaning: str = "English (United States)"
    institution: str = ""  # custodial and verifying organization
    output: Path = Path("var/reports")  # drafts and CDA documents
    people: tuple[ReportingPerson, ...] = ()

    def person(self, name: str) -> ReportingPerson | None:
        """A person by name (case-insensitive) or by observer ID."""
        wanted = name.strip().casefold()
        for person in self.people:
            if person.name.casefold() == wanted or person.observer_id == name.strip():
                return person
        return None


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
    transfers: TransfersConfig = field(default_factory=TransfersConfig)
    manifests: ManifestsConfig = field(default_factory=ManifestsConfig)
    reporting: ReportingConfig = field(default_factory=ReportingConfig)
    tls: TLSConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def peer_for(self, ae_title: str) -> Peer | None:
        """The configured peer with this calling AE title, if any."""
        for peer in self.peers:
            if peer.ae_title == ae_title:
                return peer
        return None

    def partner(self, name_or_ae: str) -> RemoteAE | None:
        """A partner by name or AE title (names first)."""
        for partner in self.partners:
            if partner.name == name_or_ae:
                return partner
        for partner in self.partners:
            if partner.ae_title == name_or_ae:
                return partner
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
