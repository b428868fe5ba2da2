"""Accepting a checkpoint: is the named pod there, running, on a node, with those containers?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckpt.apis.checkpoint import CheckpointSpec
from ckpt.contract.agent import ContainerTarget, GpuMode

GPU_RESOURCE = "nvidia.com/gpu"


class Blocked(Exception):
    """The checkpoint cannot go on yet; `reason` is the condition reason a user sees."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotCheckpointable(Exception):
    """The pod uses something a checkpoint cannot carry; waiting changes nothing."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# What the pod spec shows that CRIU cannot dump or that cannot come back in a new Pod:
# the node's own namespaces are shared with every other process of the node (CRIU dumps a
# process tree with its namespaces; the node's are not the pod's to take, and a restored Pod
# on another node could not have them).
_HOST_NAMESPACES = {
    "hostNetwork": "it shares the node's network namespace (hostNetwork)",
    "hostPID": "it shares the node's process namespace (hostPID)",
    "hostIPC": "it shares the node's IPC namespace (hostIPC)",
}
# Resources the kubelet hands out that are not devices.
_NOT_DEVICES = ("cpu", "memory", "ephemeral-storage", "hugepages-")


@dataclass(frozen=True)
class Target:
    namespace: str
    pod: str
    pod_uid: str
    node: str
    containers: tuple[ContainerTarget, ...]
    needs_gpu: bool


def resolve_target(spec: CheckpointSpec, namespace: str, pod: Mapping[str, Any] | None) -> Target:
    """The containers to dump, or `Blocked` saying what stands in the way."""
    where = f"{namespace}/{spec.pod_name}"
    if pod is None:
        raise Blocked("TargetNotFound", f"pod {where} does not exist")
    pod_spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    node = pod_spec.get("nodeName")
    if not node:
        raise Blocked("TargetNotScheduled", f"pod {where} is not scheduled to a node yet")
    if phase != "Running":
        raise Blocked("TargetNotRunning", f"pod {where} is {phase}, not Running")

    declared = [c["name"] for c in pod_spec.get("containers", [])]
    wanted = list(spec.containers) or declared
    refuse_unsupported(where, pod_spec, wanted)
    unknown = [name for name in wanted if name not in declared]
    if unknown:
        raise Blocked(
            "ContainerNotFound",
            f"pod {where} has no container {', '.join(unknown)} (it has {', '.join(declared)})",
        )
    statuses = {s["name"]: s for s in status.get("containerStatuses") or []}
    targets = []
    for name in wanted:
        state = statuses.get(name, {})
        container_id = state.get("containerID", "")
        if "running" not in (state.get("state") or {}) or not container_id:
            raise Blocked("TargetNotRunning", f"container {name} of pod {where} is not running")
        # Pod status spells ids as "containerd://<id>"; runtimes want the bare id.
        targets.append(ContainerTarget(name=name, container_id=container_id.split("://")[-1]))

    return Target(
        namespace=namespace,
        pod=spec.pod_name,
        pod_uid=pod.get("metadata", {}).get("uid", ""),
        node=node,
        containers=tuple(targets),
        needs_gpu=needs_gpu(spec.gpu, pod_spec, wanted),
    )


def refuse_unsupported(where: str, pod_spec: Mapping[str, Any], containers: list[str]) -> None:
    """`NotCheckpointable` for what the spec shows ckpt cannot carry: the node's namespaces,
    and devices other than the GPU path (a device plugin's resource: its state lives in a
    device and a driver CRIU does not know; `gpu: none` says to leave the GPU out)."""
    for field_name, why in _HOST_NAMESPACES.items():
        if pod_spec.get(field_name):
            raise NotCheckpointable("HostNamespace", f"pod {where} cannot be checkpointed: {why}")
    for container in pod_spec.get("containers", []):
        if container["name"] not in containers:
            continue
        resources = container.get("resources") or {}
        names = {*(resources.get("limits") or {}), *(resources.get("requests") or {})}
        for name in sorted(names):
            # The GPU goes through the CUDA path, or is left out on purpose with `gpu: none`.
            if name.startswith(_NOT_DEVICES) or name == GPU_RESOURCE:
                continue
            raise NotCheckpointable(
                "DeviceNotSupported",
                f"container {container['name']} of pod {where} uses the device resource "
                f"{name}: only {GPU_RESOURCE} (through the CUDA checkpoint API) can be "
                "checkpointed",
            )


def needs_gpu(mode: GpuMode, pod_spec: Mapping[str, Any], containers: list[str]) -> bool:
    if mode is GpuMode.none:
        return False
    if mode is GpuMode.required:
        return True
    for container in pod_spec.get("containers", []):
        if container["name"] not in containers:
            continue
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            if str((resources.get(section) or {}).get(GPU_RESOURCE, "0")) not in ("", "0"):
                return True
    return False
