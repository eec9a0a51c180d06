"""Run ``dicom-node serve`` as a real process and wait for its readiness line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

READY = re.compile(r"^ready (\S+) port (\d+)$")
READY_PORT = r"^ready \S+ port (\d+)$"  # the DICOM port of the readiness line


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class NodeProcess:
    """``dicom-node serve -c CONFIG`` in a subprocess; ``port`` is known once ready."""

    def __init__(self, config: Path, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._stdout_closed = False
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()
        self._stdout = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout.start()
        self.port = self._wait_ready(timeout)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lines_changed:
                self.stdout_lines.append(line.rstrip())
                self._lines_changed.notify_all()
        with self._lines_changed:
            self._stdout_closed = True
            self._lines_changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 30) -> str:
        """The first group of the first stdout line matching ``pattern`` (waits for it)."""
        wanted = re.compile(pattern)
        with self._lines_changed:
            found = self._lines_changed.wait_for(
                lambda: (
                    self._stdout_closed or any(wanted.match(line) for line in self.stdout_lines)
                ),
                timeout,
            )
            for line in self.stdout_lines:
                match = wanted.match(line)
                if match:
                    return match.group(1)
        del found
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.stderr_lines))

    def _wait_ready(self, timeout: float) -> int:
        try:
            return int(self.wait_line(READY_PORT, timeout))
        except AssertionError:
            self.proc.kill()
            self.proc.wait()
            self._stderr.join(5)
            raise AssertionError(
                "node did not become ready:\n" + "\n".join(self.stderr_lines)
            ) from None

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Still running: ask it for every thread's stack (serve registers SIGUSR1 with
            # faulthandler), then kill it, and fail with what it said.
            self.proc.send_signal(signal.SIGUSR1)
            with self._lines_changed:
                self._lines_changed.wait(2)
            self.kill()
            self._stderr.join(5)
            tail = "\n".join(self.stderr_lines[-200:])
            raise AssertionError(f"serve did not stop within {timeout} s:\n{tail}") from None
        self._stderr.join(5)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
