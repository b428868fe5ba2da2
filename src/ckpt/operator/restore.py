"""The restore flow: wait for the Checkpoint, choose a node, stage, create the Pod, follow it.

Plain async code, free of kopf; the handlers hand it the resource and the ways to reach
Kubernetes and the agents. Every step is idempotent and keyed, so an operator restart at any
point resumes without duplicates:

- the staging job is keyed by the Restore's uid (the same POST answers the same job, and a
  finished staging is answered from the staged folder itself);
- the chosen node is written to status before staging starts, so a restart stages there again;
- the Pod name is deterministic (`spec.podName` or `<checkpointName>-restored`) and the Pod
  carries the annotation `ckpt.dev/restore=<uid>`: a Pod found under that name with that
  annotation is this Restore's own, created before a restart.

Deleting a Restore leaves its Pod running. The Pod carries no ownerReference: the restored
workload is what the user came for and the Restore only records how it got there (as Velero's
Restore does), so garbage collection must not take the workload with the record. The Pod is
labelled `ckpt.dev/restore-name` to find it; `kubectl delete pod` stops it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ckpt.apis.restore import (
    RESTORE_NAME_LABEL,
    RESTORED_FROM_LABEL,
    RUNTIME_CLASS,
    RestorePhase,
    RestoreSpec,
    RestoreStatus,
    RestoreTimings,
)
from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.contract.agent import RESTORE_ANNOTATION, JobState, StageJob, StageRequest
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.errors import NotFound, ServiceError
from ckpt.operator import binding, metrics, placement
from ckpt.operator.agents import AgentPod
from ckpt.operator.conditions import set_condition
from ckpt.operator.flow import (
    LONG_POLL,
    LOOP_CLOCK,
    AgentGone,
    Clock,
    Failure,
    Flow,
    Reporter,
    Waiting,
    parse_time,
)
from ckpt.operator.kube import PodExists
from ckpt.operator.locations import LocationError

log = logging.getLogger(__name__)

TERMINAL = frozenset({RestorePhase.Running, RestorePhase.Failed})
# Condition types, in the order the flow sets them.
CHECKPOINT_READY = "CheckpointReady"
NODE_CHOSEN = "NodeChosen"
STAGED = "Staged"
POD_CREATED = "PodCreated"
RUNNING = "Running"
# Staging attempts whose agent stopped under them (restart, rollout) before the Restore fails.
STAGE_ATTEMPTS = 3
# Labels of GPU nodes (NVIDIA GPU feature discovery) and of a node's architecture.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
ARCH_LABEL = "kubernetes.io/arch"
# Container waiting reasons after which the kubelet will not get a restored container running
# by retrying: the staged restore is consumed or the runtime refused it.
_FATAL_WAITING = frozenset({
    "CreateContainerError", "CreateContainerConfigError", "RunContainerError",
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
})


class RestoreKube(Protocol):
    """The Kubernetes reads and writes the flow needs (raw JSON objects, camelCase keys)."""

    async def get_checkpoint(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]: ...

    async def list_nodes(self) -> list[Mapping[str, Any]]: ...


class Stager(Protocol):
    """The agent's staging calls (implemented by `AgentClient`)."""

    async def start_staging(self, agent: AgentPod, request: StageRequest) -> StageJob: ...

    async def staging_job(
        self, agent: AgentPod, restore_id: str, *, wait: float = 0, phase: str | None = None
    ) -> StageJob: ...

    async def delete_staging(self, agent: AgentPod, restore_id: str) -> None: ...


async def _node_local(_: str | None) -> Destination | None:
    return None


async def _trusted(_: CheckpointFacts, __: str, ___: Destination | None) -> None:
    return None


