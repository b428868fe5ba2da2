"""The agent's node-local archive folder: its root, removal of archives its jobs wrote, and
clean-up of the ``.partial`` files a crashed agent leaves. Archives are written and read
through storage locations (``ckpt.storage.objects``), whose file writer streams into a
temporary name and renames on commit, so a crash leaves only such a ``.partial`` file.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

# The suffix the file location's writer gives its temporary files: what clean_partials removes.
from ckpt.storage.objects import PARTIAL_SUFFIX

__all__ = ["PARTIAL_SUFFIX", "FileStore", "StoreError", "open_store", "path_of",
           "store_for_location"]



class StoreError(Exception):
    """A store could not be opened, written or read."""


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


class FileStore:
    """Archives as files in one folder; locations are ``file://`` URLs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def delete(self, location: str) -> bool:
        """Remove an archive; False if it was not there."""
        try:
            path_of(location).unlink()
        except FileNotFoundError:
            return False
        return True

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


def store_for_location(location: str) -> FileStore:
    """The store that holds an archive location (for restores and deletes)."""
    return FileStore(path_of(location).parent)
