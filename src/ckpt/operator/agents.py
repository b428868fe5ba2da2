"""The node agents: which one serves a node, and an HTTP client of their v1 API."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ckpt.agent.models import CheckpointJob, CheckpointRequest
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


class AgentError(Exception):
    """An agent call failed; `retryable` is true for transport errors and 5xx."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


class AgentClient:
    """Calls agents' v1 API with the operator's ServiceAccount token."""

    def __init__(
        self,
        token_file: Path,
        *,
        scheme: str = "http",
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._token_file = token_file
        self._scheme = scheme
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        # Agents run a couple of jobs each; a small pool bounds sockets and the per-request
        # scan of pooled connections when hundreds of checkpoints are followed at once.
        self._http = httpx.AsyncClient(
            timeout=timeout, verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _url(self, agent: AgentPod, path: str) -> str:
        return agent.base_url(self._scheme) + path

    async def _call(
        self, method: str, agent: AgentPod, path: str, body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        # Read per call: kubelet rotates projected ServiceAccount tokens in place.
        token = self._token_file.read_text().strip()
        try:
            response = await self._http.request(
                method, self._url(agent, path), json=body, params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise AgentError(f"agent {agent.ref} unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            raise AgentError(
                f"agent {agent.ref} answered {response.status_code}: {_message(response)}",
                status=response.status_code,
            )
        return response

    async def start_checkpoint(self, agent: AgentPod, request: CheckpointRequest) -> CheckpointJob:
        response = await self._call(
            "POST", agent, "/v1/checkpoints", request.model_dump(mode="json")
        )
        return CheckpointJob.model_validate_json(response.content)

    async def checkpoint_job(
        self, agent: AgentPod, checkpoint_id: str, *, wait: float = 0, phase: str | None = None
    ) -> CheckpointJob:
        """The job; with `wait`, the agent answers once its phase is no longer `phase`."""
        params = {"wait": wait, "phase": phase} if wait and phase is not None else None
        response = await self._call(
            "GET", agent, f"/v1/checkpoints/{checkpoint_id}", params=params
        )
        return CheckpointJob.model_validate_json(response.content)

    async def cancel_checkpoint(self, agent: AgentPod, checkpoint_id: str) -> None:
        """Stops a running job (the agent thaws its containers and removes partial files)."""
        await self._call("DELETE", agent, f"/v1/checkpoints/{checkpoint_id}")

    async def delete_archive(self, agent: AgentPod, checkpoint_id: str) -> None:
        try:
            await self._call("DELETE", agent, f"/v1/archives/{checkpoint_id}")
        except AgentError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))[:500]
    except ValueError:
        return response.text[:500]