async def verify_with_api(
    list_records: Callable[[list[str]], Awaitable[list[Any]]],
    facts: CheckpointFacts,
    namespace: str,
    location: Destination | None,
) -> None:
    """The Checkpoint's status may be patched by whoever can write it: the Pod comes only
    from an archive the operator bound to this very Checkpoint (binding.py). The API record
    the status names must be ready with the same checksum, name this namespace, the
    Checkpoint's uid and pod, the status's archive, location and node; and the archive's key
    must be this namespace's key of that record in `location` (the status's location,
    resolved)."""
    if not facts.checkpoint_id:
        raise Failure("CheckpointNotRecorded", f"checkpoint {facts.name} has no API id")
    try:
        records = await list_records([facts.checkpoint_id])
    except (ServiceError, OSError) as exc:
        raise Waiting(CHECKPOINT_READY, "ApiUnavailable", f"checkpoints API: {exc}") from exc
    if not records:
        raise Failure(
            "CheckpointNotRecorded", f"checkpoint {facts.checkpoint_id} is not in the API"
        )
    record = records[0]
    if record.status is not ApiStatus.ready:
        raise Failure(
            "CheckpointNotRecorded",
            f"checkpoint {facts.checkpoint_id} is {record.status} in the API, not ready",
        )
    if record.checksum != facts.checksum:
        raise Failure(
            "ChecksumMismatch",
            f"checkpoint {facts.name}: its status names another archive than the API records",
        )
    claim = binding.Claim(
        namespace=namespace, name=facts.name, uid=facts.uid, pod=facts.pod,
        checkpoint_id=str(record.id), restore_path=facts.source,
        storage_location=facts.storage_location, node=facts.node,
    )
    try:
        binding.check_record(record, claim)
        binding.check_archive(claim, location)
    except binding.NotBound as exc:
        raise Failure(exc.reason, exc.message) from exc


@dataclass
class RestoreDeps:
    kube: RestoreKube
    stager: Stager
    agent_pods: Callable[[], Iterable[AgentPod]]
    clock: Clock = LOOP_CLOCK
    # The checkpoint's StorageLocation resolved for the agent (credentials, age identities);
    # None: node-local archives. Raises LocationError when it cannot be used.
    locate: Callable[[str | None], Awaitable[Destination | None]] = _node_local
    # Checks the Checkpoint's status against the checkpoints API record the operator bound
    # to it (`verify_with_api`), given the Restore's namespace and the status's location
    # resolved: raises Failure on a mismatch, Waiting while the API is unreachable.
    verify: Callable[[CheckpointFacts, str, Destination | None], Awaitable[None]] = _trusted
    poll_interval: float = 0.5
    # A Restore not Running this long after its creation fails (reason Timeout).
    timeout_seconds: float = 900.0


@dataclass(frozen=True)
class RestoreResource:
    namespace: str
    name: str
    uid: str
    created: dt.datetime
    spec: RestoreSpec
    generation: int | None = None


@dataclass(frozen=True)
class CheckpointFacts:
    """What the flow needs of a Ready Checkpoint: its uid (metadata) and pod (its immutable
    spec) are the apiserver's; the rest is its status, which `verify_with_api` checks."""

    name: str
    checkpoint_id: str
    node: str
    source: str
    checksum: str
    gpu: str
    platform: str
    template: Mapping[str, Any]
    storage_location: str | None = None
    uid: str = ""
    pod: str = ""

    @property
    def needs_gpu(self) -> bool:
        return self.gpu not in ("", "none")

    @property
    def arch(self) -> str:
        return self.platform.partition("/")[2]


