"""Staging a checkpoint for a Restore: fetch, verify, extract into the folder the wrapper reads.

The operator asks the agent of the chosen node to stage before any Pod exists, so that the
runtime call (the ckpt-runc wrapper's `runc restore`) finds everything local and stays short.
The staged folder, `<restores>/<restore-id>/` (0700), is the contract with the wrapper:

    restore.json                      {"version": 1, "restoreId", "namespace", "podName",
                                       "tcpClose": true, "containers": {...}, "emptyDirs": {...}}
    containers/<name>/images/         CRIU images
    containers/<name>/rootfs-diff/    files to copy over the new rootfs (modes, owners,
                                      symlinks, mtimes preserved)
    containers/<name>/deleted         NUL-separated relative paths to remove first
    volumes/<volume>/                 emptyDir contents, copied into the new Pod's emptyDir
    stage.json                        the agent's own record of the finished staging

It is built under a hidden partial name and renamed into place when complete, so the wrapper
never sees half a restore; a checksum mismatch (or any failure) leaves nothing behind. Jobs are
keyed by restore id: the same request again answers the same job, and a finished staging is
answered from `stage.json` after an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ckpt.agent.capture import diff_member_ok
from ckpt.agent.errors import AgentError
from ckpt.agent.metrics import AgentMetrics
from ckpt.agent.pipeline import NODE_LOCAL
from ckpt.agent.slots import FairSlots
from ckpt.contract.agent import JobState, StageJob, StageRequest, StageResult, StageTimings
from ckpt.storage import archive, crypto
from ckpt.storage.objects import ObjectNotFound, StorageError, open_location

log = logging.getLogger(__name__)

RESTORE_FORMAT = 1
RESTORE_JSON = "restore.json"
STAGE_JSON = "stage.json"
CHUNK = 1 << 20
# A Pod spec is a few KiB; the apiserver refuses objects above 1.5 MiB anyway.
POD_TEMPLATE_MAX_BYTES = 1 << 20


class StagingError(Exception):
    """Staging failed; `code` tells callers why (checksum_mismatch, not_found, bad_archive,
    bad_source) and the message is fit for the job's error field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Progress = Callable[[str], None]


@dataclass(frozen=True)
class StagingCaps:
    """What staging may put on the node's disk: all staged restores together at most
    `max_bytes` (0: no cap but the disk's), and `reserve_bytes` always left free on the
    filesystem for the node and its workloads."""

    max_bytes: int = 0
    reserve_bytes: int = 1 << 30

    def limits(self, root: Path, restore_id: str) -> archive.ExtractLimits:
        """The most one more restore may unpack: the disk's free space less the reserve and,
        with a cap, the cap less what the node's other restores hold."""
        disk = archive.ExtractLimits.for_folder(root, self.reserve_bytes)
        if not self.max_bytes:
            return disk
        budget = min(disk.max_bytes, max(0, self.max_bytes - staged_bytes(root, restore_id)))
        return archive.ExtractLimits(max_bytes=budget, max_member_bytes=budget)


