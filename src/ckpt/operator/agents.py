"""The node agents: which one serves a node (their client is `ckpt.agent.client`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ckpt.operator.target import Blocked

AGENT_PORT_NAME = "agent"


@dataclass(frozen=True)
class AgentPod:
    name: str
    namespace: str
    node: str
    ip: str
    port: int
    gpu: bool
    ready: bool

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def base_url(self, scheme: str = "http") -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip  # IPv6 pod IPs need brackets
        return f"{scheme}://{host}:{self.port}"


def agent_from_pod(
    pod: Mapping[str, Any], *, kind_label: str, default_port: int
) -> AgentPod | None:
    """The agent a pod runs, or None while it has no node or no IP (not routable yet)."""
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    node, ip = spec.get("nodeName"), status.get("podIP")
    if not node or not ip:
        return None
    port = default_port
    for container in spec.get("containers", []):
        for declared in container.get("ports") or []:
            if declared.get("name") == AGENT_PORT_NAME:
                port = int(declared["containerPort"])
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return AgentPod(
        name=metadata["name"],
        namespace=metadata.get("namespace", ""),
        node=node,
        ip=ip,
        port=port,
        gpu=(metadata.get("labels") or {}).get(kind_label) == "gpu",
        ready=ready,
    )


def choose_agent(node: str, candidates: Iterable[AgentPod], needs_gpu: bool) -> AgentPod:
    """A ready agent on `node` able to take this checkpoint, or `Blocked("NoAgent", ...)`."""
    on_node = [agent for agent in candidates if agent.node == node]
    if not on_node:
        raise Blocked("NoAgent", f"no ckpt agent runs on node {node}; is the DaemonSet there?")
    suitable = [agent for agent in on_node if agent.gpu or not needs_gpu]
    if not suitable:
        raise Blocked(
            "NoAgent",
            f"the pod needs GPU state but node {node} has only a CPU agent; "
            "label the node nvidia.com/gpu.present=true so the GPU agent runs there, "
            "or set spec.gpu: none",
        )
    ready = [agent for agent in suitable if agent.ready]
    if not ready:
        raise Blocked("NoAgent", f"the ckpt agent on node {node} is not ready")
    # Prefer the GPU agent for GPU work and the CPU agent otherwise; ties go by name so
    # that a resumed checkpoint returns to the agent that holds its job.
    return sorted(ready, key=lambda a: (a.gpu != needs_gpu, a.name))[0]
