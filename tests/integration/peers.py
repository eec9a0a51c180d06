"""Real Query/Retrieve peers for integration tests: DCMTK ``dcmqrscp`` and Orthanc.

Both run as subprocesses on free ports (found by binding port 0), with ``TCP_NODELAY=1``,
and are waited for by polling (an answered association request, or Orthanc's
``GET /system``) with a deadline, never a fixed sleep. Use them as context managers:
the process is stopped at the end, and ``log()`` gives its output for messages.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.helpers import run, tool

# name: (AE title, host, port) of an AE the peer may send to (C-MOVE destinations).
Hosts = dict[str, tuple[str, str, int]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {"TCP_NODELAY": "1", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin"}


def wait_for(check: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Poll ``check()`` until it is true; fail early if the process died."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with status {proc.returncode}")
        if check():
            return
        pause.wait(0.05)
    raise AssertionError(f"{what} did not become ready within {timeout} s")


def orthanc_binary() -> str:
    """Orthanc lives in /usr/sbin, which a user's PATH may not hold."""
    found = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    assert Path(found).is_file(), "Orthanc is not installed: run scripts/setup.sh --test"
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def associates(port: int, called_ae: str) -> bool:
    """True once the peer answers an association request (accepted or rejected)."""
    if not port_open(port):
        return False
    ae = AE(ae_title="READY_PROBE")
    ae.acse_timeout = 5
    ae.add_requested_context(Verification)
    answers: list[object] = []  # the A-ASSOCIATE-RJ PDU, even if pynetdicom then aborts
    handlers = [(evt.EVT_PDU_RECV, lambda event: answers.append(event.pdu))]
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, evt_handlers=handlers)
    if assoc.is_established:
        assoc.release()
        return True
    return bool(assoc.is_rejected) or any(isinstance(pdu, A_ASSOCIATE_RJ) for pdu in answers)


class _Process:
    """A peer process whose output goes to a log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def _start(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=log_path.parent
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class DcmQrScp(_Process):
    """DCMTK ``dcmqrscp`` with one storage area (``aet``), filled by ``dcmqridx``.

    ``hosts`` is its HostTable (the C-MOVE destinations it knows); ``peers`` is the
    AETable access list: ``"ANY"`` or a list of HostTable names allowed to associate.
    """

    def __init__(
        self,
        root: Path,
        *,
        aet: str = "QRSCP",
        hosts: Hosts | None = None,
        peers: str | list[str] = "ANY",
        files: Sequence[Path] = (),
    ) -> None:
        self.root = root
        self.aet = aet
        self.port = free_port()
        self.storage = root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.add(files)
        host_lines = [
            f"{name} = ({ae}, {host}, {port})" for name, (ae, host, port) in (hosts or {}).items()
        ]
        access = peers if isinstance(peers, str) else f"({', '.join(peers)})"
        config = root / "dcmqrscp.cfg"
        config.write_text(
            "\n".join(
                [
                    f"NetworkTCPPort = {self.port}",
                    "MaxPDUSize = 16384",
                    "MaxAssociations = 16",
                    "HostTable BEGIN",
                    *host_lines,
                    "HostTable END",
                    "VendorTable BEGIN",
                    "VendorTable END",
                    "AETable BEGIN",
                    f"{aet} {self.storage} RW (200, 1024mb) {access}",
                    "AETable END",
                    "",
                ]
            )
        )
        self._start([tool("dcmqrscp"), "-c", str(config), str(self.port)], root / "dcmqrscp.log")
        # Ready means answering an association request (accept or reject), not only
        # accepting TCP connections.
        wait_for(lambda: associates(self.port, aet), "dcmqrscp", self.proc)

    def add(self, files: Sequence[Path]) -> None:
        """Copy Part 10 files into the storage area and register them in its index."""
        if not files:
            return
        copies = []
        for path in files:
            target = self.storage / path.name
            shutil.copyfile(path, target)
            copies.append(target)
        run(tool("dcmqridx"), self.storage, *copies, check=True)

    def __enter__(self) -> DcmQrScp:
        return self


class OrthancServer(_Process):
    """Orthanc with its DICOM and HTTP ports free, REST on loopback only.

    ``modalities`` are the AEs Orthanc knows (C-MOVE destinations); C-ECHO, C-STORE,
    C-FIND, C-GET and C-MOVE are allowed from any calling AE unless ``open_access`` is
    False, in which case only the known modalities may use them.
    """

    def __init__(
        self,
        root: Path,
        *,
        modalities: Hosts | None = None,
        aet: str = "ORTHANC",
        open_access: bool = True,
    ) -> None:
        self.root = root
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        known = {
            name: {"AET": ae, "Host": host, "Port": port}
            for name, (ae, host, port) in (modalities or {}).items()
        }
        config = {
            "Name": "dicom-node-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": known,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": open_access,
            "DicomAlwaysAllowStore": open_access,
            "DicomAlwaysAllowFind": open_access,
            "DicomAlwaysAllowGet": open_access,
            "DicomAlwaysAllowMove": open_access,
            "Plugins": [],
        }
        path = root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        self._start([orthanc_binary(), str(path)], root / "orthanc.log")
        wait_for(self._answers, "Orthanc", self.proc)
        wait_for(lambda: port_open(self.dicom_port), "Orthanc DICOM port", self.proc)

    def __enter__(self) -> OrthancServer:
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _answers(self) -> bool:
        with contextlib.suppress(OSError, urllib.error.URLError):
            self.rest_get("/system")
            return True
        return False

    def rest_get(self, path: str) -> Any:
        """GET a REST resource and decode its JSON."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def rest_get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return bytes(response.read())

    def upload(self, path: Path) -> dict[str, Any]:
        """POST a Part 10 file to ``/instances``; Orthanc's answer (ID, Status)."""
        request = urllib.request.Request(
            self.url + "/instances",
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer
