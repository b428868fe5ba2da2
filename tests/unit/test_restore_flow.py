"""The Restore flow with small fakes and a virtual clock: no cluster, no agent, no root."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from ckpt.agent.models import JobState, StageJob, StageRequest, StageResult, StageTimings
from ckpt.api.models import CheckpointStatus as ApiStatus
from ckpt.errors import NotFound, Unavailable
from ckpt.operator.agents import AgentPod
from ckpt.operator.locations import LocationError
from ckpt.operator.restore import (
    CheckpointFacts,
    PodExists,
    Refused,
    RestoreDeps,
    Restorer,
    RestoreResource,
    Waiting,
    checkpoint_facts,
    choose_node,
    restored_pod,
    verify_with_api,
)
from ckpt.operator.restore_models import RestorePhase, RestoreSpec, RestoreStatus
from ckpt.storage.models import Destination, LocationType

UID = "0b6c5a4e-1111-2222-3333-444455556666"
S3 = Destination(location="shared", type=LocationType.s3, bucket="ckpt")
CHECKSUM = "sha256:" + "ab" * 32
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return START + dt.timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        for when, waiter in self._waiters:
            if when <= self.t and not waiter.done():
                waiter.set_result(None)
        await asyncio.sleep(0)

    async def reached(self, when: float) -> None:
        """Returns once the flow under test has slept past `when`."""
        if self.t < when:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((when, waiter))
            await waiter


def _node(name: str, *, ready: bool = True, arch: str = "amd64", gpu: str | None = None) -> dict:
    labels = {"kubernetes.io/arch": arch}
    if gpu:
        labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": gpu}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def _checkpoint(phase: str = "Ready", gpu: str = "none", node: str = "node-1") -> dict:
    return {
        "metadata": {"name": "counter-1"},
        "status": {
            "phase": phase,
            "message": "dump failed: boom" if phase == "Failed" else "",
            "checkpointId": "42",
            "nodeName": node,
            "restorePath": "/var/lib/ckpt/archives/42.tar.zst",
            "checksum": CHECKSUM,
            "gpu": gpu,
            "platform": "linux/amd64",
            "storageLocation": "shared",
            "podTemplate": {
                "metadata": {"labels": {"app": "counter"}},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox@sha256:" + "cd" * 32}],
                    "restartPolicy": "Always",
                },
            },
        },
    }


class Kube:
    """Pods become Running after `start_after` reads, as a kubelet would start them."""

    def __init__(self, checkpoint: dict | None, nodes: list[dict], start_after: int = 2) -> None:
        self.checkpoint = checkpoint
        self.nodes = nodes
        self.pods: dict[str, dict] = {}
        self.creates: list[dict] = []
        self.start_after = start_after
        self.reads: dict[str, int] = {}
        self.fail_create: Exception | None = None

    async def get_checkpoint(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.checkpoint)

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        pod = self.pods.get(name)
        if pod is None:
            return None
        self.reads[name] = self.reads.get(name, 0) + 1
        if self.reads[name] >= self.start_after and pod["status"]["phase"] == "Pending":
            pod["status"] = {
                "phase": "Running",
                "containerStatuses": [
                    {"name": c["name"], "state": {"running": {}}, "restartCount": 0}
                    for c in pod["spec"]["containers"]
                ],
            }
        return copy.deepcopy(pod)

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.fail_create is not None:
            error, self.fail_create = self.fail_create, None
            raise error
        name = body["metadata"]["name"]
        if name in self.pods:
            raise PodExists(name)
        self.creates.append(copy.deepcopy(dict(body)))
        self.pods[name] = {**copy.deepcopy(dict(body)), "status": {"phase": "Pending"}}
        return copy.deepcopy(self.pods[name])

    async def list_nodes(self) -> list[Mapping[str, Any]]:
        return copy.deepcopy(self.nodes)


class Stager:
    """An agent's staging endpoint: jobs run for `steps` polls, then end as `outcome` says."""

    def __init__(self, steps: int = 2, error_code: str | None = None) -> None:
        self.steps = steps
        self.error_code = error_code
        self.jobs: dict[str, StageJob] = {}
        self.polls: dict[str, int] = {}
        self.posts: list[tuple[str, StageRequest]] = []
        self.deleted: list[tuple[str, str]] = []
        self.interrupt_once = False
        self.lose_once = False
        self.events: list[str] = []
        self.archive_template: dict[str, Any] | None = None

    async def start_staging(self, agent: AgentPod, request: StageRequest) -> StageJob:
        self.posts.append((agent.name, request))
        self.events.append("stage")
        job = self.jobs.get(request.restore_id)
        if job is None or job.retryable:
            job = StageJob(restore_id=request.restore_id, state=JobState.running, phase="queued")
            self.jobs[request.restore_id] = job
            self.polls[request.restore_id] = 0
        return job.model_copy()

    async def staging_job(
        self, agent: AgentPod, restore_id: str, *, wait: float = 0, phase: str | None = None
    ) -> StageJob:
        if self.lose_once:
            self.lose_once = False
            self.jobs.pop(restore_id)
        if restore_id not in self.jobs:
            raise NotFound("no restore job", status=404)
        job = self.jobs[restore_id]
        self.polls[restore_id] += 1
        if job.state is JobState.running:
            if self.interrupt_once:
                self.interrupt_once = False
                job.state, job.error, job.retryable = JobState.failed, "agent restarted", True
            elif self.polls[restore_id] >= self.steps:
                if self.error_code:
                    job.state, job.error_code = JobState.failed, self.error_code
                    job.error = "archive checksum mismatch: expected ..., found ..."
                else:
                    job.state, job.phase = JobState.succeeded, "staged"
                    job.result = StageResult(
                        path=f"/var/lib/ckpt/restores/{restore_id}", containers=["app"],
                        timings=StageTimings(fetch=5, verify=7, extract=11, total=23),
                        pod_template=self.archive_template,
                    )
            else:
                job.phase = "extracting"
        return job.model_copy()

    async def delete_staging(self, agent: AgentPod, restore_id: str) -> None:
        self.deleted.append((agent.node, restore_id))


class Reporter:
    def __init__(self) -> None:
        self.saved: list[RestoreStatus] = []
        self.events: list[tuple[str, str, str]] = []

    async def save(self, status: RestoreStatus) -> None:
        self.saved.append(status.model_copy(deep=True))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def _agent(name: str, node: str, *, gpu: bool = False, ready: bool = True) -> AgentPod:
    return AgentPod(name, "ckpt-system", node, "10.0.0.9", 8471, gpu, ready)


class World:
    def __init__(
        self,
        checkpoint: dict | None = None,
        nodes: list[dict] | None = None,
        agents: list[AgentPod] | None = None,
        stager: Stager | None = None,
        location: Destination | None = S3,
        **spec: Any,
    ) -> None:
        self.clock = Clock()
        self.location = location
        self.located: list[str | None] = []
        self.kube = Kube(
            _checkpoint() if checkpoint is None else checkpoint,
            nodes if nodes is not None else [_node("node-1"), _node("node-2")],
        )
        self.stager = stager or Stager()
        self.agents = agents if agents is not None else [
            _agent("agent-a", "node-1"), _agent("agent-b", "node-2")
        ]
        self.spec = RestoreSpec.from_resource({"checkpointName": "counter-1", **spec})
        self.report = Reporter()

    async def locate(self, name: str | None) -> Destination | None:
        self.located.append(name)
        if self.location is not None and self.location.location == "gone":
            raise LocationError("StorageLocationNotFound", "StorageLocation 'gone' not found")
        return self.location

    def deps(self) -> RestoreDeps:
        return RestoreDeps(
            kube=self.kube, stager=self.stager, agent_pods=lambda: list(self.agents),
            clock=self.clock, locate=self.locate, poll_interval=0.5, timeout_seconds=300,
        )

    def restorer(self, status: RestoreStatus | None = None) -> Restorer:
        resource = RestoreResource("demo", "back", UID, START, self.spec, generation=1)
        return Restorer(self.deps(), resource, status or RestoreStatus(), self.report)

    async def run(self, status: RestoreStatus | None = None) -> RestoreStatus:
        return await self.restorer(status).run()


def _condition(status: RestoreStatus, type_: str) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == type_)
    return found.status, found.reason


async def test_restores_on_the_source_node_as_a_pod_under_the_ckpt_runtime() -> None:
    world = World()
    status = await world.run()

    assert status.phase is RestorePhase.Running
    assert (status.pod_name, status.node_name, status.staged) == (
        "counter-1-restored", "node-1", False
    )
    [pod] = world.kube.creates
    assert pod["spec"]["nodeName"] == "node-1"
    assert pod["spec"]["runtimeClassName"] == "ckpt"
    assert pod["metadata"]["annotations"]["ckpt.dev/restore"] == UID
    assert pod["metadata"]["labels"] == {
        "app": "counter", "ckpt.dev/restored-from": "counter-1", "ckpt.dev/restore-name": "back",
    }
    assert "ownerReferences" not in pod["metadata"]
    # Staged on the chosen node's agent with the checkpoint's archive, before the Pod.
    [(agent, request)] = world.stager.posts
    assert agent == "agent-a"
    assert (request.restore_id, request.source, request.checksum, request.pod_name) == (
        UID, "/var/lib/ckpt/archives/42.tar.zst", CHECKSUM, "counter-1-restored"
    )
    # Staged files removed once the Pod runs.
    assert world.stager.deleted == [("node-1", UID)]
    assert status.timings is not None
    assert (status.timings.fetch, status.timings.verify, status.timings.extract) == (5, 7, 11)
    assert status.timings.restore > 0 and status.timings.total >= status.timings.restore
    assert world.report.reasons == ["NodeChosen", "Staged", "PodCreated", "Restored"]
    assert _condition(status, "Running") == ("True", "Running")
    # Every status written in order: Staging before Restoring before Running.
    phases = [s.phase for s in world.report.saved]
    assert phases.index(RestorePhase.Staging) < phases.index(RestorePhase.Restoring)
    assert phases[-1] is RestorePhase.Running
    staging_saves = [s for s in world.report.saved if s.phase is RestorePhase.Staging]
    assert all(s.pod_name is None for s in staging_saves)
    # Each of them names the generation of the spec it acted on.
    assert {s.observed_generation for s in world.report.saved} == {1}


async def test_the_pod_comes_from_the_verified_archive_template() -> None:
    stager = Stager()
    stager.archive_template = {
        "metadata": {"labels": {"app": "counter", "from": "archive"}},
        "spec": {"containers": [{"name": "app", "image": "busybox@sha256:" + "cd" * 32}]},
    }
    world = World(stager=stager)
    assert (await world.run()).phase is RestorePhase.Running
    [pod] = world.kube.creates
    assert pod["metadata"]["labels"]["from"] == "archive"


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([], "CheckpointNotRecorded"),
        ([SimpleNamespace(status=ApiStatus.deprecated, checksum=CHECKSUM)],
         "CheckpointNotRecorded"),
        ([SimpleNamespace(status=ApiStatus.ready, checksum="sha256:" + "00" * 32)],
         "ChecksumMismatch"),
    ],
)
async def test_status_that_disagrees_with_the_api_is_refused(
    records: list[Any], reason: str
) -> None:
    async def listed(ids: list[str]) -> list[Any]:
        assert ids == ["42"]
        return records

    with pytest.raises(Refused) as refused:
        await verify_with_api(listed, checkpoint_facts("c", _checkpoint()))
    assert refused.value.reason == reason


async def test_status_that_agrees_with_the_api_passes() -> None:
    async def listed(ids: list[str]) -> list[Any]:
        return [SimpleNamespace(status=ApiStatus.ready, checksum=CHECKSUM)]

    await verify_with_api(listed, checkpoint_facts("c", _checkpoint()))


async def test_pod_name_and_node_from_the_spec() -> None:
    world = World(podName="elsewhere", nodeName="node-2")
    status = await world.run()
    assert (status.phase, status.pod_name, status.node_name) == (
        RestorePhase.Running, "elsewhere", "node-2"
    )
    assert world.stager.posts[0][0] == "agent-b"


async def test_waits_for_a_missing_checkpoint_then_restores_it() -> None:
    world = World(checkpoint={})
    world.kube.checkpoint = None
    task = asyncio.create_task(world.run())
    await world.clock.reached(10)
    assert not world.kube.creates and not world.stager.posts
    assert world.report.saved[-1].message == "waiting: checkpoint counter-1 does not exist"
    assert _condition(world.report.saved[-1], "CheckpointReady") == (
        "False", "CheckpointNotFound"
    )
    world.kube.checkpoint = _checkpoint()
    status = await task
    assert status.phase is RestorePhase.Running
    assert _condition(status, "CheckpointReady") == ("True", "Ready")


@pytest.mark.parametrize(
    ("checkpoint", "reason"),
    [(None, "Timeout"), (_checkpoint(phase="Checkpointing"), "Timeout")],
)
async def test_a_checkpoint_never_ready_fails_at_the_deadline(
    checkpoint: dict | None, reason: str
) -> None:
    world = World(checkpoint=checkpoint or {})
    world.kube.checkpoint = checkpoint
    status = await world.run()
    assert (status.phase, _condition(status, "Running")[1]) == (RestorePhase.Failed, reason)
    assert world.clock.t <= 300
    assert not world.kube.creates and not world.stager.posts


@pytest.mark.parametrize(
    ("world_args", "reason"),
    [
        ({"checkpoint": _checkpoint(phase="Failed")}, "CheckpointFailed"),
        (
            {"checkpoint": _checkpoint(gpu="NVIDIA H100 80GB HBM3"), "nodeName": "node-2"},
            "GpuNodeRequired",
        ),
        ({"checkpoint": _checkpoint(gpu="NVIDIA H100 80GB HBM3")}, "GpuNodeRequired"),
        ({"nodes": [_node("node-1", arch="arm64"), _node("node-2", arch="arm64")]},
         "NoCompatibleNode"),
        ({"nodeName": "node-9"}, "NodeNotFound"),
        ({"stager": Stager(error_code="checksum_mismatch")}, "ChecksumMismatch"),
    ],
)
async def test_refusals_end_failed_with_a_reason_and_no_pod(
    world_args: dict[str, Any], reason: str
) -> None:
    world = World(**world_args)
    status = await world.run()
    assert status.phase is RestorePhase.Failed
    assert _condition(status, "Running") == ("False", reason)
    assert reason in world.report.reasons
    assert not world.kube.creates and not world.kube.pods
    if reason != "ChecksumMismatch":
        assert not world.stager.posts


async def test_a_failed_staging_is_cleaned_up() -> None:
    world = World(stager=Stager(error_code="checksum_mismatch"))
    status = await world.run()
    assert "checksum mismatch" in status.message
    # Nothing was staged (the agent removes a mismatching archive's files itself).
    assert world.stager.deleted == []


async def test_gpu_checkpoint_goes_to_a_node_with_the_same_gpu() -> None:
    world = World(
        checkpoint=_checkpoint(gpu="NVIDIA H100 80GB HBM3", node="node-1"),
        nodes=[
            _node("node-1", ready=False, gpu="NVIDIA-H100-80GB-HBM3"),
            _node("node-2", gpu="NVIDIA-A100-SXM4-40GB"),
            _node("node-3", gpu="NVIDIA-H100-80GB-HBM3"),
            _node("node-4"),
        ],
        agents=[
            _agent("gpu-a", "node-1", gpu=True), _agent("gpu-b", "node-2", gpu=True),
            _agent("cpu-c", "node-3"), _agent("gpu-c", "node-3", gpu=True),
            _agent("cpu-d", "node-4"),
        ],
    )
    status = await world.run()
    assert (status.phase, status.node_name) == (RestorePhase.Running, "node-3")
    assert world.stager.posts[0][0] == "gpu-c"


async def test_source_node_not_ready_falls_back_to_another_compatible_node() -> None:
    world = World(nodes=[_node("node-1", ready=False), _node("node-0", arch="arm64"),
                         _node("node-2")])
    status = await world.run()
    assert status.node_name == "node-2"
    assert "source node node-1 unavailable" in status.conditions[1].message


async def test_the_location_travels_to_the_agent_with_the_request() -> None:
    world = World()
    await world.run()
    assert world.located == ["shared"]
    assert world.stager.posts[0][1].location == S3


async def test_node_local_archive_is_restored_on_its_node_only() -> None:
    # The source node is gone from the cluster (a NotReady one may come back: that waits).
    world = World(location=None, nodes=[_node("node-2")])
    status = await world.run()
    assert (status.phase, _condition(status, "Running")[1]) == (
        RestorePhase.Failed, "NoCompatibleNode"
    )
    assert "node-local" in status.message and not world.stager.posts
    named = World(location=None, nodeName="node-2")
    assert (await named.run()).node_name == "node-2"


async def test_unusable_location_is_refused() -> None:
    world = World(location=Destination(location="gone", type=LocationType.s3, bucket="bucket"))
    status = await world.run()
    assert _condition(status, "Running") == ("False", "StorageLocationNotFound")
    assert not world.stager.posts and not world.kube.creates


async def test_operator_restart_between_staging_and_pod_creation() -> None:
    world = World()

    class Crash(Exception):
        pass

    world.kube.fail_create = Crash("operator killed")
    with pytest.raises(Crash):
        await world.run()
    left = world.report.saved[-1]
    assert left.phase is RestorePhase.Restoring and left.staged is True
    assert not world.kube.pods

    # A new operator process reads the status back and carries on.
    status = await world.run(RestoreStatus.model_validate(left.model_dump(by_alias=True)))
    assert status.phase is RestorePhase.Running
    assert len(world.kube.creates) == 1
    # The second POST was answered by the same (finished) job: staged once.
    assert {r.restore_id for _, r in world.stager.posts} == {UID}
    assert world.stager.polls[UID] == 2


async def test_operator_restart_after_the_pod_was_created_adopts_it() -> None:
    world = World()
    await world.run()
    world.kube.pods["counter-1-restored"]["status"] = {"phase": "Pending"}
    world.kube.reads.clear()
    posts = len(world.stager.posts)
    middle = RestoreStatus(phase=RestorePhase.Restoring, node_name="node-1", staged=True)
    status = await world.run(middle)
    assert status.phase is RestorePhase.Running
    assert len(world.kube.creates) == 1 and len(world.stager.posts) == posts


async def test_agent_pod_replaced_while_staging() -> None:
    stager = Stager(steps=3)
    stager.interrupt_once = True
    world = World(stager=stager)
    task = asyncio.create_task(world.run())
    # The DaemonSet replaces the agent pod: a new name on the same node.
    world.agents = [_agent("agent-a2", "node-1"), _agent("agent-b", "node-2")]
    status = await task
    assert status.phase is RestorePhase.Running
    assert [name for name, _ in stager.posts] == ["agent-a2", "agent-a2"]
    assert "Retrying" in world.report.reasons
    assert len(world.kube.creates) == 1


class UnreachableAgent(Stager):
    """Agents named in `dead` never answer (killed without a word): every call fails as an
    unreachable agent does."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__(steps)
        self.dead: set[str] = set()
        self.failed_calls = 0

    def _check(self, agent: AgentPod) -> None:
        if agent.name in self.dead:
            self.failed_calls += 1
            raise Unavailable(f"agent {agent.ref} unreachable: ConnectError()")

    async def start_staging(self, agent: AgentPod, request: StageRequest) -> StageJob:
        self._check(agent)
        return await super().start_staging(agent, request)

    async def staging_job(
        self, agent: AgentPod, restore_id: str, *, wait: float = 0, phase: str | None = None
    ) -> StageJob:
        self._check(agent)
        return await super().staging_job(agent, restore_id, wait=wait, phase=phase)


async def test_agent_killed_while_staging_is_left_for_its_replacement() -> None:
    # The agent pod dies mid-staging without answering the long poll; the DaemonSet's new pod
    # (another name, another address) gets the same request, and only one Pod is created.
    stager = UnreachableAgent(steps=3)
    world = World(stager=stager)
    task = asyncio.create_task(world.run())
    await world.clock.reached(0.5)
    stager.dead.add("agent-a")
    # Still listed (terminating, not yet gone from the index): retried, no new staging.
    await world.clock.reached(4)
    assert [name for name, _ in stager.posts] == ["agent-a"]
    assert stager.failed_calls >= 2
    world.agents = [_agent("agent-a2", "node-1"), _agent("agent-b", "node-2")]
    status = await task
    assert status.phase is RestorePhase.Running
    assert [name for name, _ in stager.posts] == ["agent-a", "agent-a2"]
    assert status.agent == "ckpt-system/agent-a2"
    assert {"AgentUnavailable", "Retrying"} <= set(world.report.reasons)
    assert len(world.kube.creates) == 1


async def test_agent_that_lost_the_job_gets_it_again() -> None:
    stager = Stager(steps=3)
    stager.lose_once = True
    world = World(stager=stager)
    status = await world.run()
    assert status.phase is RestorePhase.Running
    assert len(stager.posts) == 2 and len(world.kube.creates) == 1


async def test_a_pod_of_that_name_not_ours_is_refused() -> None:
    world = World()
    world.kube.pods["counter-1-restored"] = {
        "metadata": {"name": "counter-1-restored", "annotations": {}},
        "spec": {"containers": []}, "status": {"phase": "Running"},
    }
    status = await world.run()
    assert (status.phase, _condition(status, "Running")[1]) == (RestorePhase.Failed, "PodExists")
    assert not world.stager.posts and not world.kube.creates


async def test_restored_pod_failing_to_start_fails_the_restore() -> None:
    world = World()
    original = world.kube.get_pod

    async def failing(namespace: str, name: str) -> Mapping[str, Any] | None:
        pod = await original(namespace, name)
        if pod is None:
            return None
        pod = dict(pod)
        pod["status"] = {"phase": "Pending", "containerStatuses": [{
            "name": "app",
            "state": {"waiting": {"reason": "RunContainerError", "message": "runc restore: x"}},
        }]}
        return pod

    world.kube.get_pod = failing  # type: ignore[method-assign]
    status = await world.run()
    assert status.phase is RestorePhase.Failed
    assert _condition(status, "Running")[1] == "RestoreFailed"
    assert "RunContainerError" in status.message
    # The staged files go once the Restore is over, whichever way it ended.
    assert world.stager.deleted == [("node-1", UID)]


async def test_terminal_restore_retries_a_cleanup_the_agent_missed() -> None:
    world = World()
    done = RestoreStatus(phase=RestorePhase.Running, node_name="node-1", staged=True)
    world.agents = []
    status = await world.run(done)
    assert status.staged is True and world.stager.deleted == []
    world.agents = [_agent("agent-a", "node-1")]
    status = await world.run(status)
    assert status.staged is False and world.stager.deleted == [("node-1", UID)]
    assert not world.kube.creates


async def test_waits_while_the_named_node_has_no_ready_agent() -> None:
    world = World(nodeName="node-2", agents=[_agent("agent-b", "node-2", ready=False)])
    task = asyncio.create_task(world.run())
    await world.clock.reached(20)
    assert _condition(world.report.saved[-1], "NodeChosen") == ("False", "NoAgent")
    world.agents = [_agent("agent-b", "node-2")]
    assert (await task).phase is RestorePhase.Running


def _facts(**over: Any) -> CheckpointFacts:
    base: dict[str, Any] = {
        "name": "c", "checkpoint_id": "1", "node": "n1", "source": "/a", "checksum": CHECKSUM,
        "gpu": "none", "platform": "linux/amd64", "template": {"spec": {"containers": []}},
    }
    return CheckpointFacts(**(base | over))


def _choose(facts: CheckpointFacts, requested: str | None, nodes: Iterable[dict],
            agents: Iterable[AgentPod]) -> str:
    return choose_node(facts, requested, nodes, agents)[0]


def test_choose_node_prefers_the_source_node_then_names() -> None:
    nodes = [_node("n3"), _node("n1"), _node("n2")]
    agents = [_agent("a1", "n1"), _agent("a2", "n2"), _agent("a3", "n3")]
    assert _choose(_facts(), None, nodes, agents) == "n1"
    assert _choose(_facts(node="n3"), None, nodes, agents) == "n3"
    assert _choose(_facts(node="gone"), None, nodes, agents) == "n1"
    cordoned = [_node("n1") | {"spec": {"unschedulable": True}}, _node("n2")]
    assert _choose(_facts(), None, cordoned, agents) == "n2"
    with pytest.raises(Waiting):
        _choose(_facts(), None, [_node("n1")], [_agent("a1", "n1", ready=False)])
    with pytest.raises(Refused) as refused:
        _choose(_facts(platform="linux/arm64"), None, nodes, agents)
    assert refused.value.reason == "NoCompatibleNode"


def test_restored_pod_keeps_the_template_and_binds_it() -> None:
    facts = _facts(template={
        "metadata": {"labels": {"app": "x"}, "annotations": {"team": "a"}},
        "spec": {"containers": [{"name": "app", "image": "img"}], "restartPolicy": "Always"},
    })
    resource = RestoreResource("ns", "r", UID, START, RestoreSpec(checkpoint_name="c"))
    pod = restored_pod(resource, facts, "p", "n2")
    assert pod["metadata"] == {
        "name": "p", "namespace": "ns",
        "labels": {"app": "x", "ckpt.dev/restored-from": "c", "ckpt.dev/restore-name": "r"},
        "annotations": {"team": "a", "ckpt.dev/restore": UID},
    }
    assert pod["spec"] == {
        "containers": [{"name": "app", "image": "img"}], "restartPolicy": "Always",
        "nodeName": "n2", "runtimeClassName": "ckpt",
    }
    # The checkpoint's template is not changed by building a Pod from it.
    assert "nodeName" not in facts.template["spec"]
