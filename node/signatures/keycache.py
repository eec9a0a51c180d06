"""The node's signing key, loaded once per version of its files.

Loading an RSA key validates it (``cryptography`` checks the primes), which takes about
0.1 s for the 3072-bit development key: more than a third of the time budget of a
1000-reference KOS. A long-running builder therefore keeps the loaded :class:`Signer` and
loads again only when the key or certificate file changes (device, inode, size, mtime) or
the passphrase variable does. The passphrase itself is not kept, only its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from node.signatures.keys import Signer, load_signer

_Stamp = tuple[object, ...]


class SignerCache:
    """One cached :class:`Signer`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._signer: Signer | None = None

    def get(self, key: Path, certificate: Path, passphrase_env: str | None = None) -> Signer:
        """The signer for these files, loaded now if they changed since the last call."""
        stamp = (_file_stamp(key), _file_stamp(certificate), passphrase_env,
                 _secret_stamp(passphrase_env))  # fmt: skip
        with self._lock:
            if self._signer is None or stamp != self._stamp:
                self._signer = load_signer(key, certificate, passphrase_env)
                self._stamp = stamp
            return self._signer


def _file_stamp(path: Path) -> tuple[object, ...]:
    try:
        info = path.stat()
    except OSError:
        return (str(path), None)  # loading reports the error
    return (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _secret_stamp(passphrase_env: str | None) -> bytes | None:
    value = os.environ.get(passphrase_env) if passphrase_env else None
    return hashlib.sha256(value.encode()).digest() if value is not None else None
