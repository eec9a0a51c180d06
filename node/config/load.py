"""Load and validate the YAML configuration, reporting every error with its key path.

Relative paths in the file are resolved against the directory that holds the file,
so a node started from any working directory finds the same archive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from node.config.model import (
    ALL_ROLES,
    AcquisitionConfig,
    ClientTLS,
    LocalNode,
    LoggingConfig,
    MacAlgorithm,
    ManifestsConfig,
    NodeConfig,
    Peer,
    RemoteAE,
    ReportingConfig,
    ReportingPerson,
    RetryPolicy,
    Role,
    SendRule,
    SendTrigger,
    SigningConfig,
    StorageConfig,
    TLSConfig,
    TransfersConfig,
)
from node.config.source import read_yaml
from node.errors import ConfigError

T = TypeVar("T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_MISSING = object()
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    **{f"{p}b": 1000 ** (n + 1) for n, p in enumerate("kmgt")},
    **{f"{p}ib": 1 << (10 * (n + 1)) for n, p in enumerate("kmgt")},
}


def ae_title_problem(value: object) -> str | None:
    """Why ``value`` is not a valid AE title (PS3.5 Table 6.2-1, AE VR), or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= 16:
        return "must be 1-16 characters"
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        return "must not contain a backslash or control characters"
    if not value.strip(" "):
        return "must not be all spaces"
    return None


class _Reader:
    """Collects every problem found while walking the YAML tree."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[str] = []
        self._path: list[str] = []

    @contextmanager
    def at(self, key: str | int) -> Iterator[None]:
        self._path.append(f"[{key}]" if isinstance(key, int) else key)
        try:
            yield
        finally:
            self._path.pop()

    @property
    def where(self) -> str:
        out = ""
        for part in self._path:
            out += part if part.startswith("[") or not out else f".{part}"
        return out or "(top level)"

    def error(self, message: str) -> None:
        self.errors.append(f"{self.where}: {message}")

    def section(self, raw: object, allowed: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.error("must be a mapping")
            return {}
        for key in raw:
            if key not in allowed:
                with self.at(str(key)):
                    self.error(f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return {k: v for k, v in raw.items() if k in allowed}

    def field(self, raw: Mapping[str, Any], key: str, convert: Callable[[Any], T], default: T) -> T:
        value = raw.get(key, _MISSING)
        if value is _MISSING:
            return default
        with self.at(key):
            try:
                return convert(value)
            except ValueError as exc:
                self.error(str(exc))
                return default

    def required(self, raw: Mapping[str, Any], key: str, convert: Callable[[Any], T]) -> T | None:
        if key not in raw or raw[key] is None:
            with self.at(key):
                self.error("is required")
            return None
        return self.field(raw, key, convert, None)

    # Converters raise ValueError with the message shown after the key path.
    def text(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        return value

    def ae_title(self, value: object) -> str:
        problem = ae_title_problem(value)
        if problem:
            raise ValueError(f"{problem} (got {value!r})")
        return str(value)

    def port(self, value: object) -> int:
        """A remote TCP port: 1-65535 (0 is no port one can connect to)."""
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(f"must be 1-65535 (got {value!r})")
        return value

    def listen_port(self, value: object) -> int:
        """Our own listening port: 0 lets the OS choose one."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ValueError(f"must be 0-65535, 0 letting the OS choose (got {value!r})")
        return value

    def positive_int(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be a positive integer (got {value!r})")
        return value

    def boolean(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false (got {value!r})")
        return value

    def duration(self, value: object) -> float:
        """Seconds as a number, or a string such as ``30s``, ``10m``, ``2h``."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"must be a duration such as 30s, 10m or 2h (got {value!r})")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]

    def size(self, value: object) -> int:
        """Bytes as an integer, or a string such as ``512MiB``, ``4GiB``, ``2GB``."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _SIZE.match(value.strip()) if isinstance(value, str) else None
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"must be a size such as 512MiB or 4GiB (got {value!r})")
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])

    def number_duration(self, value: object) -> float:
        """A duration that must be more than zero."""
        seconds = self.duration(value)
        if seconds <= 0:
            raise ValueError(f"must be more than zero (got {value!r})")
        return seconds

    def number(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"must be a positive number (got {value!r})")
        return float(value)

    def path(self, value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a file path")
        path = Path(os.path.expanduser(value))
        return Path(os.path.normpath(path if path.is_absolute() else self.base / path))

    def existing_file(self, value: object) -> Path:
        path = self.path(value)
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    def env_name(self, value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"must be an environment variable name (got {value!r})")
        return value

    def database(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a file path or a database URL")
        if "://" in value:
            return value
        return f"sqlite:///{self.path(value)}"

    def choice(self, options: tuple[str, ...]) -> Callable[[object], str]:
        def convert(value: object) -> str:
            if value not in options:
                raise ValueError(f"must be one of {', '.join(options)} (got {value!r})")
            return str(value)

        return convert

    def roles(self, value: object) -> frozenset[Role]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a list of roles: {', '.join(r.value for r in Role)}")
        try:
            return frozenset(Role(v) for v in value)
        except ValueError:
            raise ValueError(
                f"unknown role in {value!r} (allowed: {', '.join(r.value for r in Role)})"
            ) from None

    def items(self, raw: object, build: Callable[[Any], T | None]) -> list[T]:
        """Build each entry of a list; an entry is never left out without an error."""
        out: list[T] = []
        for i, item in enumerate(self.listing(raw)):
            before = len(self.errors)
            with self.at(i):
                built = build(item)
                if built is None and len(self.errors) == before:
                    self.error("is not a valid entry")
            if built is not None:
                out.append(built)
        return out

    def listing(self, raw: object) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error("must be a list")
            return []
        return raw


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def _local_node(r: _Reader, raw: object) -> LocalNode:
    d = _defaults(LocalNode)
    s = r.section(raw, set(d))
    return LocalNode(
        ae_title=r.field(s, "ae_title", r.ae_title, d["ae_title"]),
        host=r.field(s, "host", r.text, d["host"]),
        port=r.field(s, "port", r.listen_port, d["port"]),
        max_associations=r.field(s, "max_associations", r.positive_int, d["max_associations"]),
        max_pdu=r.field(s, "max_pdu", r.positive_int, d["max_pdu"]),
        network_timeout=r.field(s, "network_timeout", r.duration, d["network_timeout"]),
        acse_timeout=r.field(s, "acse_timeout", r.duration, d["acse_timeout"]),
        dimse_timeout=r.field(s, "dimse_timeout", r.duration, d["dimse_timeout"]),
        shutdown_grace=r.field(s, "shutdown_grace", r.duration, d["shutdown_grace"]),
        fast_path=r.field(s, "fast_path", r.boolean, d["fast_path"]),
    )


def _storage(r: _Reader, raw: object) -> StorageConfig:
    s = r.section(raw, {"root", "archive", "database", "fsync", "max_inflated_size"})
    d = _defaults(StorageConfig)
    # One root for everything the node writes: each path not named in the file is a
    # fixed name under it (README, "Configuration reference").
    root = r.field(s, "root", r.path, r.path(str(StorageConfig().root)))
    return StorageConfig(
        root=root,
        archive=r.field(s, "archive", r.path, root / "archive"),
        database=r.field(s, "database", r.database, f"sqlite:///{root / 'node.sqlite'}"),
        fsync=r.field(s, "fsync", r.boolean, True),
        max_inflated_size=r.field(s, "max_inflated_size", r.size, d["max_inflated_size"]),
    )


def _signing(r: _Reader, raw: object, root: Path) -> SigningConfig:
    d = _defaults(SigningConfig)
    s = r.section(raw, set(d))
    create = r.field(s, "create_if_missing", r.boolean, False)
    # A key that the node may create on first start need not exist yet.
    file_check = r.path if create else r.existing_file
    algorithms = tuple(m.value for m in MacAlgorithm)
    return SigningConfig(
        key=r.field(s, "key", file_check, root / "keys" / d["key"].name),
        certificate=r.field(s, "certificate", file_check, root / "keys" / d["certificate"].name),
        passphrase_env=r.field(s, "passphrase_env", r.env_name, None),
        mac_algorithm=MacAlgorithm(
            r.field(s, "mac_algorithm", r.choice(algorithms), d["mac_algorithm"].value)
        ),
        create_if_missing=create,
    )


def _trust(r: _Reader, raw: object, signing: SigningConfig) -> tuple[Path, ...]:
    out: list[Path] = []
    for i, item in enumerate(r.listing(raw)):
        with r.at(i):
            # The node's own certificate may be created at first start, like its key.
            if (
                signing.create_if_missing
                and isinstance(item, str)
                and (r.path(item) == signing.certificate)
            ):
                out.append(signing.certificate)
                continue
            try:
                out.append(r.existing_file(item))
            except ValueError as exc:
                r.error(str(exc))
    return tuple(out)


def _peer(r: _Reader, raw: object) -> Peer | None:
    s = r.section(raw, {"ae_title", "host", "roles", "name", "port"})
    if not s and raw is not None and not isinstance(raw, Mapping):
        return None
    ae = r.required(s, "ae_title", r.ae_title)
    peer = Peer(
        ae_title=ae or "",
        host=r.field(s, "host", r.text, None),
        roles=r.field(s, "roles", r.roles, ALL_ROLES),
        name=r.field(s, "name", r.text, None),
        port=r.field(s, "port", r.port, None),
    )
    if peer.port is not None and "host" not in s:
        with r.at("host"):
            r.error("is required when port is given (the C-MOVE destination address)")
    return peer if ae else None


def _client_tls(r: _Reader, raw: object) -> ClientTLS | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return ClientTLS()
    s = r.section(raw, {"ca", "certificate", "key"})
    tls = ClientTLS(
        ca=r.field(s, "ca", r.existing_file, None),
        certificate=r.field(s, "certificate", r.existing_file, None),
        key=r.field(s, "key", r.existing_file, None),
    )
    if (tls.certificate is None) != (tls.key is None):
        r.error("certificate and key must be given together")
    return tls


def _retry(r: _Reader, raw: object) -> RetryPolicy:
    d = _defaults(RetryPolicy)
    s = r.section(raw, set(d))
    return RetryPolicy(
        initial=r.field(s, "initial", r.duration, d["initial"]),
        factor=r.field(s, "factor", r.number, d["factor"]),
        maximum=r.field(s, "maximum", r.duration, d["maximum"]),
        attempts=r.field(s, "attempts", r.positive_int, d["attempts"]),
    )


def _remote(r: _Reader, raw: object) -> RemoteAE | None:
    keys = {"name", "ae_title", "host", "port", "tls", "max_associations", "retry"}
    s = r.section(raw, keys)
    name = r.required(s, "name", r.text)
    ae = r.required(s, "ae_title", r.ae_title)
    host = r.required(s, "host", r.text)
    port = r.required(s, "port", r.port)
    with r.at("tls"):
        tls = _client_tls(r, s.get("tls"))
    with r.at("retry"):
        retry = _retry(r, s.get("retry"))
    if name is None or ae is None or host is None or port is None:
        return None  # each missing or bad field has been reported above
    return RemoteAE(
        name=name,
        ae_title=ae,
        host=host,
        port=port,
        tls=tls,
        max_associations=r.field(s, "max_associations", r.positive_int, 1),
        retry=retry,
    )


def _tls(r: _Reader, raw: object) -> TLSConfig | None:
    if raw is None or raw is False:
        return None
    s = r.section(raw, {"certificate", "key", "ca", "require_client_certificate", "passphrase_env"})
    cert = r.required(s, "certificate", r.existing_file)
    key = r.required(s, "key", r.existing_file)
    ca = r.field(s, "ca", r.existing_file, None)
    require = r.field(s, "require_client_certificate", r.boolean, False)
    if require and "ca" not in s:
        with r.at("ca"):
            r.error("is required when require_client_certificate is true")
    if cert is None or key is None:
        return None
    return TLSConfig(
        certificate=cert,
        key=key,
        ca=ca,
        require_client_certificate=require,
        passphrase_env=r.field(s, "passphrase_env", r.env_name, None),
    )


def _send_rule(r: _Reader, raw: object, partners: list[RemoteAE]) -> SendRule | None:
    s = r.section(raw, {"when", "from", "partner"})
    triggers = tuple(t.value for t in SendTrigger)
    when = r.field(s, "when", r.choice(triggers), SendTrigger.ACQUISITION_KOS.value)
    from_ae = r.field(s, "from", r.ae_title, None)
    partner = r.required(s, "partner", r.text)
    if partner is not None and not any(partner in (p.name, p.ae_title) for p in partners):
        with r.at("partner"):
            r.error(f"no partner named {partner!r} in partners")
        return None
    if partner is None:
        return None
    return SendRule(partner=partner, when=SendTrigger(when), from_ae=from_ae)


def _transfers(r: _Reader, raw: object, partners: list[RemoteAE]) -> TransfersConfig:
    s = r.section(raw, {"rules", "poll_interval"})
    with r.at("rules"):
        rules = r.items(s.get("rules"), lambda item: _send_rule(r, item, partners))
    default = TransfersConfig()
    return TransfersConfig(
        rules=tuple(rules),
        poll_interval=r.field(s, "poll_interval", r.number_duration, default.poll_interval),
    )


def _manifests(r: _Reader, raw: object, root: Path) -> ManifestsConfig:
    s = r.section(raw, {"wait", "reports"})
    default = ManifestsConfig()
    return ManifestsConfig(
        wait=r.field(s, "wait", r.duration, default.wait),
        reports=r.field(s, "reports", r.path, root / default.reports.name),
    )


_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def _web_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/?#\s]+[^\s]*$", value):
        raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
    return value


def _language(value: object) -> str:
    if not isinstance(value, str) or not _LANGUAGE_TAG.match(value):
        raise ValueError(f"must be an RFC 5646 language tag such as en-US (got {value!r})")
    return value


def _reporting_person(r: _Reader, raw: object) -> ReportingPerson | None:
    keys = {"name", "key", "certificate", "passphrase_env", "observer_id"}
    s = r.section(raw, keys | {"observer_scheme", "institution"})
    name = r.required(s, "name", r.text)
    key = r.required(s, "key", r.existing_file)
    certificate = r.required(s, "certificate", r.existing_file)
    person = ReportingPerson(
        name=name or "",
        key=key or Path(),
        certificate=certificate or Path(),
        passphrase_env=r.field(s, "passphrase_env", r.env_name, None),
        observer_id=r.field(s, "observer_id", r.text, None),
        observer_scheme=r.field(s, "observer_scheme", r.text, "99LOCAL"),
        institution=r.field(s, "institution", r.text, None),
    )
    return person if name and key and certificate else None


def _reporting(r: _Reader, raw: object, sources: list[RemoteAE], root: Path) -> ReportingConfig:
    keys = {"wado_base_url", "source", "language", "language_meaning", "institution"}
    s = r.section(raw, keys | {"output", "people"})
    d = ReportingConfig()
    source = r.field(s, "source", r.text, None)
    if source is not None and not any(source in (x.name, x.ae_title) for x in sources):
        with r.at("source"):
            r.error(f"no source named {source!r} in sources")
    people: list[ReportingPerson | None] = []
    with r.at("people"):
        for i, item in enumerate(r.listing(s.get("people"))):
            before = len(r.errors)
            with r.at(i):
                people.append(_reporting_person(r, item))
                if people[-1] is None and len(r.errors) == before:
                    r.error("is not a valid entry")
    _unique(r, "people", [p.name.casefold() if p else None for p in people])
    return ReportingConfig(
        wado_base_url=r.field(s, "wado_base_url", _web_url, None),
        source=source,
        language=r.field(s, "language", _language, d.language),
        language_meaning=r.field(s, "language_meaning", r.text, d.language_meaning),
        institution=r.field(s, "institution", r.text, d.institution),
        output=r.field(s, "output", r.path, root / d.output.name),
        people=tuple(p for p in people if p),
    )


def _unique(r: _Reader, section: str, values: list[str | None]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            with r.at(section), r.at(i):
                r.error(f"duplicate {value!r}")
        seen.add(value)


def parse_config(data: object, base: Path, source: Path | None = None) -> NodeConfig:
    """Validate a parsed YAML document and build the configuration, or raise ConfigError."""
    r = _Reader(base)
    top = r.section(
        data,
        {"node", "storage", "signing", "trust", "peers", "partners", "sources"}
        | {"acquisition", "tls", "logging"}
        | {"transfers", "manifests"}
        | {"reporting"},
    )

    with r.at("node"):
        node = _local_node(r, top.get("node"))
    with r.at("storage"):
        storage = _storage(r, top.get("storage"))
    with r.at("signing"):
        signing = _signing(r, top.get("signing"), storage.root)
    with r.at("trust"):
        trust = _trust(r, top.get("trust"), signing)
    with r.at("peers"):
        peers = r.items(top.get("peers"), lambda item: _peer(r, item))
    remotes: dict[str, list[RemoteAE]] = {}
    for section in ("partners", "sources"):
        with r.at(section):
            remotes[section] = r.items(top.get(section), lambda item: _remote(r, item))
        _unique(r, section, [x.name for x in remotes[section]])
    _unique(r, "peers", [p.ae_title for p in peers])
    with r.at("acquisition"):
        acq = r.section(top.get("acquisition"), {"completion_timeout"})
        acquisition = AcquisitionConfig(
            completion_timeout=r.field(acq, "completion_timeout", r.duration, 600.0)
        )
    with r.at("transfers"):
        transfers = _transfers(r, top.get("transfers"), remotes["partners"])
    with r.at("manifests"):
        manifests = _manifests(r, top.get("manifests"), storage.root)
    with r.at("reporting"):
        reporting = _reporting(r, top.get("reporting"), remotes["sources"], storage.root)
    with r.at("tls"):
        tls = _tls(r, top.get("tls"))
    with r.at("logging"):
        log = r.section(top.get("logging"), {"level"})
        logging = LoggingConfig(level=r.field(log, "level", r.choice(_LOG_LEVELS), "INFO"))

    if r.errors:
        raise ConfigError(source, r.errors)
    return NodeConfig(
        source=source,
        node=node,
        storage=storage,
        signing=signing,
        trust=trust,
        peers=tuple(peers),
        partners=tuple(remotes["partners"]),
        sources=tuple(remotes["sources"]),
        acquisition=acquisition,
        transfers=transfers,
        manifests=manifests,
        reporting=reporting,
        tls=tls,
        logging=logging,
    )


def load_config(path: Path) -> NodeConfig:
    """Read ``path`` (one UTF-8 YAML document, no repeated key) and validate it completely."""
    return parse_config(read_yaml(path), path.resolve().parent, path)
