"""The checkpoint pipeline of the node agent.

This is the interface the agent's HTTP service and job manager call:

* ``await run_checkpoint(request, ctx, progress) -> CheckpointResult``

``progress(phase, bytes_done)`` is called from the event loop thread (never from a worker
thread) whenever the phase changes and while the archive is being stored. Phases:
``resolving``, ``waiting`` (another job is dumping one of the containers), ``gpu-lock``,
``freezing``, ``dumping``, ``storing``, ``done``. Restores are not run here: the agent stages
an archive (``ckpt.agent.staging``) and the ckpt-runc wrapper restores it as a Pod.

The coroutine is cancellable: a ``CancelledError`` removes partial files (work folder and
the store's temporary file; a final archive path is never half written), thaws frozen
containers and resumes locked CUDA processes before it propagates. Failures raise
``PipelineError`` (or a subclass) whose message is fit for the job's ``error`` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt.agent import capture
from ckpt.agent.criu import CriuInfo
from ckpt.agent.gpu import GpuDriver, GpuError
from ckpt.agent.platform import platform_string
from ckpt.agent.runtimes.base import (
    ContainerRef,
    ContainerRuntimeError,
    DumpedContainer,
    ResolvedContainer,
    Runtime,
    frozen,
)
from ckpt.agent.store import FileStore
from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.contract.agent import (
    CheckpointRequest,
    CheckpointResult,
    GpuMode,
    Timings,
)
from ckpt.storage import archive, crypto
from ckpt.storage.objects import LocationStore, StorageError, open_location

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int], None]


class PipelineError(Exception):
    """A checkpoint failed; ``str(exc)`` is the message for the job's error."""


class GpuRequiredError(PipelineError):
    """``gpu: required`` on a node or target without usable CUDA checkpoint support."""


@dataclass
class PipelineContext:
    """Everything a pipeline run needs from the agent; built once by the service."""

    #: Backends by name; checkpoints use ``default_runtime`` unless the call names another.
    runtimes: Mapping[str, Runtime]
    default_runtime: str
    #: The node-local archive folder: file locations live under it, and a request that
    #: names no location uses it.
    store: FileStore
    #: Scratch space for CRIU images; should be on the same fast disk as the store.
    work_dir: Path
    node_name: str
    criu: CriuInfo
    gpu: GpuDriver
    gpu_lock_timeout_ms: int = 10_000
    zstd_level: int = 1
    zstd_threads: int = -1
    #: Bytes of writable-layer and emptyDir files one checkpoint may capture (None: no cap).
    capture_max_bytes: int | None = None
    container_locks: ContainerLocks = field(default_factory=lambda: ContainerLocks())
    #: The host's root as this process reaches it: container layers (overlay upperdirs) and
    #: emptyDirs are host paths. With hostPID, /proc/1/root is the host's mount namespace.
    host_root: Path = Path("/proc/1/root")

    @property
    def runtime(self) -> Runtime:
        return self.runtimes[self.default_runtime]


