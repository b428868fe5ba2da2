"""The checkpoint archive: CRIU images -> tar -> zstd [-> age] -> sha256 -> store, and back.

Writing streams: files are read from the images folders (or copied member by member from a
tar the kubelet wrote) into a tar stream, compressed by multi-threaded zstd, encrypted with age
when the location lists recipients, hashed and handed to the store writer; no second full copy
lands on disk. The checksum is the sha256 of the stored bytes (the ciphertext when encrypted),
so a restore verifies exactly the bytes it fetched, encrypted or not.

Reading (``extract_verified``): one pass hashes the stored bytes and unpacks them into a
private folder the caller renames into place only after the checksum matched; on a mismatch
or any error the folder is removed, so nothing unverified is ever used. The bytes unpacked are
the bytes hashed (one stream, no second read to race with a writer), and until the verdict they
are treated as hostile: safe names only, no links or devices, no file opened through a link,
caps on members and on bytes written (a 6.5 KB zstd bomb once became 200 MB on disk before a
late checksum verdict; the caps stop it at the space the node can spare). An earlier design
copied the archive into a scratch file first and unpacked it from there: the archive was
written twice, and staging took 2.9x the time of a plain `tar -x` at 1 GiB. Errors name
neither the host paths nor the hash actually found, so an agent cannot be used as an oracle
for host files.

Layout: ``ckpt.json`` (``ArchiveMetadata``, first member), then ``containers/<name>/...``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final, Literal, Protocol, cast, runtime_checkable

import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ckpt.storage import crypto, pipes

FORMAT_VERSION: Final = 1
METADATA_NAME = "ckpt.json"
# ckpt.json holds ids, names and a few numbers per container; anything near this is not ours.
METADATA_MAX_BYTES = 1 << 20
CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ArchiveError(Exception):
    """The archive is malformed or could not be written."""


class ChecksumError(ArchiveError):
    """The archive's bytes do not match the expected checksum."""


class Cancelled(ArchiveError):
    """The job was cancelled while the archive was being written or read."""


class LimitExceeded(ArchiveError):
    """Unpacking would exceed a size or count cap."""


class ContainerEntry(BaseModel):
    """One dumped container in the archive."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    container_id: str = Field(max_length=256)
    pid: int | None = None
    bundle: str | None = Field(default=None, max_length=4096)
    # Folder of the CRIU images inside the archive, e.g. containers/app[/checkpoint].
    images: str = Field(min_length=1, max_length=1024)
    restore_runtime: str | None = Field(default=None, max_length=64)
    extra: dict[str, Any] = Field(default_factory=dict)


class ArchiveMetadata(BaseModel):
    """ckpt.json: written by the checkpoint pipeline, read (size-bounded) before a restore."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = FORMAT_VERSION
    checkpoint_id: str = Field(min_length=1, max_length=64)
    namespace: str = Field(min_length=1, max_length=63)
    pod: str = Field(min_length=1, max_length=253)
    pod_uid: str = Field(default="", max_length=64)
    node: str = Field(default="", max_length=253)
    runtime: str = Field(min_length=1, max_length=64)
    consistent_cut: bool = True
    leave_running: bool = True
    criu_version: str = Field(default="", max_length=64)
    platform: str = Field(default="", max_length=64)
    gpu: str = Field(default="none", max_length=1024)
    gpu_driver_version: str | None = Field(default=None, max_length=64)
    cuda_pids: list[int] = Field(default_factory=list, max_length=4096)
    created_at: str = Field(default="", max_length=64)
    containers: list[ContainerEntry] = Field(min_length=1, max_length=256)
    # What the Restore flow captures besides CRIU images (pod template, rootfs diff index,
    # emptyDir list); its owner gives it a model of its own.
    capture: dict[str, Any] | None = None

    def container(self, name: str | None) -> ContainerEntry:
        """The named container, or the only one."""
        if name is None:
            if len(self.containers) != 1:
                names = ", ".join(c.name for c in self.containers)
                raise ArchiveError(f"the archive holds several containers ({names}); name one")
            return self.containers[0]
        for c in self.containers:
            if c.name == name:
                return c
        raise ArchiveError(f"the archive holds no container named {name!r}")


