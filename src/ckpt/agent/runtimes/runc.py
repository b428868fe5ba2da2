"""The runc backend: containers of containerd or CRI-O, found by id under a runc state root."""

from __future__ import annotations

import re
from pathlib import Path

from ckpt.agent import proc
from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRef,
    DumpedContainer,
    ResolvedContainer,
    RestoredContainer,
    Runtime,
    RuntimeError_,
)

CONTAINERD_ROOT = Path("/run/containerd/runc/k8s.io")
CRIO_ROOT = Path("/run/runc")


def criu_log_tail(log: Path, lines: int = 15) -> str:
    """The error lines (or the tail) of a CRIU log, for error messages."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line or "error" in line]
    return "\n".join((errors or text)[-lines:])


class RuncRuntime(Runtime):
    """``runc pause`` / ``checkpoint`` / ``resume`` / ``restore`` against one state root."""

    name = "runc"
    # runc pause freezes the container's cgroup; CRIU dumps a paused container and leaves it
    # paused (also with --leave-running), so pausing every container first gives one cut.
    consistent_cut = True

    def __init__(
        self,
        root: Path = CONTAINERD_ROOT,
        *,
        runc: str = "runc",
        criu: str | None = None,
        cgroups_mode: str | None = None,
        extra_dump_args: tuple[str, ...] = (),
        timeout_s: float = 1800,
    ) -> None:
        self.root = root
        self.runc = runc
        self.criu = criu
        self._cgroups_mode = cgroups_mode
        self.extra_dump_args = extra_dump_args
        self.timeout_s = timeout_s

    def _argv(self, *args: str) -> list[str]:
        argv = [self.runc, "--root", str(self.root)]
        if self.criu:
            # runc runs `criu` from PATH unless told otherwise (global option).
            argv += ["--criu", self.criu]
        return [*argv, *args]

    async def _run(
        self, *args: str, limit_s: float | None = 60, finish_on_cancel: bool = False
    ) -> proc.Completed:
        return await proc.run(
            self._argv(*args), limit_s=limit_s, finish_on_cancel=finish_on_cancel
        )

    async def cgroups_mode(self) -> str:
        """``ignore`` where runc has it (>= 1.2, as the field notes advise for restoring into
        another container); runc 1.1 lacks it, and its default ``soft`` mode works because
        runc itself points CRIU at the new container's cgroups on restore."""
        if self._cgroups_mode is None:
            out = await self._run("--version")
            m = re.search(r"runc version (\d+)\.(\d+)", out.stdout)
            version = (int(m[1]), int(m[2])) if m else (1, 1)
            self._cgroups_mode = "ignore" if version >= (1, 2) else "soft"
        return self._cgroups_mode

    async def state(self, container_id: str) -> dict[str, object] | None:
        import json

        out = await self._run("state", container_id)
        if out.returncode != 0:
            return None
        state: dict[str, object] = json.loads(out.stdout)
        return state

    async def resolve(self, ref: ContainerRef) -> ResolvedContainer:
        state = await self.state(ref.container_id)
        if state is None:
            raise ContainerNotFound(f"no runc container {ref.container_id} under {self.root}")
        status = state.get("status")
        if status not in ("running", "paused"):
            raise ContainerNotRunning(f"runc container {ref.container_id} is {status}")
        return ResolvedContainer(
            ref=ref,
            pid=int(str(state["pid"])),
            bundle=Path(str(state["bundle"])),
            extra={"runc_root": str(self.root), "status": status},
        )

    async def freeze(self, container: ResolvedContainer) -> None:
        # A container someone else paused stays theirs: we neither pause nor resume it.
        if container.extra.get("status") == "paused":
            return
        out = await self._run("pause", container.ref.container_id)
        if out.returncode != 0:
            raise RuntimeError_(f"runc pause: {out.describe()}")
        container.extra["paused_by_ckpt"] = True

    async def thaw(self, container: ResolvedContainer) -> None:
        if not container.extra.pop("paused_by_ckpt", False):
            return
        state = await self.state(container.ref.container_id)
        if state is None or state.get("status") != "paused":
            return  # dumped without leave-running: runc removed it
        out = await self._run("resume", container.ref.container_id)
        if out.returncode != 0:
            raise RuntimeError_(f"runc resume: {out.describe()}")

    async def dump(
        self, container: ResolvedContainer, work_dir: Path, *, leave_running: bool
    ) -> DumpedContainer:
        images = work_dir / "images" / container.name
        logs = work_dir / "logs" / container.name
        images.mkdir(parents=True)
        logs.mkdir(parents=True)
        args = [
            "checkpoint",
            "--image-path", str(images),
            # Logs apart from the images, so they stay out of the archive.
            "--work-path", str(logs),
            "--manage-cgroups-mode", await self.cgroups_mode(),
            *self.extra_dump_args,
        ]
        if leave_running:
            args.append("--leave-running")
        out = await self._run(
            *args, container.ref.container_id, limit_s=self.timeout_s, finish_on_cancel=True
        )
        if out.returncode != 0:
            # A host file behind the container's stdio and a missing iptables-restore are
            # the usual causes (field notes); CRIU's log says which.
            raise RuntimeError_(
                f"runc checkpoint {container.ref.container_id}: {out.describe()}\n"
                f"{criu_log_tail(logs / 'dump.log')}"
            )
        return DumpedContainer(container=container, images_dir=images)

    async def restore(
        self,
        images_dir: Path,
        *,
        container_id: str,
        bundle: Path | None,
        work_dir: Path,
    ) -> RestoredContainer:
        if bundle is None:
            raise RuntimeError_("restore needs a runc bundle (rootfs + config.json)")
        if not (bundle / "config.json").is_file():
            raise RuntimeError_(f"bundle {bundle} has no config.json")
        if await self.state(container_id) is not None:
            raise RuntimeError_(f"a container {container_id} already exists under {self.root}")
        logs = work_dir / "restore-logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = await self._run(
            "restore", "--detach",
            "--image-path", str(images_dir),
            "--work-path", str(logs),
            "--bundle", str(bundle),
            "--manage-cgroups-mode", await self.cgroups_mode(),
            container_id,
            limit_s=self.timeout_s,
        )
        if out.returncode != 0:
            raise RuntimeError_(
                f"runc restore {container_id}: {out.describe()}\n"
                f"{criu_log_tail(logs / 'restore.log')}"
            )
        state = await self.state(container_id)
        if state is None or not state.get("pid"):
            raise RuntimeError_(f"runc restore {container_id}: the container is not there")
        return RestoredContainer(
            container_id=container_id, pid=int(str(state["pid"])), bundle=bundle
        )
