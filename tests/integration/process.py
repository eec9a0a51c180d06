"""Run ``dicom-node serve`` as a real process and wait for its readiness line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

READY = re.compile(r"^ready (\S+) port (\d+)$")


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
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()
        self.port = self._wait_ready(timeout)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def _wait_ready(self, timeout: float) -> int:
        result: list[int] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = READY.match(line.strip())
                if match:
                    result.append(int(match.group(2)))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            self.proc.kill()
            self.proc.wait()
            self._stderr.join(5)
            raise AssertionError("node did not become ready:\n" + "\n".join(self.stderr_lines))
        return result[0]

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self._stderr.join(5)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
