"""The node agents: which ones the operator may trust and which one serves a node (their
client is `ckpt.contract.agent_client`).

An agent is trusted only when the operator can prove the pod is its own (`AgentIdentity`):
in the operator's namespace, controlled by one of its two DaemonSets, running as the agent
ServiceAccount, on the target node, Ready. Labels prove nothing (anyone who may create a pod
may copy them), so they only narrow the watch. Agent pods are watched in that one namespace
(`AgentIndex`); pods elsewhere are read one by one when a checkpoint needs them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

from ckpt.kubejson import json_object, response_json
from ckpt.operator.target import Blocked

log = logging.getLogger(__name__)

AGENT_PORT_NAME = "agent"


@dataclass(frozen=True)
class AgentIdentity:
    """What a pod must be for the operator to call it an agent (deploy/base/agent.yaml)."""

    namespace: str = "ckpt-system"
    service_account: str = "ckpt-agent"
    cpu_daemonset: str = "ckpt-agent"
    gpu_daemonset: str = "ckpt-agent-gpu"

    def kind_of(self, pod: Mapping[str, Any]) -> str | None:
        """"cpu" or "gpu" for a pod that is provably one of our agents, else None (and why,
        in the log: a pod that carries the agent label but fails here is worth a look)."""
        metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ref = f"{metadata.get('namespace')}/{metadata.get('name')}"
        if metadata.get("namespace") != self.namespace:
            log.warning("ignored pod %s: not in the operator's namespace", ref)
            return None
        if spec.get("serviceAccountName") != self.service_account:
            log.warning(
                "ignored pod %s: not running as ServiceAccount %s", ref, self.service_account
            )
            return None
        kinds = {self.cpu_daemonset: "cpu", self.gpu_daemonset: "gpu"}
        owners = [
            o for o in metadata.get("ownerReferences") or []
            if o.get("controller") is True and o.get("kind") == "DaemonSet"
            and str(o.get("apiVersion", "")).startswith("apps/") and o.get("name") in kinds
        ]
        if len(owners) != 1:
            log.warning(
                "ignored pod %s: not controlled by DaemonSet %s or %s",
                ref, self.cpu_daemonset, self.gpu_daemonset,
            )
            return None
        return kinds[owners[0]["name"]]


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

    def base_url(self, scheme: str = "https") -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip  # IPv6 pod IPs need brackets
        return f"{scheme}://{host}:{self.port}"


def agent_from_pod(
    pod: Mapping[str, Any], *, identity: AgentIdentity, default_port: int
) -> AgentPod | None:
    """The agent a pod runs, or None: not provably ours, being deleted, or no node or IP."""
    kind = identity.kind_of(pod)
    if kind is None:
        return None
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    node, ip = spec.get("nodeName"), status.get("podIP")
    if not node or not ip or metadata.get("deletionTimestamp"):
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
        # From the controlling DaemonSet, never a label: only the GPU DaemonSet's pods get
        # GPU work.
        gpu=kind == "gpu",
        ready=ready,
    )


def choose_agent(node: str, candidates: Iterable[AgentPod], needs_gpu: bool) -> AgentPod:
    """The ready agent on `node` able to take this checkpoint, or `Blocked("NoAgent", ...)`.

    Candidates are agents already proven ours (`agent_from_pod`). A node runs one agent of
    each kind at most (the DaemonSets roll with maxUnavailable, no surge), so two ready
    candidates of the same kind mean something is off: wait, never pick one by an order that
    a pod's name could decide.
    """
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
    # While a node's GPU label changes, both DaemonSets may have a pod there: the kind of
    # the work decides (the GPU agent for GPU work, the CPU agent otherwise).
    matching = [agent for agent in ready if agent.gpu == needs_gpu]
    ready = matching or ready
    if len(ready) > 1:
        raise Blocked(
            "NoAgent",
            f"{len(ready)} ckpt agents are ready on node {node} "
            f"({', '.join(sorted(a.ref for a in ready))}); waiting until one is left",
        )
    return ready[0]


class AgentIndex:
    """The agent pods of the operator's namespace, kept current by a watch in a thread.

    The watch is namespaced, so the operator needs list/watch on pods in its own namespace
    only (deploy/base/operator-rbac.yaml). `agents()` answers the proven agents at once,
    without a call, as kopf's indexes do.
    """

    def __init__(
        self,
        api: client.ApiClient,
        identity: AgentIdentity,
        *,
        selector: str,
        default_port: int,
        watch_timeout_s: int = 60,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._api = api
        self._identity = identity
        self._selector = selector
        self._default_port = default_port
        self._watch_timeout_s = watch_timeout_s
        self._pods: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None

    def agents(self) -> list[AgentPod]:
        with self._lock:
            pods = list(self._pods.values())
        found = (
            agent_from_pod(p, identity=self._identity, default_port=self._default_port)
            for p in pods
        )
        return [agent for agent in found if agent is not None]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A watch request ends by itself within watch_timeout_s.
            self._thread.join(timeout=self._watch_timeout_s + 5)

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._list_and_watch()
            except Exception as exc:  # the watch must outlive apiserver hiccups
                log.warning("agent pod watch: %r; retrying", exc)
                self._stop.wait(2.0)

    def _list_and_watch(self) -> None:
        namespace = self._identity.namespace
        response = self._core.list_namespaced_pod(
            namespace, label_selector=self._selector, _preload_content=False
        )
        listed = response_json(response)
        with self._lock:
            self._pods = {p["metadata"]["uid"]: p for p in listed.get("items") or []}
        self._synced.set()
        stream = watch.Watch()
        for event in stream.stream(
            self._core.list_namespaced_pod, namespace, label_selector=self._selector,
            resource_version=listed["metadata"].get("resourceVersion"),
            timeout_seconds=self._watch_timeout_s,
            _request_timeout=self._watch_timeout_s + 30,
        ):
            if self._stop.is_set():
                stream.stop()
                return
            if event["type"] == "ERROR":
                return  # e.g. 410 Gone: list again
            # The official client's models, back to the apiserver's camelCase JSON.
            pod = json_object(self._api.sanitize_for_serialization(event["object"]))
            uid = pod["metadata"]["uid"]
            with self._lock:
                if event["type"] == "DELETED":
                    self._pods.pop(uid, None)
                else:
                    self._pods[uid] = pod