def checkpoint_facts(name: str, checkpoint: Mapping[str, Any] | None) -> CheckpointFacts:
    """The Ready Checkpoint's facts; `Waiting` while it is not Ready, `Failure` when it failed
    or cannot be restored as a Pod."""
    if checkpoint is None:
        raise Waiting(CHECKPOINT_READY, "CheckpointNotFound", f"checkpoint {name} does not exist")
    status = checkpoint.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        raise Failure(
            "CheckpointFailed", f"checkpoint {name} failed: {status.get('message') or 'no reason'}"
        )
    if phase != "Ready":
        raise Waiting(CHECKPOINT_READY, "CheckpointNotReady", f"checkpoint {name} is {phase}")
    template = status.get("podTemplate")
    if not template:
        raise Failure(
            "NoPodTemplate",
            f"checkpoint {name} holds no pod template (taken by a ckpt without Pod restore); "
            "take a new checkpoint",
        )
    missing = [k for k in ("restorePath", "checksum", "nodeName") if not status.get(k)]
    if missing:
        raise Failure("CheckpointIncomplete", f"checkpoint {name} lacks {', '.join(missing)}")
    return CheckpointFacts(
        name=name,
        checkpoint_id=str(status.get("checkpointId") or ""),
        node=status["nodeName"],
        source=status["restorePath"],
        checksum=status["checksum"],
        gpu=str(status.get("gpu") or "none"),
        platform=str(status.get("platform") or ""),
        template=template,
        storage_location=status.get("storageLocation"),
        uid=str((checkpoint.get("metadata") or {}).get("uid") or ""),
        pod=str((checkpoint.get("spec") or {}).get("podName") or ""),
    )


# -- choosing a node ------------------------------------------------------------------------


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def _node_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _gpu_product(text: str) -> str:
    # GPU feature discovery writes products with dashes ("NVIDIA-H100-80GB-HBM3"); the driver
    # (and so the checkpoint) with spaces.
    return text.strip().replace(" ", "-").lower()