def parse_metadata(raw: bytes) -> ArchiveMetadata:
    if len(raw) > METADATA_MAX_BYTES:
        raise ArchiveError(f"{METADATA_NAME} is larger than {METADATA_MAX_BYTES} bytes")
    try:
        return ArchiveMetadata.model_validate_json(raw)
    except ValidationError as exc:
        fmt = None
        with contextlib.suppress(ValueError, AttributeError):
            fmt = json.loads(raw).get("format")
        if fmt != FORMAT_VERSION:
            raise ArchiveError(f"unsupported archive format {fmt!r}") from None
        raise ArchiveError(
            f"bad {METADATA_NAME}: {exc.error_count()} invalid field(s), first at "
            f"{'.'.join(str(x) for x in exc.errors()[0]['loc'])}"
        ) from None



class DumpedImages(Protocol):
    """One container's dump as the writer reads it (the agent's runtimes produce these).

    Exactly one of ``images_dir`` (a directory of CRIU images) or ``source_tar`` (an existing
    uncompressed tar whose members are copied as they are) is set.
    """

    @property
    def name(self) -> str: ...
    @property
    def images_dir(self) -> Path | None: ...
    @property
    def source_tar(self) -> Path | None: ...
    @property
    def delete_source_after(self) -> bool: ...
    @property
    def images_subdir(self) -> str: ...



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
    dumped: Sequence[DumpedImages],
    metadata: ArchiveMetadata,
    *,
    compression: str = "zstd",
    level: int = 1,
    threads: int = -1,
    recipients: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    extra_files: Sequence[tuple[str, Path]] = (),
) -> tuple[str, int]:
    """Stream the archive into ``sink``; returns (sha256 hex, bytes written) of what the sink
    received: with ``recipients`` that is the age ciphertext."""
    if compression not in ("zstd", "none"):
        raise ArchiveError(f"unknown compression {compression!r}")
    hashing = _HashingSink(sink, progress, cancel)
    encryptor: crypto.EncryptingWriter | None = None
    try:
        target: Any = hashing
        if recipients:
            encryptor = crypto.EncryptingWriter(hashing, recipients)
            target = encryptor
        _write_tar(target, dumped, metadata, compression, level, threads, cancel, extra_files)
        if encryptor is not None:
            encryptor.finish()
    except BaseException:
        if encryptor is not None:
            encryptor.abort()
        raise
    finally:
        hashing.finish()
    if progress:
        progress(hashing.size)
    return hashing.sha.hexdigest(), hashing.size


def _write_tar(
    hashing: Any,
    dumped: Sequence[DumpedImages],
    metadata: ArchiveMetadata,
    compression: str,
    level: int,
    threads: int,
    cancel: threading.Event | None,
    extra_files: Sequence[tuple[str, Path]] = (),
) -> None:
    out: Any = hashing
    zwriter = None
    if compression == "zstd":
        # write_checksum is off by default in python-zstandard: without it a flipped bit
        # decodes silently.
        cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        zwriter = cctx.stream_writer(hashing, closefd=False, write_size=CHUNK)
        out = zwriter

    # Stream mode ("w|") never seeks; a 1 MiB record buffer keeps Python's per-write
    # overhead small against hundreds of MiB of memory pages.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        # TarFile.__init__ sets copybufsize (the chunk addfile copies with), but it is
        # undocumented, so typeshed declares it as a constructor argument only.
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]
        meta = metadata.model_dump_json(indent=2).encode()
        if len(meta) > METADATA_MAX_BYTES:
            raise ArchiveError(f"{METADATA_NAME} would exceed {METADATA_MAX_BYTES} bytes")
        info = tarfile.TarInfo(METADATA_NAME)
        info.size = len(meta)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(meta))
        for d in dumped:
            prefix = f"containers/{d.name}"
            if d.images_dir is not None:
                _add_dir(tar, d.images_dir, prefix, cancel)
            elif d.source_tar is not None:
                _copy_tar(tar, d.source_tar, prefix, cancel)
            else:
                raise ArchiveError(f"container {d.name}: nothing was dumped")
        # What the Restore flow captured (ckpt.agent.capture): pod.json, layer diffs and
        # emptyDirs, each a regular file under its archive name.
        for arcname, path in extra_files:
            _check(cancel)
            tar.add(str(path), arcname=_safe_name(arcname), recursive=False)
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


