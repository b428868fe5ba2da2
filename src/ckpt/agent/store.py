"""Archive stores. The filesystem store (a host path or a PVC) is the default.

A writer streams into a temporary name in the destination folder, fsyncs, and renames to the
final name only on ``commit``: a final path never holds half an archive, and a crash leaves
only a ``.partial`` file behind (``FileStore.clean_partials`` removes stale ones).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self
from urllib.parse import unquote, urlparse

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PARTIAL_SUFFIX = ".partial"


class StoreError(Exception):
    """A store could not be opened, written or read."""


class StoreWriter(ABC):
    """A file-like sink; ``commit`` publishes it, leaving the context without it discards."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @abstractmethod
    def commit(self) -> str:
        """Make the archive durable and visible at its final location; returns that location."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written (idempotent)."""

    def flush(self) -> None:  # noqa: B027 - intentionally a no-op
        """File-like API for compressors; data is made durable by ``commit``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class Store(ABC):
    url: str

    @abstractmethod
    def open_write(self, name: str) -> StoreWriter: ...

    @abstractmethod
    def open_read(self, location: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, location: str) -> bool:
        """Remove an archive; False if it was not there."""

    @abstractmethod
    def exists(self, location: str) -> bool: ...


def path_of(location: str) -> Path:
    """A filesystem path from a ``file://`` URL or a plain absolute path."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"file URL with a host is not supported: {location}")
        return Path(unquote(parsed.path))
    if parsed.scheme:
        raise StoreError(f"unsupported store URL scheme {parsed.scheme!r} in {location!r}")
    path = Path(location)
    if not path.is_absolute():
        raise StoreError(f"store path must be absolute: {location!r}")
    return path


class _FileWriter(StoreWriter):
    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._f: BinaryIO | None = os.fdopen(fd, "wb", buffering=1 << 20)
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        if self._f is None:
            raise StoreError("write after commit or abort")
        return self._f.write(data)

    def commit(self) -> str:
        if self._f is None:
            raise StoreError("commit after abort")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.rename(self.tmp, self.final)
        self._done = True
        _fsync_dir(self.final.parent)
        return self.final.as_uri()

    def abort(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            self._done = True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(Store):
    """Archives as files in one folder; locations are ``file://`` URLs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def open_write(self, name: str) -> StoreWriter:
        if not _NAME.match(name):
            raise StoreError(f"bad archive name {name!r}")
        try:
            # 0700: archives hold whole process memories (secrets, keys) of every namespace.
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            return _FileWriter(self.root / name)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.root}: {exc}") from exc

    def open_read(self, location: str) -> BinaryIO:
        return path_of(location).open("rb")

    def delete(self, location: str) -> bool:
        try:
            path_of(location).unlink()
        except FileNotFoundError:
            return False
        return True

    def exists(self, location: str) -> bool:
        return path_of(location).is_file()

    def clean_partials(self, older_than_s: float = 3600) -> int:
        """Remove temporary files left by a crashed agent, in the per-location and
        per-namespace subfolders too (never following a symlink); returns how many."""
        removed = 0
        cutoff = time.time() - older_than_s
        if not self.root.is_dir():
            return 0
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in filenames:
                if not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX)):
                    continue
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    if p.is_file() and not p.is_symlink() and p.lstat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        return removed


def open_store(destination: str) -> FileStore:
    """The agent's node-local archive folder (``file://`` URL or absolute path)."""
    return FileStore(path_of(destination))


def store_for_location(location: str) -> Store:
    """The store that holds an archive location (for restores and deletes)."""
    return FileStore(path_of(location).parent)
