"""Pods ckpt can see it cannot checkpoint are refused at once, with the reason in the
Checkpoint's Accepted condition, instead of failing in CRIU or waiting for a deadline."""

from __future__ import annotations

from typing import Any

import pytest
from test_checkpointer import NS, POD, World, running_pod

from ckpt.apis.checkpoint import CheckpointSpec, Phase
from ckpt.operator.conditions import ACCEPTED, get_condition
from ckpt.operator.target import NotCheckpointable, resolve_target


def pod_with(**spec: Any) -> dict[str, Any]:
    pod = running_pod()
    pod["spec"].update(spec)
    return pod


def with_resources(limits: dict[str, str]) -> dict[str, Any]:
    return pod_with(containers=[{"name": "app", "resources": {"limits": limits}}])


@pytest.mark.parametrize(("pod", "reason", "says"), [
    (pod_with(hostNetwork=True), "HostNamespace", "network namespace (hostNetwork)"),
    (pod_with(hostPID=True), "HostNamespace", "process namespace (hostPID)"),
    (pod_with(hostIPC=True), "HostNamespace", "IPC namespace (hostIPC)"),
    (with_resources({"amd.com/gpu": "1"}), "DeviceNotSupported", "device resource amd.com/gpu"),
])
def test_what_the_spec_shows_is_refused(pod: dict[str, Any], reason: str, says: str) -> None:
    with pytest.raises(NotCheckpointable) as refused:
        resolve_target(CheckpointSpec(pod_name=POD), NS, pod)
    assert refused.value.reason == reason and says in refused.value.message


def test_the_gpu_memory_cpu_and_hugepages_are_not_refused() -> None:
    pod = with_resources({"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi",
                          "hugepages-2Mi": "64Mi", "ephemeral-storage": "1Gi"})
    assert resolve_target(CheckpointSpec(pod_name=POD), NS, pod).needs_gpu


def test_a_device_of_a_container_left_out_is_not_refused() -> None:
    pod = pod_with(containers=[
        {"name": "app"}, {"name": "fpga", "resources": {"limits": {"xilinx.com/fpga": "1"}}},
    ])
    resolve_target(CheckpointSpec(pod_name=POD, containers=["app"]), NS, pod)


async def test_the_checkpoint_fails_at_once_with_the_reason_in_accepted() -> None:
    world = World()
    world.pods = [pod_with(hostNetwork=True)]
    status = await world.run()
    assert status.phase is Phase.Failed
    accepted = get_condition(status, ACCEPTED)
    assert accepted is not None and accepted.status == "False"
    assert accepted.reason == "HostNamespace"
    assert world.pod_reads == 1 and world.agents.requests == []
    assert "HostNamespace" in world.report.reasons()
