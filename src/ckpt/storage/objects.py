"""Reading, writing, listing and deleting archives in a storage location.

S3 goes through obstore (object_store underneath); ``file`` locations are folders under the
agent's own archive folder (a host path it was configured with), never a path a request names.

S3 writes are multipart uploads: ``open_write`` returns a writer that buffers one part at a
time, uploads up to ``MAX_CONCURRENCY`` parts in parallel, completes the upload only on
``commit`` (after the caller knows the hash) and aborts it otherwise, so no partial object and
no pending upload remains after a failure. Memory is bounded by about
``PART_SIZE * (MAX_CONCURRENCY + 1)``.

Timeouts: object_store's default 30 s *whole-request* timeout would fail any part upload that
takes longer (a 32 MiB part over a slow link), so the whole-request limit is generous and a
stalled connection is caught by the per-read timeout instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import io
import os
import re
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self

import obstore
import obstore.exceptions as obx
from obstore.store import S3Store

from ckpt.apis.storagelocation import Destination, LocationType

if TYPE_CHECKING:
    # These obstore types exist in its stubs only, not at run time.
    from obstore import WritableFile
    from obstore.store import ClientConfig, RetryConfig, S3Config

# 32 MiB parts: S3 allows 10,000 parts per upload, so objects up to 312 GiB (a node's GPU
# memory plus host memory of a large training pod) fit; 4 parts in flight keep a link busy
# while bounding the writer's memory to about 160 MiB.
PART_SIZE = 32 << 20
MAX_CONCURRENCY = 4
READ_CHUNK = 8 << 20
CONNECT_TIMEOUT = "10s"
# Per read on the socket: a server that stops answering is noticed in a minute.
READ_TIMEOUT = "60s"
# Whole request (one part, one GET of the whole object): long enough for a slow link.
REQUEST_TIMEOUT = "1h"
PARTIAL_SUFFIX = ".partial"
# obstore raises its own exception classes, and Python's built-in ones for some kinds
# (FileNotFoundError for a missing object, PermissionError, timeouts and connection errors
# as OSError).
_ERRORS: tuple[type[BaseException], ...] = (obx.BaseError, OSError)
_NOT_FOUND: tuple[type[BaseException], ...] = (obx.NotFoundError, FileNotFoundError)
_HTTP_STATUS = re.compile(r"non-2xx status code: (\d{3})")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class StorageError(Exception):
    """A storage operation failed. Messages name the location and key, never credentials or
    host paths."""


class ObjectNotFound(StorageError):
    """The archive is not in the location."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime


class ObjectWriter(ABC):
    """A file-like sink: ``commit`` publishes the object, leaving the context without it
    discards everything written."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None:
        """Discard what was written (idempotent)."""

    def flush(self) -> None:  # noqa: B027 - a no-op on purpose: commit makes data durable
        """File-like API for compressors."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class LocationStore(ABC):
    def __init__(self, dest: Destination) -> None:
        self.dest = dest

    @abstractmethod
    def url(self, key: str) -> str:
        """The archive's URL (the Checkpoint's restorePath)."""

    @abstractmethod
    def key_of(self, url: str) -> str:
        """The key of a URL that lies in this location; StorageError if it does not."""

    @abstractmethod
    def open_write(self, key: str) -> ObjectWriter: ...

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove an object; False if it was not there."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects under the location's prefix + ``prefix`` (complete archives only)."""

    @abstractmethod
    def check(self) -> None:
        """Raises StorageError unless the location can be listed with these credentials."""

    def _full_prefix(self, prefix: str) -> str:
        return "/".join(p for p in (self.dest.prefix, prefix.strip("/")) if p)

    def _check_key(self, key: str) -> str:
        parts = key.split("/")
        if not key or not all(_SEGMENT.match(p) for p in parts):
            raise StorageError("bad archive key")
        if self.dest.prefix and not key.startswith(self.dest.prefix + "/"):
            raise StorageError(f"key outside location {self.dest.location!r}")
        return key


# ---------------------------------------------------------------------------------------- S3


def _s3_store(dest: Destination) -> S3Store:
    config: S3Config = {
        "virtual_hosted_style_request": not dest.path_style,
    }
    if dest.region:
        config["region"] = dest.region
    if dest.endpoint:
        config["endpoint"] = dest.endpoint
    if dest.credentials is not None:
        config["access_key_id"] = dest.credentials.access_key_id.get_secret_value()
        config["secret_access_key"] = dest.credentials.secret_access_key.get_secret_value()
        if dest.credentials.session_token is not None:
            config["session_token"] = dest.credentials.session_token.get_secret_value()
    else:
        # No ambient credentials from the agent's environment or instance metadata: a
        # location without a Secret is anonymous, never "whatever the node can reach".
        config["skip_signature"] = True
    client: ClientConfig = {
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "timeout": REQUEST_TIMEOUT,
        "allow_http": bool(dest.endpoint and dest.endpoint.startswith("http://")),
    }
    retry: RetryConfig = {
        "max_retries": 3,
        "retry_timeout": dt.timedelta(minutes=3),
        "backoff": {
            "init_backoff": dt.timedelta(milliseconds=100),
            "max_backoff": dt.timedelta(seconds=5),
            "base": 2,
        },
    }
    try:
        return S3Store(dest.bucket, config=config, client_options=client, retry_config=retry)
    except _ERRORS as exc:
        raise StorageError(
            f"location {dest.location!r}: bad S3 settings ({type(exc).__name__})"
        ) from None


