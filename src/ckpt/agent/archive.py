"""The checkpoint archive: CRIU images -> tar -> zstd -> sha256 -> store, and back.

Writing streams: files are read from the images folders (or copied member by member from a
tar the kubelet wrote) into a tar stream, compressed by multi-threaded zstd, hashed and handed
to the store writer; no second full copy lands on disk. Reading verifies the sha256 of the
stored bytes before anything is extracted (``verify_checksum``), and hashes again while
extracting so that a file changed in between is caught too.

Layout: ``ckpt.json`` (metadata, first member), then ``containers/<name>/...`` per container.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import queue
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import zstandard

from ckpt.agent.runtimes.base import DumpedContainer

FORMAT_VERSION = 1
METADATA_NAME = "ckpt.json"
CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ArchiveError(Exception):
    """The archive is malformed or could not be written."""


class ChecksumError(ArchiveError):
    """The archive's bytes do not match the expected checksum."""


class Cancelled(ArchiveError):
    """The job was cancelled while the archive was being written or read."""


def container_entry(d: DumpedContainer) -> dict[str, Any]:
    """The metadata entry of one dumped container."""
    c = d.container
    images = f"containers/{c.name}"
    if d.images_subdir:
        images += f"/{d.images_subdir}"
    return {
        "name": c.name,
        "container_id": c.ref.container_id,
        "pid": c.pid,
        "bundle": str(c.bundle) if c.bundle else None,
        "images": images,
        "restore_runtime": d.restore_runtime,
        "extra": c.extra,
    }


# ----------------------------------------------------------------------------- writing


