"""The Restore flow with small fakes and looptime's virtual clock: no cluster, no agent, no root."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest

from ckpt.apis.restore import RestorePhase, RestoreSpec, RestoreStatus
from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.contract.agent import JobState, StageJob, StageRequest, StageResult, StageTimings
from ckpt.contract.checkpoints_api import Checkpoint
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.errors import NotFound, Unavailable
from ckpt.operator import binding
from ckpt.operator.agents import AgentPod
from ckpt.operator.flow import Clock, Failure, Waiting
from ckpt.operator.kube import PodExists
from ckpt.operator.locations import LocationError, Locations
from ckpt.operator.restore import (
    CheckpointFacts,
    RestoreDeps,
    Restorer,
    RestoreResource,
    checkpoint_facts,
    choose_node,
    restored_pod,
    verify_with_api,
)
from ckpt.operator.restore_clients import locator

UID = "0b6c5a4e-1111-2222-3333-444455556666"
# The Checkpoint's metadata.uid and its record's id in the checkpoints API.
CHECKPOINT_UID = "6a1c0d2e-7777-8888-9999-000011112222"
ID = "9e8d7c6b-5a49-3827-1605-f4e3d2c1b0a9"
S3 = Destination(location="shared", type=LocationType.s3, bucket="ckpt")
S3_PATH = f"s3://ckpt/demo/{ID}.tar.zst"
FILE_PATH = f"file:///var/lib/ckpt/archives/demo/{ID}.tar.zst"
CHECKSUM = "sha256:" + "ab" * 32
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


pytestmark = pytest.mark.looptime


async def reached(when: float) -> None:
    """Returns once the loop's (virtual) clock is at `when`: the flow under test has run
    every step it would take until then."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(when - loop.time(), 0))


def _node(name: str, *, ready: bool = True, arch: str = "amd64", gpu: str | None = None) -> dict:
    labels = {"kubernetes.io/arch": arch}
    if gpu:
        labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": gpu}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def _checkpoint(
    phase: str = "Ready", gpu: str = "none", node: str = "node-1", *, path: str = S3_PATH,
    location: str | None = "shared",
) -> dict:
    return {
        "metadata": {"name": "counter-1", "namespace": "demo", "uid": CHECKPOINT_UID},
        "spec": {"podName": "counter"},
        "status": {
            "phase": phase,
            "message": "dump failed: boom" if phase == "Failed" else "",
            "checkpointId": ID,
            "nodeName": node,
            "restorePath": path,
            "checksum": CHECKSUM,
            "gpu": gpu,
            "platform": "linux/amd64",
            "storageLocation": location,
            "podTemplate": {
                "metadata": {"labels": {"app": "counter"}},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox@sha256:" + "cd" * 32}],
                    "restartPolicy": "Always",
                },
            },
        },
    }


