"""The typed, frozen configuration tree of a node, as pydantic models.

Every default lives here, as a field default, and nowhere else; a path default that is
an :class:`UnderRoot` is that name under ``storage.root``. The value types (ports,
durations, sizes, paths) are in :mod:`node.config.types`; the rules that relate fields
are each model's ``cross_field_problems``, so the YAML is validated completely before
any of these objects exist (:func:`node.config.load.parse_config`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from node.config.choices import ALL_ROLES, MacAlgorithm, SendTrigger
from node.config.section import Problem, Section
from node.config.types import (
    DEFAULT_ROOT,
    AETitle,
    ConfigPath,
    Database,
    Duration,
    EnvName,
    ExistingFile,
    Flag,
    LanguageTag,
    ListenPort,
    LoadContext,
    PositiveDuration,
    PositiveInt,
    PositiveNumber,
    RemotePort,
    Roles,
    RootedPath,
    Size,
    Text,
    UnderRoot,
    WebURL,
    is_path_text,
    resolve_path,
    root_of,
)


def _given(data: Mapping[str, Any], key: str) -> bool:
    return data.get(key) is not None


class LocalNode(Section):
    """Our own Application Entity and its listening socket."""

    ae_title: AETitle = "DICOM_NODE"
    host: Text = "127.0.0.1"
    port: ListenPort = 11112
    max_associations: PositiveInt = 10
    max_pdu: PositiveInt = 262144
    network_timeout: Duration = 60.0
    acse_timeout: Duration = 30.0
    dimse_timeout: Duration = 60.0
    shutdown_grace: Duration = 10.0
    # Storage-only associations served by node.net instead of pynetdicom (README).
    fast_path: Flag = True


class StorageConfig(Section):
    """Where the archive files and the index live.

    ``root`` holds everything the node writes whose path the configuration does not
    name (archive, index, development keys, manifest reports, draft reports).
    ``database`` is an SQLAlchemy URL; a plain path in the YAML becomes an SQLite URL.
    """

    root: ConfigPath = Field(default=DEFAULT_ROOT, validate_default=True)
    archive: RootedPath = Field(default=UnderRoot("archive"), validate_default=True)
    database: Database = Field(default=UnderRoot("node.sqlite"), validate_default=True)
    fsync: Flag = True
    # A Deflated Explicit VR data set inflating beyond this is refused (PS3.5 A.5).
    max_inflated_size: Size = 4 << 30


class SigningConfig(Section):
    """The node's signing key and certificate (PS3.15 Annex C)."""

    key: RootedPath = Field(default=UnderRoot("keys/signer.key.pem"), validate_default=True)
    certificate: RootedPath = Field(
        default=UnderRoot("keys/signer.cert.pem"), validate_default=True
    )
    passphrase_env: EnvName | None = None
    mac_algorithm: MacAlgorithm = MacAlgorithm.SHA256
    create_if_missing: Flag = False

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        # A key that the node may create on first start need not exist yet.
        if data.get("create_if_missing") is True:
            return
        for key in ("key", "certificate"):
            value = data.get(key)
            if is_path_text(value) and not (path := resolve_path(value, context)).is_file():
                yield (key,), f"file not found: {path}"


class TLSConfig(Section):
    """TLS for incoming associations (TLS 1.2 or newer)."""

    certificate: ExistingFile
    key: ExistingFile
    ca: ExistingFile | None = None
    require_client_certificate: Flag = False
    passphrase_env: EnvName | None = None

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        if data.get("require_client_certificate") is True and not _given(data, "ca"):
            yield ("ca",), "is required when require_client_certificate is true"


class ClientTLS(Section):
    """TLS for an association we open to a partner or source."""

    ca: ExistingFile | None = None
    certificate: ExistingFile | None = None
    key: ExistingFile | None = None

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        if _given(data, "certificate") != _given(data, "key"):
            yield (), "certificate and key must be given together"


class Peer(Section):
    """A remote AE that may associate with us, from one host, with some roles.

    ``port`` is where the peer listens: with ``host`` it makes the peer a C-MOVE
    destination of our Q/R SCP.
    """

    ae_title: AETitle
    host: Text | None = None
    roles: Roles = ALL_ROLES
    name: Text | None = None
    port: RemotePort | None = None

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        if _given(data, "port") and not _given(data, "host"):
            yield ("host",), "is required when port is given (the C-MOVE destination address)"