def incompatibility(facts: CheckpointFacts, node: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why the checkpoint can never be restored on this node (reason, message), or None:
    another architecture, no GPU of its kind, or a taint or nodeSelector that keeps its Pod
    off (`placement`: the Pod is placed by name, past the scheduler)."""
    name = (node.get("metadata") or {}).get("name", "")
    placed = placement.refusal((facts.template or {}).get("spec") or {}, node)
    if placed is not None:
        return placed
    labels = _labels(node)
    arch = labels.get(ARCH_LABEL)
    if facts.arch and arch and arch != facts.arch:
        return "NoCompatibleNode", (
            f"checkpoint {facts.name} is {facts.platform}; node {name} is {arch}"
        )
    if facts.needs_gpu:
        if labels.get(GPU_PRESENT_LABEL) != "true":
            return "GpuNodeRequired", (
                f"checkpoint {facts.name} holds GPU state ({facts.gpu}); node {name} has no GPU "
                f"(label {GPU_PRESENT_LABEL}=true)"
            )
        product = labels.get(GPU_PRODUCT_LABEL)
        wanted = {_gpu_product(g) for g in facts.gpu.split(",")}
        if product and _gpu_product(product) not in wanted:
            return "NoCompatibleNode", (
                f"checkpoint {facts.name} holds {facts.gpu} state; node {name} has {product}"
            )
    return None


def _agent_on(node: str, agents: Iterable[AgentPod], gpu: bool) -> AgentPod | None:
    ready = [a for a in agents if a.node == node and a.ready and (a.gpu or not gpu)]
    # The GPU agent for GPU work, the CPU agent otherwise; ties by name (deterministic).
    return min(ready, key=lambda a: (a.gpu != gpu, a.name), default=None)


def choose_node(
    facts: CheckpointFacts,
    requested: str | None,
    nodes: Iterable[Mapping[str, Any]],
    agents: Iterable[AgentPod],
    *,
    node_local: bool = False,
) -> tuple[str, AgentPod]:
    """The node to restore on and its agent: `spec.nodeName`, else the source node when it is
    Ready with an agent, else the first (by name) Ready, compatible node with an agent.

    A node-local archive (`node_local`) is only on the source node: no other is chosen
    unless named. Raises `Failure` when no node could ever do (named node missing or
    incompatible; no compatible node in the cluster) and `Waiting` while a compatible node
    lacks a ready agent.
    """
    by_name = {(n.get("metadata") or {}).get("name", ""): n for n in nodes}
    agents = list(agents)
    if requested:
        node = by_name.get(requested)
        if node is None:
            raise Failure("NodeNotFound", f"node {requested} does not exist")
        problem = incompatibility(facts, node)
        if problem:
            raise Failure(*problem)
        agent = _agent_on(requested, agents, facts.needs_gpu)
        if not _node_ready(node) or agent is None:
            raise Waiting(
                NODE_CHOSEN, "NoAgent",
                f"node {requested} is not Ready or has no ready ckpt agent"
                + (" for GPU work" if facts.needs_gpu else ""),
            )
        return requested, agent
    compatible = [n for n, node in sorted(by_name.items()) if not incompatibility(facts, node)]
    if not compatible:
        problems = [incompatibility(facts, node) for node in by_name.values()]
        reasons = {p[0] for p in problems if p}
        reason = "GpuNodeRequired" if reasons == {"GpuNodeRequired"} else "NoCompatibleNode"
        detail = "; ".join(p[1] for p in problems if p) or "the cluster has no nodes"
        raise Failure(reason, f"no node can restore checkpoint {facts.name}: {detail}")
    order = sorted(compatible, key=lambda n: (n != facts.node, n))
    if node_local:
        order = [n for n in order if n == facts.node]
        if not order:
            raise Failure(
                "NoCompatibleNode",
                f"checkpoint {facts.name}'s archive is node-local on {facts.node}, which cannot "
                "restore it; name a node that reaches it (spec.nodeName) or use object storage",
            )
    for name in order:
        node = by_name[name]
        if not _node_ready(node) or (node.get("spec") or {}).get("unschedulable"):
            continue
        agent = _agent_on(name, agents, facts.needs_gpu)
        if agent is not None:
            return name, agent
    raise Waiting(
        NODE_CHOSEN, "NoAgent",
        f"no Ready node among {', '.join(compatible)} has a ready ckpt agent",
    )


# -- the Pod --------------------------------------------------------------------------------


def restored_pod(
    resource: RestoreResource, facts: CheckpointFacts, pod_name: str, node: str
) -> dict[str, Any]:
    """The Pod to create: the captured template, bound to `node`, under runtime class `ckpt`,
    annotated with the staged restore's id."""
    template = copy.deepcopy(dict(facts.template))
    metadata = dict(template.get("metadata") or {})
    spec = dict(template.get("spec") or {})
    labels = dict(metadata.get("labels") or {})
    labels[RESTORED_FROM_LABEL] = facts.name
    labels[RESTORE_NAME_LABEL] = resource.name
    annotations = dict(metadata.get("annotations") or {})
    annotations[RESTORE_ANNOTATION] = resource.uid
    spec["nodeName"] = node
    spec["runtimeClassName"] = RUNTIME_CLASS
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": resource.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a restored Pod will not reach Running, or None while it may."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"pod is {status['phase']}: {status.get('message') or status.get('reason') or ''}"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _FATAL_WAITING:
            name, reason = container["name"], waiting["reason"]
            return f"container {name}: {reason}: {waiting.get('message', '')}"
        terminated = state.get("terminated")
        if terminated:
            return (
                f"container {container['name']} terminated: {terminated.get('reason', '')} "
                f"(exit {terminated.get('exitCode')})"
            )
    return None


def _pod_running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return status.get("phase") == "Running" and bool(containers) and all(
        "running" in (c.get("state") or {}) for c in containers
    )


# -- the flow -------------------------------------------------------------------------------


class Restorer(Flow[RestoreStatus]):
    """Drives one Restore from wherever its status says it is to Running or Failed."""

    def __init__(
        self, deps: RestoreDeps, resource: RestoreResource, status: RestoreStatus,
        report: Reporter[RestoreStatus],
    ) -> None:
        super().__init__(
            status, report, label=f"restore {resource.namespace}/{resource.name}",
            agent_pods=deps.agent_pods, poll_interval=deps.poll_interval, clock=deps.clock,
        )
        self.deps = deps
        self.res = resource
        self._began: float | None = None
        self._location: Destination | None = None
        self._template: Mapping[str, Any] | None = None

    @property
    def deadline(self) -> dt.datetime:
        return self.res.created + dt.timedelta(seconds=self.deps.timeout_seconds)

    async def run(self) -> RestoreStatus:
        if self.status.phase in TERMINAL:
            await self.cleanup()
            return self.status
        with metrics.restore_in_progress(self.res.uid, self.res.created):
            await self.drive(
                self._flow, self.deadline, f"not Running within {self.deps.timeout_seconds:g}s"
            )
        if self.status.phase in TERMINAL:
            await self.cleanup()
        return self.status

    async def _flow(self) -> None:
        self._began = self.clock.monotonic()
        if not self.status.started_at:
            self.status.started_at = self.clock.stamp()
        self.status.observed_generation = self.res.generation
        pod_name = self.res.spec.target_pod()
        facts = await self.until(self._checkpoint)
        try:
            self._location = await self.deps.locate(facts.storage_location)
        except LocationError as exc:
            raise Failure(exc.reason, exc.message) from exc
        location = self._location
        await self.until(lambda: self.deps.verify(facts, self.res.namespace, location))
        existing = await self.deps.kube.get_pod(self.res.namespace, pod_name)
        if existing is not None and not self._ours(existing):
            raise Failure(
                "PodExists",
                f"pod {self.res.namespace}/{pod_name} exists and is not this Restore's; "
                "delete it or set spec.podName",
            )
        if existing is None:
            node, agent = await self.until(lambda: self._choose(facts))
            await self._stage(facts, node, agent)
            existing = await self._create_pod(facts, pod_name, node)
        await self._follow_pod(pod_name)

    def _ours(self, pod: Mapping[str, Any]) -> bool:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        return bool(annotations.get(RESTORE_ANNOTATION) == self.res.uid)

    async def _checkpoint(self) -> CheckpointFacts:
        name = self.res.spec.checkpoint_name
        found = await self.deps.kube.get_checkpoint(self.res.namespace, name)
        facts = checkpoint_facts(name, found)
        self.status.checkpoint_id = facts.checkpoint_id or None
        set_condition(
            self.status, CHECKPOINT_READY, True, "Ready",
            f"checkpoint {name} from node {facts.node}"
            + (f" ({facts.gpu})" if facts.needs_gpu else ""),
        )
        return facts

    async def _choose(self, facts: CheckpointFacts) -> tuple[str, AgentPod]:
        agents = list(self.deps.agent_pods())
        if self.status.node_name:
            # Chosen before a restart: stay there (the staged files may be there already);
            # the agent is looked up again, it may be a new pod.
            agent = _agent_on(self.status.node_name, agents, facts.needs_gpu)
            if agent is None:
                raise Waiting(
                    NODE_CHOSEN, "NoAgent", f"no ready ckpt agent on node {self.status.node_name}"
                )
            return self.status.node_name, agent
        node, agent = choose_node(
            facts, self.res.spec.node_name, await self.deps.kube.list_nodes(), agents,
            node_local=self._location is None or self._location.type is LocationType.file,
        )
        self.status.node_name = node
        self.status.agent = agent.ref
        self.status.phase = RestorePhase.Staging
        self.status.message = f"staging on node {node}"
        how = "as asked" if self.res.spec.node_name else (
            "the source node" if node == facts.node else f"source node {facts.node} unavailable"
        )
        set_condition(self.status, NODE_CHOSEN, True, "NodeChosen", f"node {node} ({how})")
        self.report.event("Normal", "NodeChosen", f"restoring on node {node} ({how})")
        await self.report.save(self.status)
        return node, agent

    # -- staging ------------------------------------------------------------------------------

    def _stage_request(self, facts: CheckpointFacts) -> StageRequest:
        return StageRequest(
            restore_id=self.res.uid,
            namespace=self.res.namespace,
            pod_name=self.res.spec.target_pod(),
            checkpoint_id=facts.checkpoint_id,
            source=facts.source,
            checksum=facts.checksum,
            location=self._location,
        )

    async def _stage(self, facts: CheckpointFacts, node: str, agent: AgentPod) -> None:
        if self.status.phase is not RestorePhase.Staging:
            self.status.phase = RestorePhase.Staging
            await self.report.save(self.status)
        request = self._stage_request(facts)
        job: StageJob | None = None
        for attempt in range(1, STAGE_ATTEMPTS + 1):
            try:
                started = await self.call_agent(
                    functools.partial(self.deps.stager.start_staging, agent, request), agent
                )
                job = await self._follow_stage(agent, started, request)
            except AgentGone as gone:
                # Deleted or replaced without answering (killed, evicted, its graceful stop
                # outrun): calls to its address would go unanswered until the deadline.
                job = StageJob(
                    restore_id=self.res.uid, state=JobState.failed, error=str(gone),
                    retryable=True,
                )
            if not (job.state is JobState.failed and job.retryable):
                break
            # The agent stopped under the job (a restart, a rollout): the same request on the
            # node's (maybe new) agent starts it over.
            self.report.event(
                "Warning", "Retrying", f"staging on {node}: {job.error}; attempt {attempt + 1}"
            )
            _, agent = await self.until(lambda: self._choose(facts))
        assert job is not None
        if job.state is JobState.failed or job.result is None:
            reason = {
                "checksum_mismatch": "ChecksumMismatch",
                "not_found": "ArchiveNotFound",
                "bad_archive": "BadArchive",
                "too_large": "StagingTooLarge",
            }.get(job.error_code or "", "StagingFailed")
            raise Failure(reason, f"agent on node {node}: {job.error or 'no result'}")
        result = job.result
        if result.pod_template is not None:
            # From the verified archive: the Checkpoint's status copy only gated the start.
            self._template = result.pod_template
        self.status.staged = True
        self.status.agent = agent.ref
        self.status.timings = RestoreTimings(
            fetch=result.timings.fetch, verify=result.timings.verify,
            extract=result.timings.extract,
        )
        set_condition(
            self.status, STAGED, True, "Staged",
            f"{len(result.containers)} container(s) staged on node {node} "
            f"in {result.timings.total} ms",
        )
        self.report.event(
            "Normal", "Staged",
            f"on node {node}: fetch {result.timings.fetch} ms, verify {result.timings.verify} ms, "
            f"extract {result.timings.extract} ms",
        )

    async def _follow_stage(
        self, agent: AgentPod, job: StageJob, request: StageRequest
    ) -> StageJob:
        while job.state is JobState.running:
            await self.say(f"staging on node {agent.node}: {job.phase or 'started'}")
            seen = job.phase
            try:
                job = await self.call_agent(
                    functools.partial(
                        self.deps.stager.staging_job,
                        agent, self.res.uid, wait=LONG_POLL, phase=seen,
                    ),
                    agent,
                )
            except NotFound:
                # The agent lost the job (a new agent pod without it): the POST starts it over.
                job = await self.call_agent(
                    functools.partial(self.deps.stager.start_staging, agent, request), agent
                )
            if job.state is JobState.running and job.phase == seen:
                await self.pause()
        return job

    # -- the Pod ------------------------------------------------------------------------------

    async def _create_pod(
        self, facts: CheckpointFacts, pod_name: str, node: str
    ) -> Mapping[str, Any]:
        if self._template is not None:
            facts = dataclasses.replace(facts, template=self._template)
        body = restored_pod(self.res, facts, pod_name, node)
        self.status.phase = RestorePhase.Restoring
        self.status.pod_name = pod_name
        self.status.message = f"creating pod {pod_name} on node {node}"
        await self.report.save(self.status)
        try:
            created = await self.deps.kube.create_pod(self.res.namespace, body)
        except PodExists:
            found = await self.deps.kube.get_pod(self.res.namespace, pod_name)
            if found is None or not self._ours(found):
                raise Failure(
                    "PodExists", f"pod {self.res.namespace}/{pod_name} appeared meanwhile"
                ) from None
            created = found
        set_condition(self.status, POD_CREATED, True, "PodCreated", f"pod {pod_name} on {node}")
        self.report.event("Normal", "PodCreated", f"pod {pod_name} on node {node}")
        return created

    async def _follow_pod(self, pod_name: str) -> None:
        self.status.pod_name = pod_name
        t_pod = self.clock.monotonic()
        if self.status.phase is not RestorePhase.Restoring:
            self.status.phase = RestorePhase.Restoring
            await self.report.save(self.status)
        while True:
            pod = await self.deps.kube.get_pod(self.res.namespace, pod_name)
            if pod is None or not self._ours(pod):
                raise Failure("PodGone", f"pod {self.res.namespace}/{pod_name} was deleted")
            problem = pod_problem(pod)
            if problem:
                raise Failure("RestoreFailed", f"pod {pod_name}: {problem}")
            if _pod_running(pod):
                break
            await self.say(f"pod {pod_name}: {(pod.get('status') or {}).get('phase', 'Pending')}")
            await self.pause()
        await self._running(pod, t_pod)

    async def _running(self, pod: Mapping[str, Any], t_pod: float) -> None:
        now = self.clock.monotonic()
        timings = self.status.timings or RestoreTimings()
        timings.restore = int((now - t_pod) * 1000)
        started = parse_time(self.status.started_at) or self.res.created
        timings.total = int((self.clock.now() - started).total_seconds() * 1000)
        self.status.timings = timings
        self.status.phase = RestorePhase.Running
        self.status.message = ""
        self.status.node_name = (pod.get("spec") or {}).get("nodeName") or self.status.node_name
        self.status.completed_at = self.clock.stamp()
        set_condition(self.status, RUNNING, True, "Running", f"pod {self.status.pod_name}")
        self.report.event(
            "Normal", "Restored",
            f"pod {self.status.pod_name} Running on {self.status.node_name} in {timings.total} ms "
            f"(fetch {timings.fetch}, verify {timings.verify}, extract {timings.extract}, "
            f"restore {timings.restore})",
        )
        # Metrics before the save: once status says Running, kopf stops this daemon.
        metrics.restore_finished(
            "Running", "Running", timings.total / 1000,
            {"fetch": timings.fetch, "verify": timings.verify, "extract": timings.extract,
             "restore": timings.restore},
        )
        await self.report.save(self.status)

    async def fail(self, reason: str, message: str) -> None:
        self.status.phase = RestorePhase.Failed
        self.status.message = message
        self.status.completed_at = self.clock.stamp()
        set_condition(self.status, RUNNING, False, reason, message)
        self.report.event("Warning", reason, message)
        metrics.restore_finished("Failed", reason)
        await self.report.save(self.status)

    # -- cleanup ------------------------------------------------------------------------------

    async def cleanup(self) -> bool:
        """Asks the agent to remove the staged files; True once they are gone (or were never
        there). The wrapper needs them only while it restores the Pod's containers."""
        if not self.status.staged or not self.status.node_name:
            return True
        agent = _agent_on(self.status.node_name, self.deps.agent_pods(), gpu=False) or next(
            (a for a in self.deps.agent_pods() if a.node == self.status.node_name and a.ready),
            None,
        )
        if agent is None:
            log.info("%s/%s: no agent on %s to clean up", self.res.namespace, self.res.name,
                     self.status.node_name)
            return False
        try:
            await self.deps.stager.delete_staging(agent, self.res.uid)
        except NotFound:
            pass  # already gone is what we wanted
        except ServiceError as exc:
            log.warning("%s/%s: cleanup on %s failed: %s", self.res.namespace,
                        self.res.name, self.status.node_name, exc)
            return False
        self.status.staged = False
        await self.report.save(self.status)
        return True