@dataclass(frozen=True)
class ExtractLimits:
    """Caps on what unpacking one archive may produce."""

    max_bytes: int = 1 << 40
    max_members: int = 1_000_000
    # Above this, a file is refused whatever the total (CRIU pages files are the large ones).
    max_member_bytes: int = 1 << 40

    @classmethod
    def for_folder(cls, folder: Path, reserve_bytes: int = 1 << 30) -> ExtractLimits:
        """Never more than the folder's filesystem has free, less a reserve for the node."""
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
        budget = max(0, free - reserve_bytes)
        return cls(max_bytes=budget, max_member_bytes=budget)


def _compare(expected: str, actual: str) -> None:
    if expected != actual:
        # Not the hash found: an agent that hashes whatever it was pointed at would otherwise
        # tell a caller the sha256 of any host file.
        raise ChecksumError(
            "archive checksum mismatch: the stored archive is not the one that was recorded "
            "(corrupt, truncated or replaced); refusing to restore it"
        )


class _HashingReader(io.RawIOBase):
    """Reads the source, hashing and counting; stops on cancellation and past `max_bytes`."""

    def __init__(
        self, src: BinaryIO, cancel: threading.Event | None, max_bytes: int | None = None
    ) -> None:
        self.src = src
        self.sha = hashlib.sha256()
        self.size = 0
        self.cancel = cancel
        self.max_bytes = max_bytes
        # Time spent waiting for the source and hashing: how a one-pass staging splits.
        self.read_s = 0.0
        self.hash_s = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled while reading the archive")
        t0 = time.perf_counter()
        data = self.src.read(len(b))
        t1 = time.perf_counter()
        n = len(data)
        memoryview(b)[:n] = data
        self.sha.update(data)
        self.read_s += t1 - t0
        self.hash_s += time.perf_counter() - t1
        self.size += n
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise LimitExceeded("the stored archive is larger than this node can stage")
        return n

    def drain(self) -> None:
        """Reads (and hashes) whatever follows the end of the tar: the checksum covers the
        whole stored object, not only the part the tar reader needed."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass


def verify_checksum(
    src: BinaryIO, expected_sha256: str, *, cancel: threading.Event | None = None
) -> int:
    """Hash the whole stored archive and compare; returns its size."""
    reader = _HashingReader(src, cancel)
    reader.drain()
    _compare(expected_sha256, reader.sha.hexdigest())
    return reader.size


def make_scratch(parent: Path, name: str) -> Path:
    """A private (0700) folder for one job's staged archive and extracted files."""
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = parent / name
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
    return path


@runtime_checkable
class _Peekable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def peek(self, size: int = 0, /) -> bytes: ...


def _peekable(src: BinaryIO) -> _Peekable:
    """``src`` itself when it can peek (a buffered file), else ``src`` behind a read buffer."""
    if isinstance(src, _Peekable):
        return src
    if isinstance(src, io.RawIOBase | io.BufferedIOBase):
        return io.BufferedReader(src, buffer_size=CHUNK)
    raise TypeError(f"cannot read an archive from a {type(src).__name__}")


def _plaintext(
    src: BinaryIO, identities: Sequence[Any]
) -> tuple[_Peekable, Callable[[], None]]:
    """The archive's plaintext (decrypting when it is age ciphertext) and how to close it."""
    buffered = _peekable(src)
    head = buffered.peek(len(crypto.AGE_MAGIC))[: len(crypto.AGE_MAGIC)]
    if crypto.looks_encrypted(head):
        reader = crypto.DecryptingReader(buffered, identities)
        return io.BufferedReader(reader, buffer_size=CHUNK), reader.close
    return buffered, lambda: None


