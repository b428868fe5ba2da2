"""The runtime backend interface: find containers, freeze them, dump them.

A backend knows one way of reaching containers (runc state root, the kubelet API, a bare PID
tree). The pipeline (``ckpt.agent.pipeline``) drives it; the backend never touches archives,
stores or the GPU. Restores are not a backend's: the ckpt-runc wrapper restores a staged
archive with runc when the Pod's container is created.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ContainerRuntimeError(Exception):
    """A runtime operation failed; the message is meant for the job's ``error`` field."""


class ContainerNotFound(ContainerRuntimeError):
    """The named container does not exist under this runtime."""


class ContainerNotRunning(ContainerRuntimeError):
    """The container exists but is not running (or paused) and cannot be dumped."""


class NotThePodsContainer(ContainerRuntimeError):
    """The runtime's own records say the container belongs to another pod (or to none)."""


@dataclass(frozen=True)
class ContainerRef:
    """What a request names: the pod-level name and the runtime's container id."""

    name: str
    container_id: str
    namespace: str = ""
    pod: str = ""
    pod_uid: str = ""


@dataclass
class ResolvedContainer:
    """A container the runtime has found and can operate on."""

    ref: ContainerRef
    # Host pid of the container's init process; None where the backend cannot see it (kubelet).
    pid: int | None
    # runc bundle directory (config.json + rootfs); None where there is none (process).
    bundle: Path | None = None
    # Backend-specific facts worth recording in the archive metadata.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.name


@dataclass
class DumpedContainer:
    """The result of one dump.

    Exactly one of ``images_dir`` (a directory of CRIU images to be tarred) or ``source_tar``
    (an existing uncompressed tar, e.g. the kubelet's, whose members are copied into the
    archive as they are) is set.
    """

    container: ResolvedContainer
    images_dir: Path | None = None
    source_tar: Path | None = None
    # Remove source_tar once archived (the kubelet leaves its tars behind otherwise).
    delete_source_after: bool = False
    # Where the CRIU images sit inside this container's part of the archive ("" = its top;
    # "checkpoint" for the kubelet's tar layout).
    images_subdir: str = ""
    # The runtime that restores these images, if not the one that dumped them (a kubelet
    # archive is restored by runc); recorded in the archive.
    restore_runtime: str | None = None

    @property
    def name(self) -> str:
        return self.container.name


class Runtime(ABC):
    """One container runtime backend.

    All methods are coroutines; a cancelled coroutine must not leave a child process behind.
    """

    #: Short name used in requests, metadata and ``/v1/info`` ("runc", "kubelet", "process").
    name: str = ""
    #: True if ``freeze`` really stops every container so that dumps after it form one
    #: consistent cut of a multi-container pod.
    consistent_cut: bool = False

    @abstractmethod
    async def resolve(self, ref: ContainerRef) -> ResolvedContainer:
        """Find the container; raise ContainerNotFound / ContainerNotRunning."""

    async def freeze(self, container: ResolvedContainer) -> None:  # noqa: B027
        """Stop the container's processes (default: nothing; CRIU freezes during its dump)."""

    async def thaw(self, container: ResolvedContainer) -> None:  # noqa: B027
        """Undo ``freeze``; must be safe to call on a container that is not frozen."""

    @abstractmethod
    async def dump(
        self, container: ResolvedContainer, work_dir: Path, *, leave_running: bool
    ) -> DumpedContainer:
        """Checkpoint one (possibly frozen) container into a new folder under ``work_dir``."""

    def pids(self, container: ResolvedContainer) -> list[int]:
        """Host pids of every process of the container (for the GPU pass); [] if unknown."""
        if container.pid is None:
            return []
        return process_tree(container.pid)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, read from /proc (children files need no ptrace)."""
    seen: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        task_dir = Path(f"/proc/{pid}/task")
        try:
            tids = [t.name for t in task_dir.iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                children = (task_dir / tid / "children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
    return seen


@contextlib.asynccontextmanager
async def frozen(
    runtime: Runtime, containers: Sequence[ResolvedContainer]
) -> AsyncIterator[None]:
    """Freeze every container before the body runs, thaw every one afterwards.

    This is the consistent cut of a pod: no container is dumped until all are frozen. Thawing
    happens also when the body (or a freeze) fails or is cancelled; a thaw failure is reported
    only if nothing else failed first.
    """
    done: list[ResolvedContainer] = []
    body_failed = False
    try:
        for c in containers:
            await runtime.freeze(c)
            done.append(c)
        yield
    except BaseException:
        body_failed = True
        raise
    finally:
        errors: list[Exception] = []
        for c in reversed(done):
            try:
                # Shielded: a cancelled job must still thaw its containers.
                await _shielded(runtime.thaw(c))
            except Exception as exc:  # keep thawing the others
                errors.append(exc)
        if errors and not body_failed:
            raise ContainerRuntimeError(f"thaw failed: {errors[0]}") from errors[0]


async def _shielded(coro: Any) -> Any:
    import asyncio

    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Let the thaw finish even though our caller was cancelled, then re-raise.
        await task
        raise