def bound_record(checkpoint: Mapping[str, Any], **info: Any) -> Checkpoint:
    """The API record the operator wrote for `checkpoint` (its info as `Checkpointer._record`
    writes it), with `info` changed."""
    status = checkpoint["status"]
    written = binding.record_info(
        namespace=checkpoint["metadata"]["namespace"], pod=checkpoint["spec"]["podName"],
        uid=checkpoint["metadata"]["uid"], restore_path=status["restorePath"],
        storage_location=status.get("storageLocation"),
    )
    return Checkpoint(
        id=status["checkpointId"], status=ApiStatus.ready, gpu=status["gpu"],
        platform=status["platform"], checksum=status["checksum"],
        info={**written, "node": status["nodeName"], "runtime": "runc", **info},
    )


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
        locate: Callable[[str | None], Awaitable[Destination | None]] | None = None,
        **spec: Any,
    ) -> None:
        # The flow's wall clock starts at START with the loop's virtual time.
        self.clock = Clock(epoch=START)
        self.location = location
        self.located: list[str | None] = []
        self._locate = locate
        # The checkpoints API's records; None: the record bound to the Checkpoint as it is.
        self.records: list[Checkpoint] | None = None
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

    async def list_records(self, ids: list[str]) -> list[Checkpoint]:
        records = self.records
        if records is None:
            checkpoint = self.kube.checkpoint
            records = [bound_record(checkpoint)] if checkpoint else []
        return [r for r in records if str(r.id) in ids]

    async def verify(
        self, facts: CheckpointFacts, namespace: str, location: Destination | None
    ) -> None:
        await verify_with_api(self.list_records, facts, namespace, location)

    async def locate(self, name: str | None) -> Destination | None:
        self.located.append(name)
        if self._locate is not None:
            return await self._locate(name)
        if self.location is not None and self.location.location == "gone":
            raise LocationError("StorageLocationNotFound", "StorageLocation 'gone' not found")
        return self.location

    def deps(self) -> RestoreDeps:
        return RestoreDeps(
            kube=self.kube, stager=self.stager, agent_pods=lambda: list(self.agents),
            clock=self.clock, locate=self.locate, verify=self.verify, poll_interval=0.5,
            timeout_seconds=300,
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
        UID, S3_PATH, CHECKSUM, "counter-1-restored"
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


def _bound(**info: Any) -> Checkpoint:
    return bound_record(_checkpoint(), **info)


# Another namespace's Checkpoint and its record, as the operator wrote them: what a forged
# status points at.
VICTIM_ID = "1d2c3b4a-5f6e-4d7c-8b9a-0a1b2c3d4e5f"
VICTIM_PATH = f"s3://ckpt/victims/{VICTIM_ID}.tar.zst"
VICTIM_CHECKSUM = "sha256:" + "cd" * 32
VICTIM = {
    "metadata": {
        "name": "db-1", "namespace": "victims", "uid": "0d0e0a0d-1111-4222-8333-abcdefabcdef"
    },
    "spec": {"podName": "db"},
    "status": {**_checkpoint()["status"], "checkpointId": VICTIM_ID, "restorePath": VICTIM_PATH,
               "checksum": VICTIM_CHECKSUM},
}


def _forged(**status: Any) -> dict[str, Any]:
    """The tenant's own Checkpoint (namespace demo), its status rewritten."""
    checkpoint = _checkpoint()
    checkpoint["status"].update(status)
    return checkpoint


@pytest.mark.parametrize(
    ("records", "checkpoint", "reason"),
    [
        ([], _checkpoint(), "CheckpointNotRecorded"),
        ([_bound().model_copy(update={"status": ApiStatus.deprecated})], _checkpoint(),
         "CheckpointNotRecorded"),
        ([_bound().model_copy(update={"checksum": "sha256:" + "00" * 32})],
         _checkpoint(), "ChecksumMismatch"),
        # Recorded by an operator that did not bind records to Checkpoints.
        ([_bound(checkpoint_uid=None)], _checkpoint(), "CheckpointNotBound"),
        # The status names another namespace's record (its id, archive and checksum).
        ([bound_record(VICTIM)],
         _forged(checkpointId=VICTIM_ID, restorePath=VICTIM_PATH, checksum=VICTIM_CHECKSUM),
         "BindingMismatch"),
        # A record of this namespace, but of another Checkpoint or pod.
        ([_bound(checkpoint_uid="7f7f7f7f-0000-4000-8000-000000000000")], _checkpoint(),
         "BindingMismatch"),
        ([_bound(pod="other")], _checkpoint(), "BindingMismatch"),
        # The status keeps the record but names another archive, location or node.
        ([_bound()], _forged(restorePath=VICTIM_PATH), "BindingMismatch"),
        ([_bound()], _forged(storageLocation="elsewhere"), "BindingMismatch"),
        ([_bound()], _forged(nodeName="node-2"), "BindingMismatch"),
        # A record written with the operator's API token, claiming this namespace and
        # Checkpoint but pointing at the victim's archive: its key is not this namespace's.
        ([bound_record(_forged(restorePath=VICTIM_PATH, checksum=VICTIM_CHECKSUM))],
         _forged(restorePath=VICTIM_PATH, checksum=VICTIM_CHECKSUM), "ArchiveOutsideNamespace"),
        # ... or another record's archive in this namespace's folder.
        ([bound_record(_forged(restorePath=f"s3://ckpt/demo/{VICTIM_ID}.tar.zst"))],
         _forged(restorePath=f"s3://ckpt/demo/{VICTIM_ID}.tar.zst"), "ArchiveOutsideNamespace"),
    ],
)
async def test_status_not_bound_to_this_checkpoint_by_the_api_is_refused(
    records: list[Checkpoint], checkpoint: dict[str, Any], reason: str
) -> None:
    async def listed(ids: list[str]) -> list[Any]:
        assert ids == [checkpoint["status"]["checkpointId"]]
        return records

    with pytest.raises(Failure) as refused:
        await verify_with_api(listed, checkpoint_facts("counter-1", checkpoint), "demo", S3)
    assert refused.value.reason == reason
    # Nothing of the other namespace is told.
    assert "victims" not in refused.value.message
    assert VICTIM["metadata"]["uid"] not in refused.value.message


async def test_status_bound_to_this_checkpoint_by_the_api_passes() -> None:
    async def listed(ids: list[str]) -> list[Any]:
        return [_bound()]

    await verify_with_api(listed, checkpoint_facts("counter-1", _checkpoint()), "demo", S3)
    # The same Checkpoint seen from another namespace's Restore is not bound to it.
    with pytest.raises(Failure) as refused:
        await verify_with_api(listed, checkpoint_facts("counter-1", _checkpoint()), "other", S3)
    assert refused.value.reason == "BindingMismatch"


async def test_a_restore_of_a_status_forged_to_another_namespaces_archive_is_refused() -> None:
    # Issue 21, finding 2: the tenant's Checkpoint status rewritten to name the victim's API
    # record, archive and checksum (which the API confirms as ready). Before, the Pod came
    # from the victim's memory.
    world = World(
        checkpoint=_forged(checkpointId=VICTIM_ID, restorePath=VICTIM_PATH,
                           checksum=VICTIM_CHECKSUM),
    )
    world.records = [bound_record(VICTIM)]
    status = await world.run()
    assert status.phase is RestorePhase.Failed
    assert _condition(status, "Running") == ("False", "BindingMismatch")
    assert "belongs to another namespace than demo" in status.message
    assert not world.stager.posts and not world.kube.creates


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
    await reached(10)
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
    assert asyncio.get_running_loop().time() <= 300
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
        ({"stager": Stager(error_code="too_large")}, "StagingTooLarge"),
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
    if reason not in ("ChecksumMismatch", "StagingTooLarge"):
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
    local = _checkpoint(path=FILE_PATH, location=None)
    world = World(checkpoint=local, location=None, nodes=[_node("node-2")])
    status = await world.run()
    assert (status.phase, _condition(status, "Running")[1]) == (
        RestorePhase.Failed, "NoCompatibleNode"
    )
    assert "node-local" in status.message and not world.stager.posts
    named = World(checkpoint=local, location=None, nodeName="node-2")
    assert (await named.run()).node_name == "node-2"


async def test_unusable_location_is_refused() -> None:
    world = World(location=Destination(location="gone", type=LocationType.s3, bucket="bucket"))
    status = await world.run()
    assert _condition(status, "Running") == ("False", "StorageLocationNotFound")
    assert not world.stager.posts and not world.kube.creates


async def test_a_location_that_does_not_allow_the_namespace_is_refused() -> None:
    # Issue 21, finding 9: the location admits only namespaces labelled team=a.
    shared = {"metadata": {"name": "shared"}, "spec": {
        "type": "s3", "bucket": "ckpt", "allowedNamespaces": {"matchLabels": {"team": "a"}},
    }}
    labels = {"demo": {"team": "b"}, "team-a": {"team": "a"}}

    async def get(name: str) -> dict[str, Any] | None:
        return shared if name == "shared" else None

    async def list_all() -> list[dict[str, Any]]:
        return [shared]

    async def read_secret(name: str) -> dict[str, str] | None:
        return None

    async def namespace_labels(name: str) -> dict[str, str] | None:
        return labels.get(name)

    locations = Locations(get, list_all, read_secret, namespace_labels)
    world = World(locate=locator(locations, "demo"))
    status = await world.run()
    assert _condition(status, "Running") == ("False", "LocationNotAllowed")
    assert status.message == (
        "StorageLocation 'shared' does not allow namespace 'demo' (its spec.allowedNamespaces "
        "does not select it)"
    )
    assert not world.stager.posts and not world.kube.creates
    # Where the selector admits the namespace, the same location is used.
    assert await locator(locations, "team-a")("shared") == S3


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
    await reached(0.5)
    stager.dead.add("agent-a")
    # Still listed (terminating, not yet gone from the index): retried, no new staging.
    await reached(4)
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
    await reached(20)
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
    with pytest.raises(Failure) as refused:
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