class RetryPolicy(Section):
    """Exponential backoff for outbound work: delay = initial * factor**attempt, capped."""

    initial: Duration = 30.0
    factor: PositiveNumber = 2.0
    maximum: Duration = 3600.0
    attempts: PositiveInt = 20


class RemoteAE(Section):
    """A remote SCP we open associations to (a partner we send to, or a source)."""

    name: Text
    ae_title: AETitle
    host: Text
    port: RemotePort
    tls: ClientTLS | None = None
    max_associations: PositiveInt = 1
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_switch(cls, value: object) -> object:
        """``tls: true``: TLS with the system's CAs; ``false``: plain TCP."""
        if value is True:
            return {}
        return None if value is False else value


class AcquisitionConfig(Section):
    """How long to wait for listed instances after an MPPS is COMPLETED."""

    completion_timeout: Duration = 600.0


class SendRule(Section):
    """Queue a transfer of the study to ``partner`` when ``when`` happens.

    ``from_ae`` (``from`` in the file): only for procedures reported (MPPS N-CREATE) by
    this calling AE.
    """

    not_in_file = frozenset({"from_ae"})

    partner: Text
    when: SendTrigger = SendTrigger.ACQUISITION_KOS
    from_ae: AETitle | None = Field(default=None, alias="from")


class TransfersConfig(Section):
    """Outgoing transfers to partners (PS3.17 Annex W case 2, sending side)."""

    rules: tuple[SendRule, ...] = ()
    poll_interval: PositiveDuration = 5.0  # how often the serving node looks for new transfers


class ManifestsConfig(Section):
    """Received "Signed Manifest" KOS checks (PS3.17 Annex W case 2, receiving side)."""

    wait: Duration = 600.0  # how long to wait for instances listed but not yet arrived
    # One JSON report per received manifest.
    reports: RootedPath = Field(default=UnderRoot("manifests"), validate_default=True)


class ReportingPerson(Section):
    """Someone who authors or verifies reports, and the key that signs for them.

    ``name`` is a DICOM person name (``Family^Given``); ``observer_id`` (with
    ``observer_scheme``) becomes the Person Identification Code of the observer.
    """

    name: Text
    key: ExistingFile
    certificate: ExistingFile
    passphrase_env: EnvName | None = None
    observer_id: Text | None = None
    observer_scheme: Text = "99LOCAL"
    institution: Text | None = None


class ReportingConfig(Section):
    """Dictation reports (PS3.17 Annex X): CDA links, where key-image KOS come from, who signs."""

    wado_base_url: WebURL | None = None  # WADO-URI base for CDA links (PS3.17 Table X.3-1)
    source: Text | None = None  # configured source to fetch "For Report Attachment" KOS from
    language: LanguageTag = "en-US"  # RFC 5646 tag of TID 1204 (Language of Content)
    language_meaning: Text = "English (United States)"
    institution: Text = ""  # custodial and verifying organization
    output: RootedPath = Field(default=UnderRoot("reports"), validate_default=True)  # drafts, CDA
    people: tuple[ReportingPerson, ...] = ()

    def person(self, name: str) -> ReportingPerson | None:
        """A person by name (case-insensitive) or by observer ID."""
        wanted = name.strip().casefold()
        for person in self.people:
            if person.name.casefold() == wanted or person.observer_id == name.strip():
                return person
        return None


class HttpConfig(Section):
    """The node's HTTP service inside ``serve``: WADO-URI (PS3.18 9) at ``/wado``."""

    enabled: Flag = True
    host: Text = "127.0.0.1"
    port: ListenPort = 8080
    tls: TLSConfig | None = None

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_off(cls, value: object) -> object:
        return None if value is False else value

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        host = data.get("host")
        if isinstance(host, str) and host and not _loopback(host):
            # Without users anyone who reaches the port reads the archive.
            yield ("host",), "must be a loopback address (http users are not supported yet)"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def own_wado_url(self) -> str | None:
        """The node's own WADO-URI base, when the service runs on a port known in advance."""
        if not self.enabled or self.port == 0:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/wado"