def describe(exc: BaseException, dest: Destination, what: str) -> StorageError:
    """A clean error for an obstore failure: kind and location, no credentials."""
    where = f"location {dest.location!r}"
    if isinstance(exc, _NOT_FOUND):
        return ObjectNotFound(f"{what}: not found in {where}")
    if isinstance(exc, obx.PermissionDeniedError | obx.UnauthenticatedError | PermissionError):
        return StorageError(
            f"{what}: access denied by {where} (check its credentials Secret and bucket policy)"
        )
    text = str(exc)
    for marker, reason in (
        ("InvalidAccessKeyId", "the access key is unknown to the server"),
        ("SignatureDoesNotMatch", "the secret key is wrong"),
        ("AccessDenied", "access denied"),
        ("NoSuchBucket", "the bucket does not exist"),
    ):
        if marker in text:
            return StorageError(
                f"{what}: {reason} ({where}; check its credentials Secret and bucket)"
            )
    status = _HTTP_STATUS.search(text)
    if status:
        return StorageError(f"{what}: {where} answered HTTP {status.group(1)}")
    lowered = text.lower()
    if any(m in lowered for m in ("connect", "timed out", "operation timed", "error sending")):
        return StorageError(f"{what}: {where} is unreachable ({dest.endpoint or 'AWS'})")
    return StorageError(f"{what}: {where} failed ({type(exc).__name__})")


class _S3Writer(ObjectWriter):
    def __init__(self, store: S3Store, key: str, dest: Destination) -> None:
        self._dest = dest
        self._key = key
        # open_writer buffers PART_SIZE bytes, then starts a multipart upload; its context
        # exit with an exception aborts the upload (AbortMultipartUpload), a clean close
        # completes it.
        self._w: WritableFile = obstore.open_writer(
            store, key, buffer_size=PART_SIZE, max_concurrency=MAX_CONCURRENCY
        )
        self._open = True

    def write(self, data: bytes | memoryview) -> int:
        if not self._open:
            raise StorageError("write after commit or abort")
        try:
            return self._w.write(data)
        except _ERRORS as exc:
            raise describe(exc, self._dest, "upload") from exc

    def commit(self) -> None:
        if not self._open:
            raise StorageError("commit after abort")
        self._open = False
        try:
            self._w.close()
        except _ERRORS as exc:
            self._abort_quietly()
            raise describe(exc, self._dest, "upload") from exc

    def abort(self) -> None:
        if self._open:
            self._open = False
            self._abort_quietly()

    def _abort_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._w.__exit__(_UploadAborted, _UploadAborted(), None)


class _UploadAborted(Exception):
    pass


class _StreamReader(io.RawIOBase):
    """A readable file over obstore's chunk stream (bounded memory)."""

    def __init__(self, chunks: Iterator[Any], dest: Destination) -> None:
        self._chunks = chunks
        self._dest = dest
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            except _ERRORS as exc:
                raise describe(exc, self._dest, "download") from exc
            self._buf = memoryview(bytes(chunk))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class S3LocationStore(LocationStore):
    def __init__(self, dest: Destination) -> None:
        super().__init__(dest)
        self._store = _s3_store(dest)

    def url(self, key: str) -> str:
        return f"s3://{self.dest.bucket}/{key}"

    def key_of(self, url: str) -> str:
        head = f"s3://{self.dest.bucket}/"
        if not url.startswith(head):
            raise StorageError(f"the archive is not in location {self.dest.location!r}")
        return self._check_key(url.removeprefix(head))

    def open_write(self, key: str) -> ObjectWriter:
        return _S3Writer(self._store, self._check_key(key), self.dest)

    def open_read(self, key: str) -> BinaryIO:
        try:
            result = obstore.get(self._store, self._check_key(key))
        except _ERRORS as exc:
            raise describe(exc, self.dest, "download") from exc
        raw = _StreamReader(iter(result.stream(min_chunk_size=READ_CHUNK)), self.dest)
        return io.BufferedReader(raw, buffer_size=1 << 20)

    def delete(self, key: str) -> bool:
        key = self._check_key(key)
        try:
            obstore.head(self._store, key)
        except _NOT_FOUND:
            return False
        except _ERRORS as exc:
            raise describe(exc, self.dest, "delete") from exc
        try:
            obstore.delete(self._store, key)
        except _ERRORS as exc:
            raise describe(exc, self.dest, "delete") from exc
        return True

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full = self._full_prefix(prefix)
        out: list[ObjectInfo] = []
        try:
            for batch in obstore.list(self._store, prefix=full or None):
                for meta in batch:
                    out.append(
                        ObjectInfo(meta["path"], int(meta["size"]), meta["last_modified"])
                    )
        except _ERRORS as exc:
            raise describe(exc, self.dest, "list") from exc
        return out

    def check(self) -> None:
        try:
            stream = obstore.list(self._store, prefix=self.dest.prefix or None, chunk_size=1)
            next(iter(stream), None)
        except _ERRORS as exc:
            raise describe(exc, self.dest, "check") from exc