def staged_bytes(root: Path, but: str = "") -> int:
    """Bytes the staged restores under `root` hold on disk, those of restore `but` left out
    (a staging started over counts its earlier attempt's files no more)."""
    total = 0
    for entry in os.scandir(root):
        if but and entry.name.lstrip(".").startswith(but):
            continue
        if entry.is_dir(follow_symlinks=False):
            for folder, _, files in os.walk(entry.path):
                for name in files:
                    with contextlib.suppress(FileNotFoundError):
                        total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def stage_archive(
    request: StageRequest,
    root: Path,
    *,
    archive_root: Path,
    progress: Progress = lambda _: None,
    cancel: threading.Event | None = None,
    caps: StagingCaps | None = None,
) -> StageResult:
    """Stages `request` under `root` (blocking: run it in a worker thread). `archive_root` is
    the agent's node-local archive folder (where node-local locations live)."""
    caps = caps or StagingCaps()
    final = root / request.restore_id
    done = read_result(final)
    if done is not None:
        return done
    t_total = time.monotonic()
    # What a killed agent left of an earlier attempt is never completed: start afresh.
    for stale in root.glob(f".{request.restore_id}.partial.*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = archive.make_scratch(root, f".{request.restore_id}.partial.{secrets.token_hex(4)}")
    root.chmod(0o700)
    try:
        timings = StageTimings()
        dest = request.location or NODE_LOCAL
        try:
            store = open_location(dest, file_root=archive_root)
            # Only archives of the location: a host file or another bucket is refused
            # before it is opened.
            key = store.key_of(request.source)
        except StorageError as exc:
            raise StagingError("bad_source", str(exc)) from exc
        extracted = partial / ".archive"
        progress("fetching")
        t = time.monotonic()
        try:
            identities = crypto.parse_identities([i.get_secret_value() for i in dest.identities])
            with store.open_read(key) as src:
                verified = archive.extract_verified(
                    src, extracted, request.checksum.removeprefix("sha256:"),
                    identities=identities, limits=caps.limits(root, request.restore_id),
                    cancel=cancel,
                )
        except ObjectNotFound as exc:
            raise StagingError("not_found", f"archive not found: {exc}") from exc
        except archive.ChecksumError as exc:
            raise StagingError("checksum_mismatch", str(exc)) from exc
        except archive.Cancelled:
            raise  # an ArchiveError, but not a bad archive
        except archive.LimitExceeded as exc:
            raise StagingError(
                "too_large",
                f"{exc} (staging keeps {caps.reserve_bytes} bytes free on the node"
                + (f" and holds at most {caps.max_bytes} bytes" if caps.max_bytes else "")
                + "); restore on another node (spec.nodeName), remove finished Restores, or "
                "raise CKPT_AGENT_STAGING_MAX_BYTES",
            ) from exc
        except StorageError as exc:
            raise StagingError("fetch_failed", f"fetching the archive failed: {exc}") from exc
        except (archive.ArchiveError, crypto.CryptoError) as exc:
            raise StagingError("bad_archive", f"bad archive: {exc}") from exc
        # One pass, split by what its reading thread did: waiting for the store (fetch),
        # hashing (verify); the rest of the pass (decrypting, decompressing, writing) counts
        # as extracting, with the layout below.
        unpacking = max(0.0, time.monotonic() - t - verified.read_s - verified.hash_s)
        metadata, size = verified.metadata, verified.size
        timings.fetch = round(verified.read_s * 1000)
        timings.verify = round(verified.hash_s * 1000)
        _check(cancel)
        progress("extracting")
        t = time.monotonic() - unpacking
        containers = _lay_out(metadata, extracted, partial, cancel)
        gpu = bool(metadata.cuda_pids)
        emptydirs = _emptydirs(metadata, extracted, partial)
        template = _pod_template(metadata, extracted)
        shutil.rmtree(extracted)
        timings.extract = _ms(t)
        timings.total = _ms(t_total)
        restore = {
            "version": RESTORE_FORMAT,
            "restoreId": request.restore_id,
            "namespace": request.namespace,
            "podName": request.pod_name,
            # The new Pod has a new IP: established TCP connections cannot follow it, so
            # CRIU restores them closed (tcp-close).
            "tcpClose": True,
            "containers": {
                name: {
                    "images": f"containers/{name}/images",
                    "rootfsDiff": f"containers/{name}/rootfs-diff",
                    "deleted": f"containers/{name}/deleted",
                    "gpu": gpu,
                }
                for name in containers
            },
            "emptyDirs": {vol: f"volumes/{vol}" for vol in emptydirs},
        }
        result = StageResult(
            path=str(final), containers=containers, gpu=gpu, size_bytes=size, timings=timings,
            pod_template=template,
        )
        (partial / RESTORE_JSON).write_text(json.dumps(restore, indent=2, sort_keys=True))
        (partial / STAGE_JSON).write_text(result.model_dump_json())
        os.rename(partial, final)
        return result
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def read_result(folder: Path) -> StageResult | None:
    """The finished staging recorded in `folder`, or None."""
    try:
        return StageResult.model_validate_json((folder / STAGE_JSON).read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def _ms(start: float) -> int:
    return round((time.monotonic() - start) * 1000)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise archive.Cancelled("cancelled while staging")


def _safe_relative(name: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts:
        raise StagingError("bad_archive", f"unsafe path {name!r} in the archive")
    return str(p)


def _lay_out(
    metadata: archive.ArchiveMetadata,
    extracted: Path,
    partial: Path,
    cancel: threading.Event | None,
) -> list[str]:
    """Moves each container's images and unpacks its filesystem diff into the layout."""
    capture = (metadata.capture or {}).get("containers") or {}
    names: list[str] = []
    for entry in metadata.containers:
        _check(cancel)
        name = _safe_relative(entry.name)
        if "/" in name:
            raise StagingError("bad_archive", f"bad container name {name!r}")
        out = partial / "containers" / name
        out.mkdir(parents=True)
        images = extracted / _safe_relative(entry.images)
        if not images.is_dir():
            raise StagingError("bad_archive", f"container {name}: no images at {entry.images}")
        os.rename(images, out / "images")
        facts = capture.get(name) or {}
        diff = out / "rootfs-diff"
        diff.mkdir()
        if facts.get("rootfsDiff"):
            untar_captured(extracted / _safe_relative(facts["rootfsDiff"]), diff)
        deleted = out / "deleted"
        if facts.get("deleted"):
            source = extracted / _safe_relative(facts["deleted"])
            for path in source.read_bytes().split(b"\0"):
                if path:
                    _safe_relative(path.decode())
            os.rename(source, deleted)
        else:
            deleted.write_bytes(b"")
        names.append(name)
    if not names:
        raise StagingError("bad_archive", "the archive holds no containers")
    return names


def _pod_template(metadata: archive.ArchiveMetadata, extracted: Path) -> dict[str, Any] | None:
    member = (metadata.capture or {}).get("podTemplate")
    if not member:
        return None
    path = extracted / _safe_relative(member)
    if not path.is_file() or path.stat().st_size > POD_TEMPLATE_MAX_BYTES:
        raise StagingError("bad_archive", "the archive's pod template is missing or too large")
    try:
        template = json.loads(path.read_bytes())
    except ValueError as exc:
        raise StagingError("bad_archive", "the archive's pod template is not JSON") from exc
    if not isinstance(template, dict):
        raise StagingError("bad_archive", "the archive's pod template is not an object")
    return template


def _emptydirs(metadata: archive.ArchiveMetadata, extracted: Path, partial: Path) -> list[str]:
    volumes = (metadata.capture or {}).get("emptyDirs") or {}
    for volume, member in volumes.items():
        if "/" in volume or volume in ("", ".", ".."):
            raise StagingError("bad_archive", f"bad volume name {volume!r}")
        out = partial / "volumes" / volume
        out.mkdir(parents=True)
        untar_captured(extracted / _safe_relative(member), out)
    return sorted(volumes)


def untar_captured(tar_path: Path, dest: Path) -> None:
    """Unpacks a captured tree with its modes, numeric owners, symlinks and mtimes.

    The folder is the agent's own (nothing else writes there), so checks by path hold. A
    symlink member is content, kept as a link for the new container, whatever its target
    (absolute links such as /etc/alternatives are normal). What is refused: a member whose
    folder is reached through a link extracted earlier, a hard link whose target is (the
    target must be a file of this tree, never a node file reached through a link), and a name
    that is already there as anything but a folder: tarfile writes a regular file with open(),
    which would follow a symlink member of the same name out of the tree.
    """
    root = dest.resolve()

    def inside(path: Path) -> bool:
        return path.parent.resolve().is_relative_to(root)

    def keep(member: tarfile.TarInfo, _: str) -> tarfile.TarInfo:
        if not diff_member_ok(member):
            raise StagingError("bad_archive", f"unsafe member {member.name!r} in {tar_path.name}")
        target = root / member.name
        if not inside(target) or (member.islnk() and not inside(root / member.linkname)):
            raise StagingError("bad_archive", f"member {member.name!r} escapes through a link")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise StagingError("bad_archive", f"member {member.name!r} is in the archive twice")
        return member

    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            # Every member passes `keep` (safe names, no escape through links).
            tar.extractall(dest, numeric_owner=True, filter=keep)  # noqa: S202
    except (tarfile.TarError, OSError) as exc:
        raise StagingError("bad_archive", f"{tar_path.name}: {exc}") from exc


# -- jobs -------------------------------------------------------------------------------------


@dataclass
class _Entry:
    request: StageRequest
    job: StageJob
    task: asyncio.Task[None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Stagings:
    """The staging jobs of one agent, sharing its job slots with checkpoints."""

    def __init__(
        self, root: Path, slots: FairSlots, *, archive_root: Path,
        metrics: AgentMetrics | None = None, caps: StagingCaps | None = None,
    ) -> None:
        self.root = root
        self.caps = caps or StagingCaps()
        self.slots = slots
        self.archive_root = archive_root
        self.entries: dict[str, _Entry] = {}
        self.metrics = metrics
        if metrics is not None:
            metrics.track_storage({"restores": root, "archives": archive_root})

    def submit(self, request: StageRequest) -> StageJob:
        entry = self.entries.get(request.restore_id)
        if entry is not None:
            if entry.request != request:
                raise AgentError(
                    409, "conflict",
                    f"restore {request.restore_id!r} already exists with a different request",
                )
            if not entry.job.retryable:
                return self._answer(entry)
        done = read_result(self.root / request.restore_id)
        if done is not None:
            job = StageJob(
                restore_id=request.restore_id, state=JobState.succeeded, phase="staged",
                result=done,
            )
            self.entries[request.restore_id] = _Entry(request=request, job=job)
            return self._answer(self.entries[request.restore_id])
        job = StageJob(restore_id=request.restore_id, state=JobState.running, phase="queued")
        entry = _Entry(request=request, job=job)
        self.entries[request.restore_id] = entry
        entry.task = asyncio.create_task(self._run(entry), name=f"stage-{request.restore_id}")
        return job.model_copy()

    def get(self, restore_id: str) -> StageJob:
        entry = self.entries.get(restore_id)
        if entry is None:
            # After an agent restart: a finished staging is still on disk.
            done = read_result(self.root / restore_id)
            if done is None:
                raise AgentError(404, "not_found", f"no restore {restore_id!r} on this node")
            return StageJob(
                restore_id=restore_id, state=JobState.succeeded, phase="staged", result=done,
            )
        return self._answer(entry)

    @staticmethod
    def _answer(entry: _Entry) -> StageJob:
        # A copy: the job goes on changing under the caller's answer.
        return entry.job.model_copy()

    async def watch(self, restore_id: str, seen_phase: str | None, wait: float) -> StageJob:
        entry = self.entries.get(restore_id)
        if entry is None or entry.job.state is not JobState.running:
            return self.get(restore_id)
        if entry.job.phase == seen_phase and wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await entry.changed.wait()
        return self._answer(entry)

    async def remove(self, restore_id: str) -> bool:
        """Stops a running staging and removes the staged files; False if nothing was there."""
        entry = self.entries.pop(restore_id, None)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.cancel.set()
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.task
        final = self.root / restore_id
        existed = final.exists() or entry is not None
        await asyncio.to_thread(shutil.rmtree, final, True)
        for stale in self.root.glob(f".{restore_id}.partial.*"):
            await asyncio.to_thread(shutil.rmtree, stale, True)
        return existed

    async def _run(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()

        def progress(phase: str) -> None:
            loop.call_soon_threadsafe(self._phase, entry, phase)

        job = entry.job
        try:
            async with self.slots.take(entry.request.namespace):
                worker = asyncio.ensure_future(asyncio.to_thread(
                    stage_archive, entry.request, self.root, archive_root=self.archive_root,
                    progress=progress, cancel=entry.cancel, caps=self.caps,
                ))
                try:
                    result = await asyncio.shield(worker)
                except asyncio.CancelledError:
                    # The worker stops at its next check and removes its partial folder.
                    entry.cancel.set()
                    with contextlib.suppress(BaseException):
                        await worker
                    raise
        except asyncio.CancelledError:
            job.state, job.error, job.retryable = JobState.failed, "cancelled", True
            entry.notify()
            raise
        except StagingError as exc:
            log.warning("staging %s failed: %s", job.restore_id, exc)
            job.state, job.error, job.error_code = JobState.failed, str(exc), exc.code
        except archive.Cancelled:
            job.state, job.error, job.retryable = JobState.failed, "cancelled", True
        except Exception as exc:
            log.exception("staging %s failed", job.restore_id)
            job.state, job.error = JobState.failed, str(exc) or type(exc).__name__
        else:
            job.state, job.phase, job.result = JobState.succeeded, "staged", result
            if self.metrics is not None:
                self.metrics.staged_bytes.inc(result.size_bytes)
            log.info("staged restore %s in %d ms", job.restore_id, result.timings.total)
        entry.notify()

    @staticmethod
    def _phase(entry: _Entry, phase: str) -> None:
        if entry.job.state is JobState.running and entry.job.phase != phase:
            entry.job.phase = phase
            entry.notify()

    async def shutdown(self) -> None:
        running = [e for e in self.entries.values() if e.task is not None and not e.task.done()]
        for entry in running:
            entry.cancel.set()
            assert entry.task is not None
            entry.task.cancel()
        for entry in running:
            with contextlib.suppress(asyncio.CancelledError):
                assert entry.task is not None
                await entry.task