class _Forward(io.RawIOBase):
    """A stream that seeks forward only, by reading: what tarfile's seekable mode needs.

    tarfile's stream mode ("r|") copies every block through its own buffer several times
    (6.3 s against 2.2 s of plain zstd decompression for 1 GiB of pages, measured); its
    seekable mode reads headers straight from the file and only ever seeks forward while
    members are read in order, so a forward-only stream is enough.
    """

    def __init__(self, src: Any) -> None:
        self.src = src
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n: int = self.src.readinto(b)
        self.pos += n
        return n

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self.src.read(size)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seeks only forward from the start or current spot")
        if offset < self.pos:
            raise io.UnsupportedOperation(f"cannot seek back from {self.pos} to {offset}")
        while self.pos < offset:
            if not self.read(min(CHUNK, offset - self.pos)):
                break
        return self.pos


@contextlib.contextmanager
def _tar_stream(src: Any, *, read_ahead: bool) -> Iterator[tarfile.TarFile]:
    stream: Any = src if hasattr(src, "peek") else io.BufferedReader(src, buffer_size=CHUNK)
    if stream.peek(4)[:4] == ZSTD_MAGIC:
        dctx = zstandard.ZstdDecompressor()
        stream = dctx.stream_reader(stream, read_size=CHUNK, read_across_frames=True)
    if not read_ahead:
        with tarfile.open(fileobj=_Forward(stream), mode="r:") as tar:
            yield tar
        return
    # Reading, hashing and decompressing in one thread, parsing and writing files in the
    # caller's: both release the GIL for most of their time, so each gets a core.
    ahead = pipes.ReadAhead(stream, CHUNK, name="archive-read")
    try:
        with tarfile.open(fileobj=_Forward(ahead), mode="r:") as tar:
            yield tar
    finally:
        ahead.close()


def _read_metadata_member(tar: tarfile.TarFile) -> ArchiveMetadata:
    member = tar.next()
    if member is None:
        raise ArchiveError("empty archive")
    if member.name != METADATA_NAME or not member.isfile():
        raise ArchiveError(f"first member is {member.name!r}, not {METADATA_NAME}")
    if member.size > METADATA_MAX_BYTES:
        raise ArchiveError(f"{METADATA_NAME} is larger than {METADATA_MAX_BYTES} bytes")
    f = tar.extractfile(member)
    assert f is not None
    return parse_metadata(f.read(METADATA_MAX_BYTES + 1))


@dataclass(frozen=True)
class Verified:
    """What `extract_verified` unpacked: the metadata, the stored size, and how long its
    reading thread waited for the source and spent hashing (the rest of the pass is
    decompressing, decrypting and writing files, overlapping with both)."""

    metadata: ArchiveMetadata
    size: int
    read_s: float
    hash_s: float


def extract_verified(
    src: BinaryIO,
    dest: Path,
    expected_sha256: str,
    *,
    identities: Sequence[Any] = (),
    limits: ExtractLimits | None = None,
    cancel: threading.Event | None = None,
) -> Verified:
    """Unpack the stored archive ``src`` into ``dest`` (a new folder in a private one) while
    hashing the stored bytes, then compare with ``expected_sha256``. On a mismatch, an
    oversize source or any failure, ``dest`` is removed: callers act on nothing in it before
    this returns."""
    limits = limits or ExtractLimits()
    dest.mkdir(mode=0o700)
    # The stored bytes count against the same budget as what they unpack to.
    hashing = _HashingReader(src, cancel, max_bytes=limits.max_bytes)
    try:
        try:
            metadata = extract_archive(
                cast(BinaryIO, hashing), dest, identities=identities, limits=limits,
                cancel=cancel,
            )
        except ArchiveError as exc:
            if isinstance(exc, Cancelled):
                raise
            # A tampered archive usually breaks zstd, age or tar before its end: if the
            # stored bytes are not the recorded ones, that is the error to report.
            try:
                hashing.drain()
            except ArchiveError:
                raise exc from None
            _compare(expected_sha256, hashing.sha.hexdigest())
            raise
        hashing.drain()
        _compare(expected_sha256, hashing.sha.hexdigest())
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Verified(metadata, hashing.size, hashing.read_s, hashing.hash_s)


