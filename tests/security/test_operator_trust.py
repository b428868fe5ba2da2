"""Which pods the operator takes for its agents (issue 13, finding 1). Pure logic.

Before: any pod with the agent label, in any namespace, was an agent; `agent-kind: gpu` on
the label made it a GPU agent; among several on a node the first by name won.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ckpt.operator.agents import AgentIdentity, AgentPod, agent_from_pod, choose_agent
from ckpt.operator.target import Blocked

IDENTITY = AgentIdentity(namespace="ckpt-system")


def _agent_pod(
    name: str = "ckpt-agent-x1",
    *,
    namespace: str = "ckpt-system",
    daemonset: str = "ckpt-agent",
    service_account: str = "ckpt-agent",
    node: str = "node-a",
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ckpt-agent", "ckpt.dev/agent-kind": "cpu"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": daemonset,
                "uid": "ds-uid", "controller": True,
            }],
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "containers": [{"name": "agent", "ports": [{"name": "agent", "containerPort": 8443}]}],
        },
        "status": {
            "podIP": "10.1.0.7",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _accepted(pod: dict[str, Any]) -> AgentPod | None:
    return agent_from_pod(pod, identity=IDENTITY, default_port=8443)


def test_the_daemonsets_pods_are_agents() -> None:
    cpu = _accepted(_agent_pod())
    gpu = _accepted(_agent_pod("ckpt-agent-gpu-x1", daemonset="ckpt-agent-gpu"))
    assert cpu == AgentPod("ckpt-agent-x1", "ckpt-system", "node-a", "10.1.0.7", 8443, False, True)
    assert gpu is not None and gpu.gpu


def _without_owner(pod: dict[str, Any]) -> dict[str, Any]:
    del pod["metadata"]["ownerReferences"]
    return pod


def _owner_not_controller(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["ownerReferences"][0]["controller"] = False
    return pod


def _owned_by_replicaset(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["ownerReferences"][0]["kind"] = "ReplicaSet"
    return pod


def _no_service_account(pod: dict[str, Any]) -> dict[str, Any]:
    del pod["spec"]["serviceAccountName"]
    return pod


@pytest.mark.parametrize(
    "impostor",
    [
        _agent_pod("aaa-impostor", namespace="tenant-a"),  # the label, another namespace
        _agent_pod(namespace="tenant-a"),  # even with the agent's owner and account names
        _agent_pod("aaa-impostor", daemonset="my-daemonset"),
        _agent_pod("aaa-impostor", service_account="default"),
        _without_owner(_agent_pod("aaa-impostor")),
        _owner_not_controller(_agent_pod("aaa-impostor")),
        _owned_by_replicaset(_agent_pod("aaa-impostor")),
        _no_service_account(_agent_pod("aaa-impostor")),
    ],
    ids=["other-namespace", "other-namespace-lookalike", "other-daemonset", "other-account",
         "no-owner", "owner-not-controller", "replicaset", "no-account"],
)
def test_impostors_are_not_agents(impostor: dict[str, Any]) -> None:
    assert _accepted(impostor) is None


def test_gpu_work_goes_only_to_the_gpu_daemonsets_pods() -> None:
    # The kind label says gpu, the owner is the CPU DaemonSet: a CPU agent.
    labelled = _agent_pod()
    labelled["metadata"]["labels"]["ckpt.dev/agent-kind"] = "gpu"
    agent = _accepted(labelled)
    assert agent is not None and not agent.gpu
    with pytest.raises(Blocked, match="only a CPU agent"):
        choose_agent("node-a", [agent], needs_gpu=True)


def test_a_pod_being_deleted_is_not_called() -> None:
    leaving = copy.deepcopy(_agent_pod())
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert _accepted(leaving) is None


def test_two_ready_agents_on_a_node_are_refused_not_ordered_by_name() -> None:
    agents = [a for a in (_accepted(_agent_pod("zzz")), _accepted(_agent_pod("aaa"))) if a]
    with pytest.raises(Blocked) as blocked:
        choose_agent("node-a", agents, needs_gpu=False)
    assert blocked.value.reason == "NoAgent"
    assert "2 ckpt agents are ready" in blocked.value.message


def test_only_the_agent_on_the_target_node_and_ready() -> None:
    elsewhere = _accepted(_agent_pod("on-b", node="node-b"))
    not_ready = _accepted(_agent_pod("on-a", ready=False))
    assert elsewhere is not None and not_ready is not None
    with pytest.raises(Blocked, match="is not ready"):
        choose_agent("node-a", [elsewhere, not_ready], needs_gpu=False)
    ready = _accepted(_agent_pod("on-a"))
    assert ready is not None
    assert choose_agent("node-a", [elsewhere, not_ready, ready], needs_gpu=False) == ready
