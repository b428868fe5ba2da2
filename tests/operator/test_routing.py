"""Pure logic of accepting and routing a checkpoint (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus
from ckpt.contract.agent import GpuMode
from ckpt.operator.agents import AgentIdentity, AgentPod, agent_from_pod, choose_agent
from ckpt.operator.conditions import get_condition, set_condition
from ckpt.operator.target import Blocked, needs_gpu, resolve_target


def _pod(phase: str = "Running", node: str | None = "node-a", gpus: int = 0) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    return {
        "metadata": {"name": "web", "uid": "u-1"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "resources": resources}, {"name": "sidecar"}],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "app", "containerID": "containerd://abc", "state": {"running": {}}},
                {"name": "sidecar", "containerID": "containerd://def", "state": {"running": {}}},
            ],
        },
    }


def _spec(**fields: Any) -> CheckpointSpec:
    return CheckpointSpec.from_resource({"podName": "web", **fields})


def _agent(name: str, node: str = "node-a", gpu: bool = False, ready: bool = True) -> AgentPod:
    return AgentPod(name, "ckpt-system", node, "10.0.0.1", 8443, gpu, ready)


def test_all_app_containers_by_default_with_bare_runtime_ids() -> None:
    target = resolve_target(_spec(), "default", _pod())
    assert [(c.name, c.container_id) for c in target.containers] == [
        ("app", "abc"),
        ("sidecar", "def"),
    ]
    assert (target.node, target.pod_uid, target.needs_gpu) == ("node-a", "u-1", False)


@pytest.mark.parametrize(
    ("pod", "spec", "reason", "fragment"),
    [
        (None, {}, "TargetNotFound", "pod default/web does not exist"),
        (_pod(node=None), {}, "TargetNotScheduled", "not scheduled"),
        (_pod(phase="Pending"), {}, "TargetNotRunning", "is Pending, not Running"),
        (
            _pod(),
            {"containers": ["db"]},
            "ContainerNotFound",
            "no container db (it has app, sidecar)",
        ),
    ],
)
def test_blocked_reasons_name_the_problem(
    pod: dict[str, Any] | None, spec: dict[str, Any], reason: str, fragment: str
) -> None:
    with pytest.raises(Blocked) as blocked:
        resolve_target(_spec(**spec), "default", pod)
    assert blocked.value.reason == reason
    assert fragment in blocked.value.message


def test_a_container_that_is_not_running_blocks() -> None:
    pod = _pod()
    pod["status"]["containerStatuses"][1]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    with pytest.raises(Blocked, match="container sidecar of pod default/web is not running"):
        resolve_target(_spec(), "default", pod)


@pytest.mark.parametrize(
    ("mode", "gpus", "containers", "expected"),
    [
        (GpuMode.auto, 0, ["app"], False),
        (GpuMode.auto, 1, ["app"], True),
        (GpuMode.auto, 1, ["sidecar"], False),  # the GPU belongs to a container not dumped
        (GpuMode.none, 1, ["app"], False),
        (GpuMode.required, 0, ["app"], True),
    ],
)
def test_gpu_need(mode: GpuMode, gpus: int, containers: list[str], expected: bool) -> None:
    assert needs_gpu(mode, _pod(gpus=gpus)["spec"], containers) is expected


def test_routing_prefers_the_matching_kind_on_the_pods_node() -> None:
    agents = [_agent("cpu-b", node="node-b"), _agent("cpu-a"), _agent("gpu-a", gpu=True)]
    assert choose_agent("node-a", agents, needs_gpu=False).name == "cpu-a"
    assert choose_agent("node-a", agents, needs_gpu=True).name == "gpu-a"


@pytest.mark.parametrize(
    ("agents", "needs", "fragment"),
    [
        ([_agent("cpu-b", node="node-b")], False, "no ckpt agent runs on node node-a"),
        ([_agent("cpu-a")], True, "only a CPU agent"),
        ([_agent("cpu-a", ready=False)], False, "is not ready"),
    ],
)
def test_no_suitable_agent_is_no_agent(agents: list[AgentPod], needs: bool, fragment: str) -> None:
    with pytest.raises(Blocked) as blocked:
        choose_agent("node-a", agents, needs_gpu=needs)
    assert blocked.value.reason == "NoAgent"
    assert fragment in blocked.value.message


def test_agent_pod_port_and_kind_come_from_the_pod() -> None:
    # The kind comes from the controlling DaemonSet (tests/security has the impostors).
    pod = {
        "metadata": {
            "name": "ckpt-agent-gpu-x",
            "namespace": "ckpt-system",
            "labels": {"ckpt.dev/agent-kind": "gpu"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                 "name": "ckpt-agent-gpu", "uid": "u", "controller": True}],
        },
        "spec": {
            "nodeName": "node-a",
            "serviceAccountName": "ckpt-agent",
            "containers": [{"name": "agent", "ports": [{"name": "agent", "containerPort": 9000}]}],
        },
        "status": {"podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    identity = AgentIdentity()
    agent = agent_from_pod(pod, identity=identity, default_port=8443)
    assert agent == AgentPod(
        "ckpt-agent-gpu-x", "ckpt-system", "node-a", "10.1.2.3", 9000, True, True
    )
    del pod["status"]["podIP"]
    assert agent_from_pod(pod, identity=identity, default_port=8443) is None


def test_condition_transition_time_moves_only_when_truth_changes() -> None:
    status = CheckpointStatus()
    assert set_condition(status, "Accepted", False, "NoAgent", "none on node-a")
    first = get_condition(status, "Accepted")
    assert first is not None
    assert not set_condition(status, "Accepted", False, "NoAgent", "none on node-a")
    set_condition(status, "Accepted", False, "TargetNotRunning", "pending")
    same_truth = get_condition(status, "Accepted")
    assert same_truth is not None
    assert same_truth.last_transition_time == first.last_transition_time
    assert same_truth.reason == "TargetNotRunning"
    assert len(status.conditions) == 1
