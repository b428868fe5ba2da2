"""The runc backend: containers of containerd or CRI-O, found by id under a runc state root."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from ckpt.agent import proc
from ckpt.agent.criu import failure_reason
from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRef,
    ContainerRuntimeError,
    DumpedContainer,
    NotThePodsContainer,
    ResolvedContainer,
    Runtime,
)

log = logging.getLogger(__name__)

CONTAINERD_ROOT = Path("/run/containerd/runc/k8s.io")
CRIO_ROOT = Path("/run/runc")

# Where the CRI runtimes record, in each container's OCI config, the pod a container belongs
# to: (namespace, pod name, pod uid, container name, container type). containerd's CRI
# plugin writes the first set, CRI-O the second. The kubelet names a pod's containers by
# these; a request's container id is believed only if they match the request's pod.
CONTAINERD_POD_ANNOTATIONS = (
    "io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name",
    "io.kubernetes.cri.sandbox-uid", "io.kubernetes.cri.container-name",
    "io.kubernetes.cri.container-type",
)
_POD_ANNOTATIONS = (
    CONTAINERD_POD_ANNOTATIONS,
    ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name",
     "io.kubernetes.pod.uid", "io.kubernetes.container.name",
     "io.kubernetes.cri-o.ContainerType"),
)


def check_pod_ownership(ref: ContainerRef, annotations: Mapping[str, str]) -> None:
    """Refuse unless the runtime's records put this container in the request's pod.

    Namespace and pod name must be recorded and equal; the pod uid must equal the request's
    (real CRI records always carry one, so a request without a uid never matches a real
    container); the container name and type are checked where recorded (containerd and CRI-O
    record both for every container of a pod; a sandbox's pause container is refused).
    """
    keys = next(
        (k for k in _POD_ANNOTATIONS if k[0] in annotations and k[1] in annotations), None
    )
    if keys is None:
        raise NotThePodsContainer(
            f"container {ref.container_id} is not a container of pod {ref.namespace}/{ref.pod}"
        )
    ns_key, pod_key, uid_key, name_key, type_key = keys
    recorded = (
        annotations[ns_key], annotations[pod_key], annotations.get(uid_key, ""),
    )
    kind = annotations.get(type_key, "container")
    name = annotations.get(name_key)
    if (
        recorded != (ref.namespace, ref.pod, ref.pod_uid)
        or kind != "container"
        or (name is not None and name != ref.name)
    ):
        # The records of the other pod stay in the agent's log: the caller learns nothing
        # about containers it did not name correctly.
        log.warning(
            "refused container %s: recorded as %s/%s uid %s container %s (%s), requested "
            "%s/%s uid %s container %s", ref.container_id, *recorded, name, kind,
            ref.namespace, ref.pod, ref.pod_uid, ref.name,
        )
        raise NotThePodsContainer(
            f"container {ref.container_id} is not container {ref.name!r} of pod "
            f"{ref.namespace}/{ref.pod}"
        )


def failed(
    action: str, container_id: str, out: proc.Completed, log_file: Path,
    host_paths: tuple[Path, ...] = (), *, subject: str = "container",
) -> ContainerRuntimeError:
    """A short error for the job, and so for the Checkpoint's condition and Event, which the
    namespace can read: CRIU's own first error line (the cause a user can act on, such as an
    external unix socket or a device) with the node's paths hidden; runc's whole output and
    CRIU's log tail go to the agent's log only."""
    log.error("%s of %s failed: %s\n%s", action, container_id, out.describe(),
              criu_log_tail(log_file))
    return ContainerRuntimeError(failure_message(
        action, f"{subject} {container_id}", out.returncode, log_file, host_paths
    ))


def failure_message(
    action: str, what: str, returncode: int, log_file: Path, host_paths: tuple[Path, ...] = (),
) -> str:
    """``checkpoint of container X failed (exit 1): CRIU: <its first error>``."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        text = ""
    reason = failure_reason(text, host_paths=(str(log_file.parent), *map(str, host_paths)))
    head = f"{action} of {what} failed (exit {returncode})"
    if reason is None:
        return f"{head}; the node agent's log has CRIU's messages"
    return f"{head}: CRIU: {reason}"


def criu_log_tail(log: Path, lines: int = 15) -> str:
    """The error lines (or the tail) of a CRIU log, for error messages."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line or "error" in line]
    return "\n".join((errors or text)[-lines:])


class RuncRuntime(Runtime):
    """``runc pause`` / ``checkpoint`` / ``resume`` against one state root."""

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
        """``ignore`` where runc has it (>= 1.2: restoring into another container, CRIU must
        not recreate the dumped container's cgroups); runc 1.1 lacks it, and its default
        ``soft`` mode works because runc itself points CRIU at the new container's cgroups on
        restore."""
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
            raise ContainerNotFound(f"no container {ref.container_id} on this node")
        bundle = Path(str(state["bundle"]))
        check_pod_ownership(ref, annotations_of(bundle))
        status = state.get("status")
        if status not in ("running", "paused"):
            raise ContainerNotRunning(f"container {ref.container_id} is {status}")
        return ResolvedContainer(
            ref=ref,
            pid=int(str(state["pid"])),
            bundle=bundle,
            extra={"runc_root": str(self.root), "status": status},
        )

    async def freeze(self, container: ResolvedContainer) -> None:
        # A container someone else paused stays theirs: we neither pause nor resume it.
        if container.extra.get("status") == "paused":
            return
        out = await self._run("pause", container.ref.container_id)
        if out.returncode != 0:
            log.error("runc pause failed: %s", out.describe())
            raise ContainerRuntimeError(
                f"pausing container {container.ref.container_id} failed (exit {out.returncode})"
            )
        container.extra["paused_by_ckpt"] = True

    async def thaw(self, container: ResolvedContainer) -> None:
        if not container.extra.pop("paused_by_ckpt", False):
            return
        state = await self.state(container.ref.container_id)
        if state is None or state.get("status") != "paused":
            return  # dumped without leave-running: runc removed it
        out = await self._run("resume", container.ref.container_id)
        if out.returncode != 0:
            log.error("runc resume failed: %s", out.describe())
            raise ContainerRuntimeError(
                f"resuming container {container.ref.container_id} failed "
                f"(exit {out.returncode})"
            )

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
            # Established TCP connections are dumped (without this flag CRIU refuses any
            # process holding one, i.e. nearly every server); the wrapper restores them
            # closed (CRIU tcp-close), since the restored Pod has a new IP and the peers
            # could never reach the old one: the application sees a reset and reconnects.
            "--tcp-established",
            *self.extra_dump_args,
        ]
        if leave_running:
            args.append("--leave-running")
        out = await self._run(
            *args, container.ref.container_id, limit_s=self.timeout_s, finish_on_cancel=True
        )
        if out.returncode != 0:
            # The usual causes: a host file behind the container's stdio (CRIU: "Can't lookup
            # mount ... for fd") and a missing iptables-restore (CRIU locks the container's
            # network with it); CRIU's log says which.
            raise failed("checkpoint", container.ref.container_id, out, logs / "dump.log",
                          (work_dir, self.root))
        return DumpedContainer(container=container, images_dir=images)


def annotations_of(bundle: Path) -> dict[str, str]:
    """The annotations of the OCI config the CRI runtime wrote into the container's bundle
    (root-owned, outside the container's filesystem)."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as exc:
        log.warning("unreadable OCI config in %s: %s", bundle, exc)
        return {}
    annotations = config.get("annotations") if isinstance(config, dict) else None
    if not isinstance(annotations, dict):
        return {}
    return {str(k): str(v) for k, v in annotations.items()}
