"""The process backend: CRIU directly on a host PID tree (no container runtime).

Used for plain processes and for the GPU check. ``container_id`` is the root pid.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ckpt.agent import proc
from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerRef,
    DumpedContainer,
    ResolvedContainer,
    Runtime,
)
from ckpt.agent.runtimes.runc import failed

log = logging.getLogger(__name__)

# A process started from a shell shares its session and terminal with it: --shell-job lets
# CRIU dump and restore such a tree. --tcp-established and --file-locks cover common servers.
DEFAULT_ARGS = ("--shell-job", "--tcp-established", "--file-locks")


class ProcessRuntime(Runtime):
    """``criu dump -t PID``."""

    name = "process"
    # CRIU freezes one tree at a time; separate trees are not one cut.
    consistent_cut = False

    def __init__(
        self,
        criu: str,
        *,
        extra_args: tuple[str, ...] = DEFAULT_ARGS,
        timeout_s: float = 1800,
    ) -> None:
        self.criu = criu
        self.extra_args = extra_args
        self.timeout_s = timeout_s

    async def resolve(self, ref: ContainerRef) -> ResolvedContainer:
        if not ref.container_id.isdigit():
            raise ContainerNotFound(f"the process backend needs a pid, not {ref.container_id!r}")
        pid = int(ref.container_id)
        state = _proc_state(pid)
        if state is None:
            raise ContainerNotFound(f"no process {pid}")
        if state == "Z":
            raise ContainerNotFound(f"process {pid} is a zombie")
        return ResolvedContainer(ref=ref, pid=pid, extra={"comm": _comm(pid)})

    async def dump(
        self, container: ResolvedContainer, work_dir: Path, *, leave_running: bool
    ) -> DumpedContainer:
        assert container.pid is not None
        images = work_dir / "images" / container.name
        logs = work_dir / "logs" / container.name
        images.mkdir(parents=True)
        logs.mkdir(parents=True)
        argv = [
            self.criu, "dump", "-t", str(container.pid),
            "-D", str(images), "-W", str(logs), "-o", "dump.log", "-v4",
            *self.extra_args,
        ]
        if leave_running:
            argv.append("--leave-running")
        out = await proc.run(argv, limit_s=self.timeout_s, finish_on_cancel=True)
        if out.returncode != 0:
            raise failed("criu dump", str(container.pid), out, logs / "dump.log",
                         (work_dir,), subject="process")
        return DumpedContainer(container=container, images_dir=images)


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, Z, ...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