class _HashingSink(io.RawIOBase):
    """Counts and hashes what passes through to the store; stops on cancellation.

    Hashing and writing run in a thread of their own, fed through a short queue: the thread
    that reads images and feeds zstd would otherwise spend as long on sha256 and the store's
    writes as on everything else, while zstd's workers wait for input. Call `finish` (always).
    """

    def __init__(
        self, sink: Any, progress: Callable[[int], None] | None, cancel: threading.Event | None
    ) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self.cancel = cancel
        self._reported = 0
        # None marks the end of the stream.
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="archive-writer", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled while storing the archive")
        if self._error is not None:
            raise self._error
        # A copy: zstd reuses its output buffer as soon as this returns.
        chunk = bytes(data)
        if chunk:
            self._queue.put(chunk)
        return len(chunk)

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking chunks so the producer never blocks on a full queue
            try:
                self.sha.update(chunk)
                self.sink.write(chunk)
            except BaseException as exc:  # handed to the producing thread by write/finish
                self._error = exc
                continue
            self.size += len(chunk)
            if self.progress and self.size - self._reported >= 16 * CHUNK:
                self._reported = self.size
                self.progress(self.size)

    def finish(self) -> None:
        """Waits until everything queued is hashed and written; raises a writer's error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _safe_name(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not name or name.startswith("/"):
        raise ArchiveError(f"unsafe member name {name!r}")
    return str(p)


def write_archive(
    sink: Any,
    dumped: list[DumpedContainer],
    metadata: dict[str, Any],
    *,
    compression: str = "zstd",
    level: int = 1,
    threads: int = -1,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, int]:
    """Stream the archive into ``sink``; returns (sha256 hex, bytes written)."""
    if compression not in ("zstd", "none"):
        raise ArchiveError(f"unknown compression {compression!r}")
    hashing = _HashingSink(sink, progress, cancel)
    try:
        _write_tar(hashing, dumped, metadata, compression, level, threads, cancel)
    finally:
        hashing.finish()
    if progress:
        progress(hashing.size)
    return hashing.sha.hexdigest(), hashing.size


def _write_tar(
    hashing: _HashingSink,
    dumped: list[DumpedContainer],
    metadata: dict[str, Any],
    compression: str,
    level: int,
    threads: int,
    cancel: threading.Event | None,
) -> None:
    out: Any = hashing
    zwriter = None
    if compression == "zstd":
        # write_checksum: without it a flipped bit decodes silently (field notes).
        cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        zwriter = cctx.stream_writer(hashing, closefd=False, write_size=CHUNK)
        out = zwriter

    # Stream mode ("w|") never seeks; a 1 MiB record buffer keeps Python's per-write
    # overhead small against hundreds of MiB of memory pages.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        tar.copybufsize = CHUNK
        meta = json.dumps(metadata, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(METADATA_NAME)
        info.size = len(meta)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(meta))
        for d in dumped:
            prefix = f"containers/{d.container.name}"
            if d.images_dir is not None:
                _add_dir(tar, d.images_dir, prefix, cancel)
            elif d.source_tar is not None:
                _copy_tar(tar, d.source_tar, prefix, cancel)
            else:
                raise ArchiveError(f"container {d.container.name}: nothing was dumped")
    if zwriter is not None:
        zwriter.flush(zstandard.FLUSH_FRAME)
        zwriter.close()


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled while storing the archive")


def _add_dir(
    tar: tarfile.TarFile, root: Path, prefix: str, cancel: threading.Event | None
) -> None:
    tar.add(str(root), arcname=prefix, recursive=False)
    for path in sorted(root.rglob("*")):
        _check(cancel)
        arcname = f"{prefix}/{path.relative_to(root).as_posix()}"
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ArchiveError(f"unexpected non-regular file in the images: {path}")
        tar.add(str(path), arcname=arcname, recursive=False)


def _copy_tar(
    tar: tarfile.TarFile, source: Path, prefix: str, cancel: threading.Event | None
) -> None:
    """Copy every member of an uncompressed tar (the kubelet's) under ``prefix``."""
    with tarfile.open(source, mode="r|*") as src:
        for member in src:
            _check(cancel)
            name = _safe_name(member.name.rstrip("/") or ".")
            member.name = prefix if name == "." else f"{prefix}/{name}"
            if member.isfile():
                tar.addfile(member, src.extractfile(member))
            elif member.isdir():
                tar.addfile(member)
            else:
                raise ArchiveError(f"{source}: unsupported member type in {member.name!r}")


# ----------------------------------------------------------------------------- reading


class _HashingReader(io.RawIOBase):
    """Reads the stored bytes, hashing them; ``peek4`` looks at the magic without consuming."""

    def __init__(self, src: BinaryIO, cancel: threading.Event | None) -> None:
        self.src = src
        self.sha = hashlib.sha256()
        self.size = 0
        self.cancel = cancel
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek4(self) -> bytes:
        while len(self._pending) < 4:
            more = self.src.read(4 - len(self._pending))
            if not more:
                break
            self._pending += more
        return self._pending[:4]

    def readinto(self, b: Any) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled while reading the archive")
        view = memoryview(b)
        if self._pending:
            n = min(len(view), len(self._pending))
            data = self._pending[:n]
            self._pending = self._pending[n:]
        else:
            data = self.src.read(len(view))
            n = len(data)
        view[:n] = data
        self.sha.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        while self.readinto(bytearray(CHUNK)):
            pass


def _compare(expected: str, actual: str) -> None:
    if expected != actual:
        raise ChecksumError(
            f"archive checksum mismatch: expected sha256:{expected}, found sha256:{actual}; "
            "the archive is corrupt or was replaced, refusing to restore it"
        )


def verify_checksum(
    src: BinaryIO, expected_sha256: str, *, cancel: threading.Event | None = None
) -> int:
    """Hash the whole stored archive and compare; returns its size."""
    reader = _HashingReader(src, cancel)
    reader.drain()
    _compare(expected_sha256, reader.sha.hexdigest())
    return reader.size


@contextlib.contextmanager
def _tar_stream(reader: _HashingReader) -> Iterator[tarfile.TarFile]:
    stream: Any = io.BufferedReader(reader, buffer_size=CHUNK)
    if reader.peek4() == ZSTD_MAGIC:
        dctx = zstandard.ZstdDecompressor()
        stream = dctx.stream_reader(stream, read_size=CHUNK, read_across_frames=True)
    with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
        yield tar


def extract_archive(
    src: BinaryIO,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Extract into ``dest`` (regular files and folders only); returns the metadata.

    With ``expected_sha256`` the bytes are hashed while extracting; on a mismatch everything
    extracted is removed and ChecksumError raised. A damaged archive usually breaks zstd or
    tar before its end: the rest is then hashed too, so the caller hears the real cause (the
    checksum) rather than a decoder's complaint.
    """
    reader = _HashingReader(src, cancel)
    metadata: dict[str, Any] | None = None
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _tar_stream(reader) as tar:
            for member in tar:
                if metadata is None:
                    if member.name != METADATA_NAME or not member.isfile():
                        raise ArchiveError(f"first member is {member.name!r}, not {METADATA_NAME}")
                    f = tar.extractfile(member)
                    assert f is not None
                    metadata = json.loads(f.read())
                    continue
                _extract_member(tar, member, dest)
        reader.drain()
        if expected_sha256 is not None:
            _compare(expected_sha256, reader.sha.hexdigest())
    except (zstandard.ZstdError, tarfile.TarError) as exc:
        _empty(dest)
        if expected_sha256 is not None:
            reader.drain()
            _compare(expected_sha256, reader.sha.hexdigest())
        kind = "zstd" if isinstance(exc, zstandard.ZstdError) else "tar"
        raise ArchiveError(f"{kind}: {exc}") from exc
    except BaseException:
        _empty(dest)
        raise
    if metadata is None:
        raise ArchiveError("empty archive")
    if metadata.get("format") != FORMAT_VERSION:
        raise ArchiveError(f"unsupported archive format {metadata.get('format')!r}")
    return metadata


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    name = _safe_name(member.name)
    target = dest / name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if not member.isfile():
        raise ArchiveError(f"unsupported member type in {member.name!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    f = tar.extractfile(member)
    assert f is not None
    with target.open("wb") as out:
        shutil.copyfileobj(f, out, CHUNK)
    target.chmod(member.mode & 0o777)


def read_metadata(src: BinaryIO) -> dict[str, Any]:
    """Only the metadata member (the first one); reads no further."""
    reader = _HashingReader(src, None)
    with _tar_stream(reader) as tar:
        member = tar.next()
        if member is None or member.name != METADATA_NAME:
            raise ArchiveError("not a ckpt archive")
        f = tar.extractfile(member)
        assert f is not None
        result: dict[str, Any] = json.loads(f.read())
        return result


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