class ContainerLocks:
    """One dump at a time per container: two jobs pausing and dumping the same container at
    once would find it already paused ("container not running") or thaw it under the other."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(
        self, container_ids: list[str], waiting: Callable[[], None]
    ) -> AsyncIterator[None]:
        # Always in sorted order, so two pods sharing containers cannot deadlock.
        locks = [self._locks.setdefault(cid, asyncio.Lock()) for cid in sorted(set(container_ids))]
        if any(lock.locked() for lock in locks):
            waiting()
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield


def _ms(start: float) -> int:
    return round((time.monotonic() - start) * 1000)


def archive_name(checkpoint_id: str, compression: str) -> str:
    return f"{checkpoint_id}.tar.zst" if compression == "zstd" else f"{checkpoint_id}.tar"


#: What a request that names no location gets: the agent's own archive folder.
NODE_LOCAL = Destination(location="node-local", type=LocationType.file)


def _location(dest: Destination | None, ctx: PipelineContext) -> tuple[Destination, LocationStore]:
    dest = dest or NODE_LOCAL
    try:
        return dest, open_location(dest, file_root=ctx.store.root)
    except StorageError as exc:
        raise PipelineError(str(exc)) from exc


async def run_checkpoint(
    request: CheckpointRequest,
    ctx: PipelineContext,
    progress: ProgressFn,
    *,
    runtime: str | None = None,
) -> CheckpointResult:
    """Freeze, dump and store the request's containers; return the stored archive's facts."""
    t_total = time.monotonic()
    timings = Timings()
    rt = ctx.runtimes[runtime or ctx.default_runtime]
    dest, store = _location(request.destination, ctx)
    key = dest.key_for(request.namespace, request.checkpoint_id, request.compression)

    progress("resolving", 0)
    resolved: list[ResolvedContainer] = []
    for target in request.containers:
        ref = ContainerRef(
            name=target.name,
            container_id=target.container_id,
            namespace=request.namespace,
            pod=request.pod,
            pod_uid=request.pod_uid,
        )
        try:
            resolved.append(await rt.resolve(ref))
        except ContainerRuntimeError as exc:
            raise PipelineError(f"container {target.name!r}: {exc}") from exc

    cuda_pids = _select_cuda_pids(request.gpu, ctx.gpu, rt, resolved)
    gpu_models = _gpu_models(ctx.gpu) if cuda_pids else []

    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = ctx.work_dir / f"ckpt-{request.checkpoint_id}-{secrets.token_hex(4)}"
    job_dir.mkdir()
    dumped: list[DumpedContainer] = []
    captured: dict[str, Any] = {}
    try:
        async with ctx.container_locks.hold(
            [c.ref.container_id for c in resolved], lambda: progress("waiting", 0)
        ):
            await _dump_all(
                request, ctx, rt, resolved, cuda_pids, job_dir, dumped, timings, progress,
                captured=captured,
            )

        progress("storing", 0)
        t = time.monotonic()
        metadata = _metadata(request, ctx, rt, dumped, gpu_models, cuda_pids)
        metadata.capture = captured or None
        location, checksum, size = await _store_archive(
            store, key, dumped, metadata, request.compression, ctx, progress,
            extra_files=capture.members_of(job_dir / "capture"),
        )
        timings.store = _ms(t)
    finally:
        await asyncio.shield(asyncio.to_thread(_cleanup, job_dir, dumped))

    timings.total = _ms(t_total)
    progress("done", size)
    return CheckpointResult(
        restore_path=location,
        checksum=f"sha256:{checksum}",
        size_bytes=size,
        gpu=", ".join(gpu_models) if gpu_models else "none",
        platform=platform_string(),
        runtime=rt.name,
        criu_version=ctx.criu.version,
        containers=[c.name for c in resolved],
        timings=timings,
    )


async def _dump_all(
    request: CheckpointRequest,
    ctx: PipelineContext,
    rt: Runtime,
    resolved: list[ResolvedContainer],
    cuda_pids: list[int],
    job_dir: Path,
    dumped: list[DumpedContainer],
    timings: Timings,
    progress: ProgressFn,
    *,
    captured: dict[str, Any] | None = None,
) -> None:
    """GPU lock + checkpoint, freeze all, capture filesystems, dump all, thaw all, GPU restore
    + unlock."""
    gpu_suspended: list[int] = []
    ok = False
    try:
        if cuda_pids:
            # The CUDA driver needs the target's threads running to lock and copy device
            # memory to host, so the GPU pass happens before the cgroup freeze.
            progress("gpu-lock", 0)
            t = time.monotonic()
            try:
                await ctx.gpu.suspend(cuda_pids, ctx.gpu_lock_timeout_ms, done=gpu_suspended)
            except GpuError as exc:
                raise PipelineError(f"GPU checkpoint failed: {exc}") from exc
            timings.gpu += _ms(t)

        progress("freezing", 0)
        t = time.monotonic()
        try:
            async with frozen(rt, resolved):
                timings.freeze = _ms(t)
                if captured is not None:
                    captured.update(await _capture(request, ctx, resolved, job_dir))
                progress("dumping", 0)
                t = time.monotonic()
                for c in resolved:
                    dumped.append(await rt.dump(c, job_dir, leave_running=request.leave_running))
                timings.dump = _ms(t)
        except ContainerRuntimeError as exc:
            raise PipelineError(f"dump failed: {exc}") from exc
        ok = True
    finally:
        # Resume the GPU state where the processes still exist: after a leave-running dump,
        # and after any failure. A successful dump without leave-running ended them.
        if gpu_suspended and (request.leave_running or not ok):
            t = time.monotonic()
            try:
                await asyncio.shield(ctx.gpu.resume(gpu_suspended))
            except GpuError as exc:
                if ok:
                    raise PipelineError(f"GPU resume after dump failed: {exc}") from exc
                log.warning("GPU resume after a failed dump failed: %s", exc)
            timings.gpu += _ms(t)


def _select_cuda_pids(
    mode: GpuMode, gpu: GpuDriver, rt: Runtime, resolved: list[ResolvedContainer]
) -> list[int]:
    """The host pids whose GPU state must be checkpointed (empty: no GPU pass)."""
    if mode == GpuMode.none:
        return []
    if not gpu.available():
        if mode == GpuMode.required:
            raise GpuRequiredError(
                "gpu: required, but this node cannot checkpoint GPU state: "
                f"{gpu.unavailable_reason()}"
            )
        return []
    pids: list[int] = []
    for c in resolved:
        pids.extend(rt.pids(c))
    if mode == GpuMode.required and not pids:
        raise GpuRequiredError(
            f"gpu: required, but the {rt.name} runtime cannot see the target's processes"
        )
    cuda = gpu.cuda_pids(pids)
    if mode == GpuMode.required and not cuda:
        raise GpuRequiredError("gpu: required, but no process of the target uses the GPU")
    return cuda


def _gpu_models(gpu: GpuDriver) -> list[str]:
    try:
        return gpu.models()
    except GpuError as exc:
        log.warning("cannot read GPU models: %s", exc)
        return ["unknown NVIDIA GPU"]


def _metadata(
    request: CheckpointRequest,
    ctx: PipelineContext,
    rt: Runtime,
    dumped: list[DumpedContainer],
    gpu_models: list[str],
    cuda_pids: list[int],
) -> archive.ArchiveMetadata:
    return archive.ArchiveMetadata(
        checkpoint_id=request.checkpoint_id,
        namespace=request.namespace,
        pod=request.pod,
        pod_uid=request.pod_uid,
        node=ctx.node_name,
        runtime=rt.name,
        consistent_cut=rt.consistent_cut or len(dumped) == 1,
        leave_running=request.leave_running,
        criu_version=ctx.criu.version,
        platform=platform_string(),
        gpu=", ".join(gpu_models) if gpu_models else "none",
        gpu_driver_version=ctx.gpu.driver_version() if cuda_pids else None,
        cuda_pids=cuda_pids,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        containers=[container_entry(d) for d in dumped],
    )


async def _capture(
    request: CheckpointRequest,
    ctx: PipelineContext,
    resolved: list[ResolvedContainer],
    job_dir: Path,
) -> dict[str, Any]:
    """Writable layers, emptyDirs and the pod template, taken while the containers are frozen
    and before the dump (a dump without leave-running ends them, and their layers with them)."""
    containers = [capture.CapturedContainer(c.name, c.pid, c.bundle) for c in resolved]
    try:
        return await asyncio.to_thread(
            capture.capture_pod, request.pod_template, containers, job_dir / "capture",
            host_root=ctx.host_root, max_bytes=ctx.capture_max_bytes,
        )
    except OSError as exc:
        raise PipelineError(f"capturing the containers' filesystems failed: {exc}") from exc


async def _store_archive(
    store: LocationStore,
    key: str,
    dumped: list[DumpedContainer],
    metadata: archive.ArchiveMetadata,
    compression: str,
    ctx: PipelineContext,
    progress: ProgressFn,
    *,
    extra_files: list[tuple[str, Path]] | None = None,
) -> tuple[str, str, int]:
    """Stream the archive into the store from a worker thread; returns (location, sha, size)."""
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def report(n: int) -> None:
        loop.call_soon_threadsafe(progress, "storing", n)

    def work() -> tuple[str, str, int]:
        # Leaving this block without commit aborts: the S3 multipart upload is aborted (no
        # partial object, no pending parts), a file location's temporary file is removed.
        with store.open_write(key) as sink:
            digest, size = archive.write_archive(
                sink,
                dumped,
                metadata,
                compression=compression,
                level=ctx.zstd_level,
                threads=ctx.zstd_threads,
                recipients=store.dest.recipients,
                progress=report,
                cancel=cancel,
                extra_files=extra_files or (),
            )
            # Completed only now, when the whole stream is hashed and flushed.
            sink.commit()
        return store.url(key), digest, size

    # On cancellation the writer stops between chunks and aborts the upload.
    try:
        result: tuple[str, str, int] = await _in_thread(cancel, work)
    except StorageError as exc:
        raise PipelineError(f"storing the archive failed: {exc}") from exc
    except crypto.CryptoError as exc:
        raise PipelineError(str(exc)) from exc
    return result


def _cleanup(job_dir: Path, dumped: list[DumpedContainer]) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)
    for d in dumped:
        if d.source_tar is not None and d.delete_source_after:
            with contextlib.suppress(FileNotFoundError):
                d.source_tar.unlink()


async def _in_thread(cancel: threading.Event, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a worker thread; on cancellation ask it to stop and wait for it."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await task
        raise


def container_entry(d: DumpedContainer) -> archive.ContainerEntry:
    """The metadata entry of one dumped container."""
    c = d.container
    images = f"containers/{c.name}"
    if d.images_subdir:
        images += f"/{d.images_subdir}"
    return archive.ContainerEntry(
        name=c.name,
        container_id=c.ref.container_id,
        pid=c.pid,
        bundle=str(c.bundle) if c.bundle else None,
        images=images,
        restore_runtime=d.restore_runtime,
        extra=c.extra,
    )
