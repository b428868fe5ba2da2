"""age encryption of archive streams (pyrage), push-style for the writer and pull-style for
the reader, with bounded memory.

pyrage's ``encrypt_io``/``decrypt_io`` pull from a reader and push into a writer in 64 KiB age
chunks (age's STREAM construction: ChaCha20-Poly1305 per chunk, the last chunk flagged), so a
modified or truncated ciphertext fails authentication instead of decrypting to something else.
The archive writer pushes, so encryption runs in a thread of its own, fed through a short queue.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Sequence
from typing import Any

import pyrage

from ckpt.storage.pipes import Aborted, QueueReader, QueueSink, ThreadedReader

AGE_MAGIC = b"age-encryption.org/v1\n"


class CryptoError(Exception):
    """Encryption or decryption failed; the message names no key material."""


class EncryptingWriter(io.RawIOBase):
    """Encrypts what is written to it for ``recipients`` and writes the ciphertext to ``out``
    (from a worker thread). ``finish`` writes the final chunk; ``abort`` discards."""

    def __init__(self, out: Any, recipients: Sequence[str]) -> None:
        try:
            self._recipients = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        except Exception as exc:
            raise CryptoError("a recipient is not a valid age X25519 public key") from exc
        if not self._recipients:
            raise CryptoError("no recipients")
        self._out = out
        self._pipe = QueueReader()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            pyrage.encrypt_io(self._pipe, self._out, self._recipients)
        except BaseException as exc:  # handed to the writing thread by write/finish
            self._error = exc
            # Keep draining so a producer blocked on the full queue wakes up.
            while True:
                item = self._pipe.chunks.get()
                if item is None or isinstance(item, BaseException):
                    break

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._error is not None:
            raise CryptoError(f"encryption failed: {self._error}") from self._error
        chunk = bytes(data)  # a copy: callers reuse their buffers
        if chunk:
            self._put(chunk)
        return len(chunk)

    def _put(self, item: bytes | BaseException | None) -> None:
        while self._thread.is_alive():
            try:
                self._pipe.chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        if self._error is not None:
            raise CryptoError(f"encryption failed: {self._error}") from self._error

    def finish(self) -> None:
        """Ends the stream: the last (flagged) chunk reaches ``out``; raises a worker error."""
        if self._closed:
            return
        self._closed = True
        self._put(None)
        self._thread.join()
        if self._error is not None:
            raise CryptoError(f"encryption failed: {self._error}") from self._error

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._put(Aborted())
        self._thread.join()

    def close(self) -> None:
        # io.RawIOBase.close must not finish the stream by accident (tarfile/zstd close their
        # file objects); the owner calls finish or abort explicitly.
        pass


def parse_identities(texts: Sequence[str]) -> list[Any]:
    """age identities from Secret values (``AGE-SECRET-KEY-1...`` lines; comments allowed)."""
    identities: list[Any] = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except Exception as exc:
                # Never echo the line: it is key material.
                raise CryptoError("the identity Secret holds a line that is not an age "
                                  "X25519 secret key") from exc
    return identities


class DecryptingReader(ThreadedReader):
    """Plaintext read from an age ciphertext source, decrypted in a worker thread.

    Fails with CryptoError on a wrong or missing identity (before any plaintext comes out)
    and on modified or truncated ciphertext (at the chunk that fails authentication).
    """

    def __init__(self, src: Any, identities: Sequence[Any]) -> None:
        if not identities:
            raise CryptoError(
                "the archive is encrypted and no identity was given: the location needs an "
                "identitySecretRef to restore"
            )
        self._src = src
        self._identities = list(identities)
        super().__init__("age-decrypt")

    def produce(self, sink: QueueSink) -> None:
        pyrage.decrypt_io(self._src, sink, self._identities)

    def failure(self, exc: BaseException) -> BaseException:
        return CryptoError(_decrypt_message(exc))


def _decrypt_message(exc: BaseException) -> str:
    text = str(exc).lower()
    if "no matching keys" in text or "no identity matched" in text:
        return ("cannot decrypt the archive: none of the location's identities matches its "
                "recipients (wrong or rotated-out key)")
    return ("cannot decrypt the archive: the ciphertext is damaged, truncated or was modified "
            f"({type(exc).__name__})")


def looks_encrypted(head: bytes) -> bool:
    return head.startswith(AGE_MAGIC)