# -------------------------------------------------------------------------------------- file


def _open_dir_nofollow(root_fd: int, parts: list[str], create: bool) -> int:
    """Walks ``parts`` below ``root_fd`` one openat at a time, never through a symlink;
    creates missing folders 0700 when asked. Returns a new directory descriptor."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


class _FileWriter(ObjectWriter):
    def __init__(self, dir_fd: int, name: str) -> None:
        self._dir_fd = dir_fd
        self.name = name
        self.tmp = f".{name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        fd = os.open(
            self.tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        self._f: BinaryIO | None = os.fdopen(fd, "wb", buffering=1 << 20)
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        if self._f is None:
            raise StorageError("write after commit or abort")
        return self._f.write(data)

    def commit(self) -> None:
        if self._f is None:
            raise StorageError("commit after abort")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        # rename within one directory descriptor: a symlink swapped in for a parent folder
        # in the meantime cannot redirect it.
        os.rename(self.tmp, self.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._done = True
        os.fsync(self._dir_fd)
        os.close(self._dir_fd)

    def abort(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp, dir_fd=self._dir_fd)
            os.close(self._dir_fd)


class FileLocationStore(LocationStore):
    """Archives under ``root`` (the agent's archive folder) / prefix / namespace, folders 0700,
    files 0600, written to a temporary name and renamed, never following a symlink."""

    def __init__(self, dest: Destination, root: Path) -> None:
        super().__init__(dest)
        self.root = root

    def _root_fd(self) -> int:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(
                f"location {self.dest.location!r}: the node's archive folder is unusable "
                f"({errno.errorcode.get(exc.errno or 0, 'error')})"
            ) from exc
        return fd

    def _split(self, key: str) -> tuple[list[str], str]:
        parts = self._check_key(key).split("/")
        return parts[:-1], parts[-1]

    def url(self, key: str) -> str:
        return (self.root / key).as_uri()

    def key_of(self, url: str) -> str:
        head = self.root.as_uri().rstrip("/") + "/"
        if not url.startswith(head):
            raise StorageError(f"the archive is not in location {self.dest.location!r}")
        return self._check_key(url.removeprefix(head))

    def open_write(self, key: str) -> ObjectWriter:
        folders, name = self._split(key)
        root = self._root_fd()
        try:
            dir_fd = _open_dir_nofollow(root, folders, create=True)
        except OSError as exc:
            raise StorageError(
                f"location {self.dest.location!r}: cannot create the archive folder "
                f"({errno.errorcode.get(exc.errno or 0, 'error')})"
            ) from exc
        finally:
            os.close(root)
        try:
            return _FileWriter(dir_fd, name)
        except OSError as exc:
            os.close(dir_fd)
            raise StorageError(
                f"location {self.dest.location!r}: cannot write the archive "
                f"({errno.errorcode.get(exc.errno or 0, 'error')})"
            ) from exc

    def _open_file(self, key: str) -> int:
        folders, name = self._split(key)
        root = self._root_fd()
        try:
            dir_fd = _open_dir_nofollow(root, folders, create=False)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"archive not found in location {self.dest.location!r}") from exc
        except OSError as exc:
            raise StorageError(
                f"location {self.dest.location!r}: cannot open the archive "
                f"({errno.errorcode.get(exc.errno or 0, 'error')})"
            ) from exc
        finally:
            os.close(root)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(f"location {self.dest.location!r}: the archive is not a file")
        return fd

    def open_read(self, key: str) -> BinaryIO:
        return os.fdopen(self._open_file(key), "rb", buffering=1 << 20)

    def delete(self, key: str) -> bool:
        folders, name = self._split(key)
        root = self._root_fd()
        try:
            dir_fd = _open_dir_nofollow(root, folders, create=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(root)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full = self._full_prefix(prefix)
        out: list[ObjectInfo] = []
        base = self.root / full if full else self.root
        if not base.is_dir() or base.is_symlink():
            return out
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            for fname in filenames:
                if fname.endswith(PARTIAL_SUFFIX):
                    continue
                path = Path(dirpath) / fname
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                out.append(
                    ObjectInfo(
                        path.relative_to(self.root).as_posix(),
                        st.st_size,
                        dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
                    )
                )
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        return out

    def check(self) -> None:
        os.close(self._root_fd())


def open_location(dest: Destination, file_root: Path | None = None) -> LocationStore:
    """The store of a resolved location; ``file_root`` is the agent's archive folder."""
    if dest.type is LocationType.s3:
        return S3LocationStore(dest)
    if file_root is None:
        raise StorageError(
            f"location {dest.location!r} is node-local (type file): only an agent can use it"
        )
    return FileLocationStore(dest, file_root)
