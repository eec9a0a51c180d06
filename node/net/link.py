"""One Upper Layer connection: PDUs in and out of a socket, DIMSE messages assembled.

Reads are exact (a PDU header, then its body); writes go out whole under a lock, so an
A-ABORT from another thread (a node stopping) never lands inside another PDU.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from node.net import pdu
from node.net.dimse import Command, decode_command, has_data_set
from node.net.pdu import PduError
from node.vectored import write_vectored

# Largest non-P-DATA PDU we read: an A-ASSOCIATE with every context is far smaller.
_CONTROL_PDU_LIMIT = 1 << 20


def timeval(seconds: float | None) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO; None (or 0) means no limit."""
    whole = int(seconds or 0)
    return struct.pack("ll", whole, int(((seconds or 0) - whole) * 1_000_000))


class PeerClosed(ConnectionError):
    """The peer closed the connection without A-RELEASE or A-ABORT."""


class PeerAborted(ConnectionError):
    """The peer sent an A-ABORT (PS3.8 9.3.8)."""

    def __init__(self, source: int, reason: int) -> None:
        super().__init__(f"A-ABORT from the peer (source {source}, reason {reason})")
        self.source = source
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """A whole DIMSE message: its command set and, when announced, its data set bytes."""

    context_id: int
    command: Command
    data: bytes | None


class Link:
    """PDU-level reads and writes on a connected socket."""

    def __init__(self, sock: socket.socket, max_receive: int) -> None:
        self.sock = sock
        # Our advertised Maximum Length (0: unlimited); P-DATA beyond it is a violation.
        self.max_receive = max_receive
        self._send_lock = threading.Lock()
        self._timeout: float | None = -1.0  # not set by us yet

    def set_timeout(self, seconds: float | None) -> None:
        """Limit each read and write to ``seconds`` (None: wait for ever).

        The limit is the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket, not
        Python's socket timeout, which polls before every call and doubled the system
        calls per C-STORE. An expired limit raises TimeoutError, as Python's would.
        """
        if seconds == self._timeout:
            return
        self._timeout = seconds
        self.sock.settimeout(None)
        value = timeval(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    # ------------------------------------------------------------------ reading
    def _read_exact(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                n = self.sock.recv_into(view[got:], size - got)
            except BlockingIOError as exc:  # SO_RCVTIMEO expired
                raise TimeoutError("no data from the peer within the time limit") from exc
            if n == 0:
                raise PeerClosed("connection closed by the peer")
            got += n
        return buffer

    def read_pdu(self) -> tuple[int, bytearray]:
        """(PDU type, body) of the next PDU; PduError when its length is out of bounds."""
        pdu_type, length = pdu.parse_header(self._read_exact(pdu.HEADER_LENGTH))
        limit = _CONTROL_PDU_LIMIT
        if pdu_type == pdu.P_DATA_TF and self.max_receive:
            limit = self.max_receive
        elif pdu_type == pdu.P_DATA_TF:
            limit = 1 << 31
        if length > limit:
            raise PduError(f"PDU of {length} bytes exceeds the negotiated maximum {limit}")
        return pdu_type, self._read_exact(length)

    def read_message(self) -> Message | int:
        """The next DIMSE message, or the type of a release PDU that came instead.

        Raises PeerAborted, PeerClosed, PduError (a protocol violation) or a socket
        timeout.
        """
        assembly = _Assembly()
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type in (pdu.RELEASE_RQ, pdu.RELEASE_RP):
                if assembly.started:
                    raise PduError("release request inside a DIMSE message")
                return pdu_type
            if pdu_type == pdu.ABORT:
                raise PeerAborted(*pdu.decode_abort(bytes(body)))
            if pdu_type != pdu.P_DATA_TF:
                raise PduError(f"unexpected PDU type 0x{pdu_type:02X} on an association")
            message = assembly.add(pdu.decode_p_data(body))
            if message is not None:
                return message

    # ------------------------------------------------------------------ writing
    def send(self, buffers: Sequence[bytes | memoryview]) -> None:
        """Write ``buffers`` in order as one stream (one system call when it fits)."""
        with self._send_lock:
            try:
                write_vectored(buffers, self.sock.sendmsg)
            except BlockingIOError as exc:  # SO_SNDTIMEO expired
                raise TimeoutError("the peer took no data within the time limit") from exc

    def send_message(
        self,
        context_id: int,
        command: bytes,
        data: bytes | memoryview | None,
        peer_max: int,
    ) -> None:
        """Send a command set and, when given, its data set, fragmented to ``peer_max``."""
        parts: list[bytes | memoryview] = []
        for head, chunk in pdu.fragments(context_id, True, command, peer_max):
            parts += (head, chunk)
        if data is not None:
            for head, chunk in pdu.fragments(context_id, False, data, peer_max):
                parts += (head, chunk)
        self.send(parts)

    def abort(self, source: int = pdu.ABORT_SOURCE_PROVIDER, reason: int = 0) -> None:
        """Send an A-ABORT and stop both directions; errors are moot at this point."""
        with contextlib.suppress(OSError):
            self.send([pdu.encode_abort(source, reason)])
        self.shutdown()

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class _Assembly:
    """Fragments of one DIMSE message, joined as they arrive (PS3.8 9.3.5.1, Annex E).

    All fragments of a message share one presentation context; a P-DATA-TF never
    carries the start of the next message (the operations window is 1, PS3.7 D.3.3.3).
    """

    def __init__(self) -> None:
        self.context_id: int | None = None
        self.command: Command | None = None
        self._command_parts: list[bytes] = []
        self._data_parts: list[memoryview] = []

    @property
    def started(self) -> bool:
        return self.context_id is not None

    def add(self, pdvs: list[pdu.Pdv]) -> Message | None:
        for index, pdv in enumerate(pdvs):
            message = self._add(pdv)
            if message is not None:
                if index != len(pdvs) - 1:
                    raise PduError("PDVs of a second message in the same P-DATA-TF")
                return message
        return None

    def _add(self, pdv: pdu.Pdv) -> Message | None:
        if self.context_id is None:
            self.context_id = pdv.context_id
        elif pdv.context_id != self.context_id:
            raise PduError("fragments of one message on two presentation contexts")
        if pdv.is_command:
            if self.command is not None:
                raise PduError("command fragment after the command set ended")
            self._command_parts.append(bytes(pdv.data))
            if not pdv.is_last:
                return None
            self.command = decode_command(b"".join(self._command_parts))
            if has_data_set(self.command):
                return None
            return Message(self.context_id, self.command, None)
        if self.command is None:
            raise PduError("data set fragment before its command set")
        self._data_parts.append(pdv.data)
        if not pdv.is_last:
            return None
        return Message(self.context_id, self.command, b"".join(self._data_parts))
