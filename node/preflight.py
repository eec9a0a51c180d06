"""What ``serve`` checks before it writes anything, and the archive lock it then takes.

A ``serve`` that cannot run must leave the disk as it found it: no development key, no
archive folders, no empty index database made on the way to an error. So everything that
can be checked without writing is checked first, and every problem is reported at once,
each with its key path, like a configuration error (exit 2):

- ``storage.archive``: a folder (or creatable), writable, and not served by another node;
- ``storage.database``: an SQLite file that is a database and writable (or creatable),
  or a server that answers;
- ``signing.key``: loadable with its certificate and passphrase (or creatable when
  ``create_if_missing`` allows it);
- ``tls``: certificate, key and CA load;
- ``node.host``/``node.port`` and ``http.host``/``http.port``: the addresses can be bound
  now; ``http.tls``: certificate, key and CA load.

Then :func:`hold_archive` takes the archive lock (node.storage.lock); start-up recovery
and everything else that writes come after it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from node.config import NodeConfig
from node.errors import ConfigError, NodeError
from node.storage.database import engine_url
from node.storage.lock import ArchiveInUse, ArchiveLock, archive_holder, lock_archive


def check_serve(config: NodeConfig) -> None:
    """Raise ConfigError naming every reason ``serve`` cannot start; writes nothing."""
    problems = [
        *_archive(config),
        *_database(config.storage.database),
        *_signing(config),
        *_tls(config),
        *_listen("node.port", config.node.host, config.node.port),
        *(_listen("http.port", config.http.host, config.http.port) if config.http.enabled else []),
        *_http_tls(config),
    ]
    if problems:
        raise ConfigError(config.source, problems)


def hold_archive(config: NodeConfig) -> ArchiveLock:
    """Take the archive lock for the life of the process, or ConfigError (exit 2)."""
    try:
        return lock_archive(config.storage.archive)
    except ArchiveInUse as exc:
        raise ConfigError(config.source, [f"storage.archive: {exc}"]) from exc
    except OSError as exc:
        problem = f"storage.archive: cannot lock {config.storage.archive}: {exc.strerror or exc}"
        raise ConfigError(config.source, [problem]) from exc


def _creatable(path: Path) -> str | None:
    """Why ``path`` (a folder or file that does not exist yet) could not be created."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def _archive(config: NodeConfig) -> list[str]:
    archive = config.storage.archive
    if not archive.exists():
        problem = _creatable(archive)
        return [f"storage.archive: {problem}"] if problem else []
    if not archive.is_dir():
        return [f"storage.archive: {archive} is not a folder"]
    if not os.access(archive, os.W_OK | os.X_OK):
        return [f"storage.archive: {archive} is not writable"]
    holder = archive_holder(archive)
    if holder is not None:
        return [f"storage.archive: {ArchiveInUse(archive, holder)}"]
    return []


def _database(url: str) -> list[str]:
    if url.startswith("sqlite:///"):
        return _sqlite_file(Path(url.removeprefix("sqlite:///")))
    if url.startswith("sqlite"):
        return []  # in memory: nothing to check
    try:
        engine = create_engine(engine_url(url), pool_pre_ping=True)
    except SQLAlchemyError as exc:
        return [f"storage.database: {_masked(url)}: {exc}"]
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        return [f"storage.database: cannot reach {_masked(url)}: {reason}"]
    finally:
        engine.dispose()
    return []


def _sqlite_file(path: Path) -> list[str]:
    if not path.exists():
        problem = _creatable(path)
        return [f"storage.database: {problem}"] if problem else []
    if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
        return [f"storage.database: {path} is not a readable and writable file"]
    try:
        # Read-only, so that looking cannot change the file (no journal, no WAL files).
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"storage.database: {path}: {exc}"]
    return []


def _masked(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"


def _signing(config: NodeConfig) -> list[str]:
    from node.signatures.keys import load_signer

    signing = config.signing
    if not signing.key.exists():
        if not signing.create_if_missing:
            return []  # the configuration check has reported it already
        problem = _creatable(signing.key) or (
            _creatable(signing.certificate) if not signing.certificate.exists() else None
        )
        return [f"signing.key: {problem}"] if problem else []
    try:
        load_signer(signing.key, signing.certificate, signing.passphrase_env)
    except (NodeError, ValueError, OSError) as exc:
        return [f"signing.key: {exc}"]
    return []


def _http_tls(config: NodeConfig) -> list[str]:
    if not config.http.enabled or config.http.tls is None:
        return []
    from node.net.tls import server_context

    try:
        server_context(config.http.tls)
    except ConfigError as exc:
        return [f"http.{problem}" for problem in exc.problems]
    return []


def _tls(config: NodeConfig) -> list[str]:
    if config.tls is None:
        return []
    from node.net.tls import server_context

    try:
        server_context(config.tls)
    except ConfigError as exc:
        return exc.problems
    return []


def _listen(key: str, host: str, port: int) -> list[str]:
    """Bind the listening address once, as the server will (SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        return [f"{key}: cannot listen on {host}:{port}: {exc.strerror or exc}"]
    return []