def _loopback(host: str) -> bool:
    """An address, or a name all of whose addresses are loopback ones (as bound)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(a[4][0]).is_loopback for a in found)


class LoggingConfig(Section):
    """How much the node logs (no patient data at INFO)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class NodeConfig(Section):
    """The whole configuration of one node.

    ``source`` is the file it was read from (set by the loader, never written in it).
    """

    not_in_file = frozenset({"source"})

    source: Path | None = None
    node: LocalNode = Field(default_factory=LocalNode)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    signing: SigningConfig = Field(default_factory=SigningConfig)
    trust: tuple[ConfigPath, ...] = ()
    peers: tuple[Peer, ...] = ()
    partners: tuple[RemoteAE, ...] = ()
    sources: tuple[RemoteAE, ...] = ()
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    transfers: TransfersConfig = Field(default_factory=TransfersConfig)
    manifests: ManifestsConfig = Field(default_factory=ManifestsConfig)
    reporting: ReportingConfig = Field(default_factory=ReportingConfig)
    tls: TLSConfig | None = None
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @property
    def wado_base_url(self) -> str | None:
        """Where the CDA's image links point: ``reporting.wado_base_url``, else the node's
        own ``/wado`` (PS3.18 9), else None."""
        return self.reporting.wado_base_url or self.http.own_wado_url

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_off(cls, value: object) -> object:
        return None if value is False else value

    @classmethod
    def prepare_context(cls, data: Mapping[str, Any], context: LoadContext | None) -> None:
        """Find ``storage.root`` (and the node's own certificate) before any section."""
        if context is None:
            return
        storage = _mapping(data.get("storage"))
        given = storage.get("root")
        if is_path_text(given):
            context.root = resolve_path(given, context)
        signing = _mapping(data.get("signing"))
        if signing.get("create_if_missing") is True:
            certificate = signing.get("certificate")
            default = SigningConfig.model_fields["certificate"].default
            context.own_certificate = (
                resolve_path(certificate, context)
                if is_path_text(certificate)
                else default.under(root_of(context))
            )

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        yield from _trusted_files(data.get("trust"), context)
        yield from _unique("peers", data.get("peers"), "ae_title")
        for section in ("partners", "sources"):
            yield from _unique(section, data.get(section), "name")
        reporting = _mapping(data.get("reporting"))
        people = reporting.get("people")
        for loc, message in _unique("people", people, "name", str.casefold):
            yield ("reporting", *loc), message
        partners = _names(data.get("partners"))
        rules = _mapping(data.get("transfers")).get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            partner = _mapping(rule).get("partner")
            if isinstance(partner, str) and partner and partner not in partners:
                message = f"no partner named {partner!r} in partners"
                yield ("transfers", "rules", i, "partner"), message
        source = reporting.get("source")
        if isinstance(source, str) and source and source not in _names(data.get("sources")):
            yield ("reporting", "source"), f"no source named {source!r} in sources"

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


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _entries(value: object) -> list[Mapping[str, Any]]:
    """The mappings of a list as given (code may pass built models: nothing to check)."""
    return [_mapping(item) for item in value] if isinstance(value, list) else []


def _names(remotes: object) -> set[str]:
    """Names and AE titles of the listed partners or sources: what a rule may refer to."""
    return {
        value
        for entry in _entries(remotes)
        for value in (entry.get("name"), entry.get("ae_title"))
        if isinstance(value, str)
    }


def _unique(
    section: str, items: object, key: str, fold: Callable[[str], str] | None = None
) -> Iterator[Problem]:
    """Each entry's ``key`` differs from those before it (after ``fold``)."""
    seen: set[str] = set()
    for i, entry in enumerate(_entries(items)):
        value = entry.get(key)
        if not isinstance(value, str):
            continue
        folded = fold(value) if fold else value
        if folded in seen:
            yield (section, i), f"duplicate {folded!r}"
        seen.add(folded)


def _trusted_files(trust: object, context: LoadContext | None) -> Iterator[Problem]:
    """Each trusted certificate must exist, but the node's own may be created at first start."""
    for i, item in enumerate(trust if isinstance(trust, list) else []):
        if not is_path_text(item):
            continue  # the field reports it
        path = resolve_path(item, context)
        if context is not None and path == context.own_certificate:
            continue
        if not path.is_file():
            yield ("trust", i), f"file not found: {path}"
