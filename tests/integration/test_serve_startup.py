"""``serve`` start-up: one node per archive, and nothing written before everything is checked.

Real ``python -m node serve`` processes; a refused start is seen by its exit (stdout
reaches EOF), a started one by its readiness line, never by waiting a fixed time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import config_dict
from tests.integration.process import NodeProcess, write_config


def serve_once(config: Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """Start ``serve``; if it gets ready (it should not), stop it. (status, first line, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # "" once it exits; "ready ..." if it started
    if first.startswith("ready"):
        proc.terminate()
    code = proc.wait(60)
    return code, first, proc.stderr.read()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_second_serve_on_one_archive_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.yaml", config_dict(tmp_path))
    first = NodeProcess(config)
    try:
        code, line, err = serve_once(config)
        assert (code, line) == (2, ""), err
        lines = err.splitlines()
        assert len(lines) == 1, lines
        assert lines[0] == (
            f"dicom-node: {config}: storage.archive: {tmp_path / 'archive'} is in use by "
            f"another dicom-node serve (process {first.proc.pid})"
        )
    finally:
        first.kill()  # SIGKILL: the kernel releases the lock with the process
    again = NodeProcess(config)
    assert again.terminate() == 0


def fresh_config(root: Path, port: int) -> Path:
    """A new site: relative paths, a development key made on first start."""
    return write_config(
        root / "node.yaml",
        {"node": {"port": port}, "http": {"port": 0}, "signing": {"create_if_missing": True}},
    )


def test_serve_that_cannot_listen_writes_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = fresh_config(tmp_path, port)
        code, line, err = serve_once(config)
    assert (code, line) == (2, ""), err
    assert err.splitlines() == [
        f"dicom-node: {config}: node.port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]
    assert tree(tmp_path) == ["node.yaml"]  # no key, no archive, no database


def test_serve_checks_the_database_before_writing(tmp_path: Path) -> None:
    config = fresh_config(tmp_path, 0)
    (tmp_path / "var").mkdir()
    (tmp_path / "var/node.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    code, line, err = serve_once(config)
    assert (code, line) == (2, ""), err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dicom-node: {config}: storage.database: "), lines
    assert "not a database" in lines[0]
    assert tree(tmp_path) == ["node.yaml", "var", "var/node.sqlite"]


def test_a_fresh_serve_creates_its_state_under_var(tmp_path: Path) -> None:
    config = fresh_config(tmp_path, 0)
    node = NodeProcess(config)
    assert node.terminate() == 0
    made = tree(tmp_path)
    assert {"var/archive", "var/archive/.lock", "var/node.sqlite", "var/keys"} <= set(made)
    assert all(p == "node.yaml" or p.startswith("var") for p in made), made
