"""A throwaway PostgreSQL cluster for the tests: Debian's ``postgresql`` package, made with
``initdb`` in a temporary folder, listening only on a Unix socket there (no TCP port).

One cluster serves the whole session (``initdb`` costs about a second); every test gets
its own database. As root (the CI container), ``initdb`` refuses to run, so the cluster
belongs to the ``postgres`` user and its commands run through ``runuser``.

``fsync=off`` only spares the cluster's own disk writes: the durability tests kill the
node, never this server, and commits stay synchronous (``synchronous_commit`` is on), so
the node still gets its answer only after the server has the transaction.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

_BIN_ROOT = Path("/usr/lib/postgresql")
_SUPERUSER = "postgres"


def _bin_dir() -> Path:
    """The newest installed server version's binaries (Debian installs 15 on bookworm)."""
    found = sorted(
        (p for p in _BIN_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            f"no PostgreSQL server under {_BIN_ROOT}: run scripts/setup.sh --test "
            "(it installs Debian's postgresql package)"
        )
    return found[-1]


def _locale() -> str:
    """en_US.UTF-8 where the machine has it: a server's usual, non-bytewise collation, so
    a query that depends on C ordering fails here as it would on a real server."""
    listed = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    names = {line.strip().lower().replace("-", "") for line in listed.splitlines()}
    return "en_US.UTF-8" if "en_us.utf8" in names else "C.UTF-8"


class Cluster:
    """A running cluster; :meth:`new_database` gives each test a fresh database URL."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="dicom-node-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # short: Unix socket paths are limited to ~107 bytes
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SUPERUSER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", _SUPERUSER, "--"]
        self._names = itertools.count(1)
        self._running = False

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, check=False, cwd=self.root
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={_locale()}",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c fsync=off -c max_connections=300 -c log_min_messages=warning"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        self._running = True

    def stop(self) -> None:
        try:
            if self._running:
                self._run(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
                self._running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{_SUPERUSER}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection in autocommit mode (for the tests' own look)."""
        return psycopg.connect(
            host=str(self.socket_dir), user=_SUPERUSER, dbname=database, autocommit=True
        )

    def new_database(self) -> str:
        """A new, empty database; its name is unique in the session."""
        name = f"node_{os.getpid()}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name