def extract_archive(
    src: BinaryIO,
    dest: Path,
    *,
    identities: Sequence[Any] = (),
    limits: ExtractLimits | None = None,
    cancel: threading.Event | None = None,
) -> ArchiveMetadata:
    """Unpack an archive into ``dest``: regular files and folders under safe names only,
    within ``limits``. Decrypts age ciphertext with ``identities``. On any failure
    everything unpacked is removed. Whether the bytes are the recorded ones is
    ``extract_verified``'s question."""
    limits = limits or ExtractLimits()
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    budget = _Budget(limits)
    buf = memoryview(bytearray(CHUNK))
    close: Callable[[], None] = lambda: None  # noqa: E731 - replaced once decryption starts
    try:
        plain, close = _plaintext(src, identities)
        with _tar_stream(plain, read_ahead=True) as tar:
            metadata = _read_metadata_member(tar)
            # next(), not iteration: iteration would yield the metadata member again.
            while (member := tar.next()) is not None:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled while unpacking the archive")
                budget.member(member)
                _extract_member(tar, member, dest, budget, buf)
    except (zstandard.ZstdError, tarfile.TarError) as exc:
        _empty(dest)
        kind = "zstd" if isinstance(exc, zstandard.ZstdError) else "tar"
        raise ArchiveError(f"{kind}: {exc}") from exc
    except crypto.CryptoError as exc:
        _empty(dest)
        raise ArchiveError(str(exc)) from exc
    except BaseException:
        _empty(dest)
        raise
    finally:
        close()
    return metadata


class _Budget:
    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.members = 0
        self.bytes = 0

    def member(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise LimitExceeded(f"the archive holds more than {self.limits.max_members} members")
        if member.size > self.limits.max_member_bytes:
            raise LimitExceeded("a member of the archive is larger than the cap")
        if self.bytes + member.size > self.limits.max_bytes:
            raise LimitExceeded(
                "unpacking the archive would exceed the space allowed for it "
                f"({self.limits.max_bytes} bytes)"
            )

    def wrote(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise LimitExceeded("unpacking the archive exceeded the space allowed for it")


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: Path,
    budget: _Budget,
    buf: memoryview,
) -> None:
    name = _safe_name(member.name)
    target = dest / name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        return
    if not member.isfile() or member.issparse():
        raise ArchiveError(f"unsupported member type in {member.name!r}")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Straight from the archive stream (at the member's data after its header): extractfile's
    # buffered reader would copy every chunk once more.
    stream = cast(_Forward, tar.fileobj)  # what _tar_stream opened the tar on
    stream.seek(member.offset_data)
    # O_NOFOLLOW|O_EXCL: a member can neither write through a symlink nor replace a file.
    fd = os.open(
        target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        left = member.size
        while left:
            n = stream.readinto(buf[: min(left, len(buf))])
            if not n:
                raise ArchiveError(f"the archive ends inside {member.name!r}")
            budget.wrote(n)
            view = buf[:n]
            while view:
                view = view[os.write(fd, view):]
            left -= n
        # No setuid/setgid/sticky bits from an archive; the scratch folder above is 0700.
        os.fchmod(fd, member.mode & 0o777)
    finally:
        os.close(fd)


def read_metadata(src: BinaryIO, identities: Sequence[Any] = ()) -> ArchiveMetadata:
    """Only the metadata member (the first one); reads no further."""
    close: Callable[[], None] = lambda: None  # noqa: E731 - replaced once decryption starts
    try:
        plain, close = _plaintext(src, identities)
        # Only the first member: reading ahead would fetch megabytes nobody reads.
        with _tar_stream(plain, read_ahead=False) as tar:
            return _read_metadata_member(tar)
    except crypto.CryptoError as exc:
        raise ArchiveError(str(exc)) from exc
    except (zstandard.ZstdError, tarfile.TarError) as exc:
        raise ArchiveError("not a ckpt archive") from exc
    finally:
        close()


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
