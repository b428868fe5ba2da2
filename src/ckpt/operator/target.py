"""Accepting a checkpoint: is the named pod there, running, on a node, with those containers?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckpt.agent.models import ContainerTarget, GpuMode
from ckpt.operator.models import CheckpointSpec

GPU_RESOURCE = "nvidia.com/gpu"


class Blocked(Exception):
    """The checkpoint cannot go on yet; `reason` is the condition reason a user sees."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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
