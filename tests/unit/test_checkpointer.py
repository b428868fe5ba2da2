"""The operator's Checkpoint flow (`Checkpointer`) in process: small fakes of the checkpoints
API, the agents and the apiserver, and looptime's virtual clock, so backoffs, long polls and
deadlines of minutes run in milliseconds and their timing can be asserted exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus, Phase
from ckpt.contract.agent import CheckpointJob, CheckpointRequest, CheckpointResult, JobState
from ckpt.contract.checkpoints_api import Checkpoint
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.errors import NotFound, Rejected, ServiceError, Unavailable
from ckpt.operator.agents import AgentPod
from ckpt.operator.conditions import ACCEPTED, READY, get_condition
from ckpt.operator.locations import Locations
from ckpt.operator.reconcile import (
    LONG_POLL,
    Checkpointer,
    Dependencies,
    Resource,
    sync_api_status,
)

pytestmark = pytest.mark.looptime

NS, POD, NODE = "apps", "db", "node-1"
AGENT = AgentPod("agent-1", "ckpt-system", NODE, "10.0.0.9", 8443, gpu=False, ready=True)
RESULT = CheckpointResult(
    restore_path="/var/lib/ckpt/archives/x.tar.zst",
    checksum="sha256:" + "ab" * 32,
    size_bytes=3 * 1024 * 1024,
    gpu="none",
    platform="linux/amd64",
    runtime="runc",
    criu_version="4.1",
    containers=["app"],
)
Step = Callable[[], Awaitable[None]] | None


def running_pod(node: str = NODE) -> dict[str, Any]:
    return {
        "metadata": {"name": POD, "namespace": NS, "uid": "pod-uid"},
        "spec": {"nodeName": node, "containers": [{"name": "app"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "containerID": "containerd://c0ffee", "state": {"running": {}}}
            ],
        },
    }


class FakeApi:
    """The checkpoints API's lifecycle, with failures queued per method."""

    def __init__(self) -> None:
        self.records: dict[str, Checkpoint] = {}
        self.keys: dict[str, str] = {}
        self.fail: dict[str, list[ServiceError]] = {}
        self.calls: list[str] = []
        self.infos: list[Any] = []

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    async def create(
        self, idempotency_key: str | None = None, name: str | None = None
    ) -> uuid.UUID:
        self._enter("create")
        assert idempotency_key is not None
        if idempotency_key not in self.keys:
            new = uuid.uuid4()
            self.keys[idempotency_key] = str(new)
            self.records[str(new)] = Checkpoint(
                id=new, status=ApiStatus.initializing, gpu="", platform="", name=name
            )
        return uuid.UUID(self.keys[idempotency_key])

    async def list(self, ids: Iterable[uuid.UUID | str] | None = None) -> list[Checkpoint]:
        self._enter("list")
        return [self.records[str(i)] for i in ids or () if str(i) in self.records]

    async def put_info(self, checkpoint_id: str, gpu: str, platform: str, info: Any) -> None:
        self._enter("put_info")
        self.infos.append(info)
        self._move(checkpoint_id, ApiStatus.updated_info)

    async def uploaded(
        self, checkpoint_id: str, restore_path: str | None, checksum: str | None = None
    ) -> None:
        self._enter("uploaded")
        self._move(checkpoint_id, ApiStatus.ready)

    async def deprecate(self, checkpoint_id: str) -> None:
        self._enter("deprecate")
        self._move(checkpoint_id, ApiStatus.deprecated)

    def _move(self, checkpoint_id: str, to: ApiStatus) -> None:
        record = self.records.get(checkpoint_id)
        if record is None:
            raise NotFound(f"checkpoint {checkpoint_id} not found", status=404)
        self.records[checkpoint_id] = record.model_copy(update={"status": to})


class FakeAgents:
    """One agent's jobs. `script` lists the successive answers to long polls of a job; the
    last one repeats. A POST of a job that failed retryably starts it over."""

    def __init__(self) -> None:
        self.jobs: dict[str, CheckpointJob] = {}
        self.script: list[CheckpointJob | None] = []
        self.fail: dict[str, list[ServiceError]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[CheckpointRequest] = []

    def _enter(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def start_checkpoint(self, agent: AgentPod, request: CheckpointRequest) -> CheckpointJob:
        self._enter("start_checkpoint", agent=agent.ref)
        self.requests.append(request)
        job = self.jobs.get(request.checkpoint_id)
        if job is None or job.retryable:
            job = CheckpointJob(
                checkpoint_id=request.checkpoint_id, state=JobState.running, phase="queued"
            )
            self.jobs[request.checkpoint_id] = job
        return job

    async def checkpoint_job(
        self, agent: AgentPod, checkpoint_id: str, *, wait: float = 0, phase: str | None = None
    ) -> CheckpointJob:
        self._enter("checkpoint_job", wait=wait, phase=phase)
        job = self.jobs.get(checkpoint_id)
        if job is None:
            raise NotFound(f"no checkpoint job {checkpoint_id!r}", status=404)
        if wait and self.script:
            nxt = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if nxt is None:
                # Nothing changes: the agent holds the long poll for its full length.
                await asyncio.sleep(wait)
            else:
                job = self.jobs[checkpoint_id] = nxt.model_copy(
                    update={"checkpoint_id": checkpoint_id}
                )
        return job

    async def cancel_checkpoint(self, agent: AgentPod, checkpoint_id: str) -> None:
        self._enter("cancel_checkpoint")
        if checkpoint_id not in self.jobs:
            raise NotFound("no job", status=404)
        self.jobs[checkpoint_id] = self.jobs[checkpoint_id].model_copy(
            update={"state": JobState.failed, "error": "cancelled on request"}
        )

    async def delete_archive(self, agent: AgentPod, checkpoint_id: str) -> None:
        raise AssertionError("the flow never deletes archives")


class FakeReporter:
    def __init__(self) -> None:
        self.saved: list[CheckpointStatus] = []
        self.events: list[tuple[str, str, str]] = []

    async def save(self, status: CheckpointStatus) -> None:
        self.saved.append(status.model_copy(deep=True))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def done(result: CheckpointResult = RESULT) -> CheckpointJob:
    return CheckpointJob(
        checkpoint_id="", state=JobState.succeeded, phase="done", result=result,
        bytes_done=result.size_bytes,
    )


def failed(error: str, *, retryable: bool) -> CheckpointJob:
    return CheckpointJob(checkpoint_id="", state=JobState.failed, error=error, retryable=retryable)


def running(phase: str, bytes_done: int = 0) -> CheckpointJob:
    return CheckpointJob(
        checkpoint_id="", state=JobState.running, phase=phase, bytes_done=bytes_done
    )


class World:
    """A Checkpoint resource, the fakes around it, and one `Checkpointer` run at a time."""

    def __init__(self, timeout_seconds: int = 600) -> None:
        self.api = FakeApi()
        self.agents = FakeAgents()
        self.agent_pods: list[AgentPod] = [AGENT]
        self.pods: list[Mapping[str, Any] | None] = [running_pod()]
        self.pod_reads = 0
        self.report = FakeReporter()
        self.resource = Resource(
            namespace=NS,
            name="db-ckpt",
            uid="uid-1",
            created=dt.datetime.now(dt.UTC),
            spec=CheckpointSpec(pod_name=POD, timeout_seconds=timeout_seconds),
        )
        self.agents.script = [running("dumping"), running("storing", 1024), done()]

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        assert (namespace, name) == (NS, POD)
        self.pod_reads += 1
        # Successive reads walk through `pods`; the last one stays.
        return self.pods.pop(0) if len(self.pods) > 1 else self.pods[0]

    def deps(self) -> Dependencies:
        return Dependencies(
            api=self.api,  # type: ignore[arg-type]
            agents=self.agents,  # type: ignore[arg-type]
            get_pod=self.get_pod,
            agent_pods=lambda: list(self.agent_pods),
            poll_interval=0.5,
        )

    async def run(self, status: CheckpointStatus | None = None) -> CheckpointStatus:
        flow = Checkpointer(self.deps(), self.resource, status or CheckpointStatus(), self.report)
        return await flow.run()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def test_happy_path_registers_dumps_records_and_is_ready() -> None:
    world = World()
    status = await world.run()

    assert status.phase is Phase.Ready
    assert status.api_status == "ready"
    assert (status.restore_path, status.checksum, status.size) == (
        RESULT.restore_path, RESULT.checksum, "3.0Mi"
    )
    assert status.node_name == NODE and status.agent == AGENT.ref
    (record,) = world.api.records.values()
    assert str(record.id) == status.checkpoint_id and record.status is ApiStatus.ready
    assert world.api.keys == {"uid-1": status.checkpoint_id}
    assert world.api.infos[0]["node"] == NODE and world.api.infos[0]["runtime"] == "runc"
    assert world.report.reasons() == ["Accepted", "Registered", "Dumped", "Ready"]
    (request,) = world.agents.requests
    assert request.checkpoint_id == status.checkpoint_id
    assert [c.container_id for c in request.containers] == ["c0ffee"]
    # Status followed the agent's phases: storing shows as Uploading with the bytes stored.
    phases = [(s.phase, s.message) for s in world.report.saved]
    assert (Phase.Checkpointing, "agent: dumping") in phases
    assert (Phase.Uploading, "agent: storing, 1.0Ki stored") in phases
    assert world.report.saved[-1].phase is Phase.Ready


async def test_long_polls_carry_the_phase_seen_and_unchanged_answers_pause() -> None:
    world = World()
    # The second poll comes back unchanged at once (an agent without long polls).
    world.agents.script = [running("dumping"), running("dumping"), done()]
    start = loop_time()
    await world.run()
    polls = [kw for name, kw in world.agents.calls if name == "checkpoint_job"]
    assert [p["phase"] for p in polls] == ["queued", "dumping", "dumping"]
    assert all(p["wait"] == LONG_POLL for p in polls)
    # One pause of poll_interval after the unchanged answer, and no other waiting.
    assert loop_time() - start == pytest.approx(0.5)


async def test_a_missing_target_blocks_with_backoff_then_is_accepted() -> None:
    world = World()
    world.pods = [None, None, None, running_pod()]
    start = loop_time()
    status = await world.run()

    assert status.phase is Phase.Ready
    assert world.pod_reads == 4
    # poll_interval 0.5, doubling: 0.5 + 1 + 2 before the fourth read.
    assert loop_time() - start == pytest.approx(3.5)
    blocked = [s for s in world.report.saved if s.message.startswith("waiting:")]
    # Saved and announced once, when the condition changed, not on every retry.
    assert len(blocked) == 1
    assert get_condition(blocked[0], ACCEPTED).reason == "TargetNotFound"  # type: ignore[union-attr]
    assert world.report.reasons().count("TargetNotFound") == 1
    accepted = get_condition(status, ACCEPTED)
    assert accepted is not None and accepted.status == "True"


async def test_backoff_of_a_blocked_target_is_capped() -> None:
    world = World()
    world.pods = [None] * 6 + [running_pod()]
    start = loop_time()
    await world.run()
    assert loop_time() - start == pytest.approx(0.5 + 1 + 2 + 4 + 5 + 5)


@pytest.mark.parametrize(
    ("pods", "agent_pods", "reason"),
    [
        ([None], [AGENT], "TargetNotFound"),
        ([running_pod()], [], "NoAgent"),
        ([running_pod()], [AgentPod("a", "ns", NODE, "10.0.0.1", 1, False, False)], "NoAgent"),
    ],
)
async def test_blocked_until_the_deadline_fails_with_timeout(
    pods: list[Mapping[str, Any] | None], agent_pods: list[AgentPod], reason: str
) -> None:
    world = World(timeout_seconds=60)
    world.pods, world.agent_pods = pods, agent_pods
    start = loop_time()
    status = await world.run()

    assert loop_time() - start == pytest.approx(60, abs=0.1)
    assert status.phase is Phase.Failed
    ready = get_condition(status, READY)
    assert ready is not None and ready.reason == "Timeout"
    assert "not Ready within 60s; last: waiting:" in status.message
    assert reason in world.report.reasons()
    # Nothing was registered, so nothing is abandoned in the API.
    assert world.api.calls == [] and status.checkpoint_id is None


async def test_api_outage_is_retried_in_status_until_it_answers() -> None:
    world = World()
    down = Unavailable("checkpoints API unreachable", status=None)
    world.api.fail["create"] = [down, down, down]
    start = loop_time()
    status = await world.run()

    assert status.phase is Phase.Ready
    assert world.api.calls.count("create") == 4
    assert loop_time() - start == pytest.approx(1 + 2 + 4 + 0, abs=0.01)
    retrying = [s for s in world.report.saved if s.message.startswith("retrying:")]
    # The same message is written once, not once per attempt, and not after the API answered.
    assert len(retrying) == 1 and "create failed" in retrying[0].message
    assert world.report.reasons().count("ApiUnavailable") == 1


async def test_api_rejection_fails_at_once() -> None:
    world = World()
    world.api.fail["create"] = [Rejected("no such tenant", status=403)]
    start = loop_time()
    status = await world.run()
    assert loop_time() - start == 0
    assert status.phase is Phase.Failed
    assert get_condition(status, READY).reason == "ApiRejected"  # type: ignore[union-attr]
    assert "no such tenant" in status.message


async def test_agent_rejection_fails_and_abandons_the_api_record() -> None:
    world = World()
    world.agents.fail["start_checkpoint"] = [Rejected("invalid request", status=422)]
    status = await world.run()

    assert status.phase is Phase.Failed
    assert get_condition(status, READY).reason == "AgentRejected"  # type: ignore[union-attr]
    (record,) = world.api.records.values()
    # The record says why, then is deprecated so cleanup removes it.
    assert record.status is ApiStatus.deprecated and status.api_status == "deprecated"
    assert world.api.infos[-1]["error"] == {"reason": "AgentRejected", "message": status.message}


async def test_agent_outage_is_retried() -> None:
    world = World()
    world.agents.fail["start_checkpoint"] = [Unavailable("agent unreachable")] * 2
    start = loop_time()
    status = await world.run()
    assert status.phase is Phase.Ready
    assert world.agents.count("start_checkpoint") == 3
    assert loop_time() - start == pytest.approx(1 + 2)
    assert "AgentUnavailable" in world.report.reasons()


async def test_retryable_dump_failures_start_the_job_over() -> None:
    world = World()
    world.agents.script = [
        failed("agent restarted while the job was running", retryable=True),
        failed("agent shut down while the job was running", retryable=True),
        done(),
    ]
    status = await world.run()
    assert status.phase is Phase.Ready
    assert world.agents.count("start_checkpoint") == 3
    assert world.report.reasons().count("Retrying") == 2
    # Every attempt is the same request: the agent keys it by checkpoint id.
    assert len({r.model_dump_json() for r in world.agents.requests}) == 1


async def test_an_agent_pod_deleted_mid_dump_hands_the_dump_to_its_replacement() -> None:
    world = World(timeout_seconds=600)
    replacement = dataclasses.replace(AGENT, name="agent-2", ip="10.0.0.10")

    class Deleted(FakeAgents):
        """The first pod's address stops answering mid-dump, and the pod leaves the index
        after a few calls (the DaemonSet deleted it and started `replacement`)."""

        unanswered = 0

        async def checkpoint_job(self, agent: AgentPod, checkpoint_id: str, *,
                                 wait: float = 0, phase: str | None = None) -> CheckpointJob:
            if agent.name == AGENT.name and self.count("checkpoint_job") >= 1:
                self.unanswered += 1
                if self.unanswered == 3:
                    world.agent_pods = [replacement]
                raise Unavailable(f"agent {agent.ref} unreachable: ConnectError")
            return await super().checkpoint_job(agent, checkpoint_id, wait=wait, phase=phase)

    world.agents = Deleted()
    world.agents.script = [running("dumping"), done()]
    world.agents.jobs = {}
    start = loop_time()
    status = await world.run()

    assert status.phase is Phase.Ready, status.message
    assert status.agent == replacement.ref
    starts = [kw["agent"] for name, kw in world.agents.calls if name == "start_checkpoint"]
    assert starts == [AGENT.ref, replacement.ref]
    assert "Retrying" in world.report.reasons()
    # Handed over once the old pod left the index, not at the deadline.
    assert loop_time() - start < 60


async def test_dump_attempts_are_bounded() -> None:
    world = World()
    world.agents.script = [failed("agent restarted", retryable=True)]
    status = await world.run()
    assert status.phase is Phase.Failed
    assert world.agents.count("start_checkpoint") == 3
    ready = get_condition(status, READY)
    assert ready is not None and ready.reason == "DumpFailed"
    assert "agent restarted" in status.message


async def test_a_final_dump_failure_is_not_retried_and_the_record_is_abandoned() -> None:
    world = World()
    world.agents.script = [failed("CRIU refused: no iptables-restore", retryable=False)]
    status = await world.run()
    assert status.phase is Phase.Failed
    assert world.agents.count("start_checkpoint") == 1
    assert status.api_status == "deprecated"
    assert world.report.events[-1] == ("Warning", "DumpFailed", status.message)


async def test_the_deadline_cancels_a_running_dump() -> None:
    world = World(timeout_seconds=120)
    world.agents.script = [running("dumping"), None]
    start = loop_time()
    status = await world.run()

    assert loop_time() - start == pytest.approx(120, abs=0.1)
    assert status.phase is Phase.Failed
    assert get_condition(status, READY).reason == "Timeout"  # type: ignore[union-attr]
    assert "last: agent: dumping" in status.message
    assert world.agents.count("cancel_checkpoint") == 1
    assert status.api_status == "deprecated"


async def test_abandoning_survives_an_api_outage() -> None:
    world = World()
    world.agents.script = [failed("container gone", retryable=False)]
    world.api.fail["deprecate"] = [Unavailable("down")]
    status = await world.run()
    assert status.phase is Phase.Failed
    # The record could not be deprecated: status keeps what the API last said.
    assert status.api_status == "initializing"
    assert world.report.saved[-1].phase is Phase.Failed


async def test_a_cancel_the_agent_does_not_know_is_harmless() -> None:
    world = World(timeout_seconds=30)
    world.agents.script = [None]
    world.agents.fail["cancel_checkpoint"] = [NotFound("gone", status=404)]
    status = await world.run()
    assert status.phase is Phase.Failed and world.agents.count("cancel_checkpoint") == 1


async def test_terminal_status_is_left_alone() -> None:
    world = World()
    for phase in (Phase.Ready, Phase.Failed):
        status = await world.run(CheckpointStatus(phase=phase))
        assert status.phase is phase
    assert world.api.calls == [] and world.agents.calls == [] and world.pod_reads == 0


async def test_every_status_written_names_the_generation_it_acted_on() -> None:
    world = World()
    world.resource = dataclasses.replace(world.resource, generation=3)
    status = await world.run()
    assert status.phase is Phase.Ready and status.observed_generation == 3
    assert len(world.report.saved) > 2
    assert {saved.observed_generation for saved in world.report.saved} == {3}
    # Blocked (no target pod) until the deadline: the waiting and the failure say it too.
    blocked = World(timeout_seconds=10)
    blocked.pods = [None]
    blocked.resource = dataclasses.replace(blocked.resource, generation=2)
    status = await blocked.run()
    assert status.phase is Phase.Failed and len(blocked.report.saved) >= 2
    assert {saved.observed_generation for saved in blocked.report.saved} == {2}


def resumed_status(checkpoint_id: str) -> CheckpointStatus:
    return CheckpointStatus(
        phase=Phase.Checkpointing, checkpoint_id=checkpoint_id, agent=AGENT.ref, node_name=NODE,
        api_status="initializing", started_at="2026-01-01T00:00:00.000Z",
    )


async def seeded(world: World) -> str:
    """A record and a running agent job, as an operator that died mid-dump left them."""
    checkpoint_id = str(await world.api.create(idempotency_key="uid-1"))
    world.api.calls.clear()
    world.agents.jobs[checkpoint_id] = CheckpointJob(
        checkpoint_id=checkpoint_id, state=JobState.running, phase="dumping"
    )
    return checkpoint_id


async def test_a_restarted_operator_follows_the_running_job_without_duplicates() -> None:
    world = World()
    checkpoint_id = await seeded(world)
    # The pod is gone by now (leaveRunning: false): the recorded agent is used, not the pod.
    world.pods = [None]
    status = await world.run(resumed_status(checkpoint_id))

    assert status.phase is Phase.Ready and status.checkpoint_id == checkpoint_id
    assert "create" not in world.api.calls and len(world.api.records) == 1
    assert world.agents.count("start_checkpoint") == 0 and world.pod_reads == 0
    assert "Registered" not in world.report.reasons()


async def test_a_restarted_operator_restarts_a_job_the_agent_lost() -> None:
    world = World()
    checkpoint_id = await seeded(world)
    del world.agents.jobs[checkpoint_id]
    status = await world.run(resumed_status(checkpoint_id))

    assert status.phase is Phase.Ready
    assert world.pod_reads == 1 and world.agents.count("start_checkpoint") == 1
    assert world.agents.requests[0].checkpoint_id == checkpoint_id
    assert "create" not in world.api.calls


async def test_a_resumed_dump_whose_agent_is_gone_waits_then_fails() -> None:
    world = World(timeout_seconds=45)
    checkpoint_id = await seeded(world)
    world.agent_pods = []
    status = await world.run(resumed_status(checkpoint_id))
    assert status.phase is Phase.Failed
    assert "NoAgent" in world.report.reasons()
    assert world.agents.calls == []
    # The failure is recorded on the record that was there.
    assert world.api.records[checkpoint_id].status is ApiStatus.deprecated


async def test_recording_moves_the_api_record_only_forward() -> None:
    world = World()
    checkpoint_id = await seeded(world)
    world.agents.jobs[checkpoint_id] = done().model_copy(update={"checkpoint_id": checkpoint_id})
    world.api._move(checkpoint_id, ApiStatus.ready)
    status = await world.run(resumed_status(checkpoint_id))
    assert status.phase is Phase.Ready
    assert "put_info" not in world.api.calls and "uploaded" not in world.api.calls


@pytest.mark.parametrize(
    ("api_state", "reason"),
    [(None, "ApiRecordGone"), (ApiStatus.deprecated, "ApiRecordDeprecated")],
)
async def test_a_record_gone_or_deprecated_fails_the_checkpoint(
    api_state: ApiStatus | None, reason: str
) -> None:
    world = World()
    checkpoint_id = await seeded(world)
    world.agents.jobs[checkpoint_id] = done().model_copy(update={"checkpoint_id": checkpoint_id})
    if api_state is None:
        del world.api.records[checkpoint_id]
    else:
        world.api._move(checkpoint_id, api_state)
    status = await world.run(resumed_status(checkpoint_id))
    assert status.phase is Phase.Failed
    assert get_condition(status, READY).reason == reason  # type: ignore[union-attr]
    # Abandoning a record that is gone is a no-op, not a crash.
    assert status.api_status == "deprecated" if api_state else "initializing"


async def test_sync_api_status_reflects_the_record() -> None:
    api = FakeApi()
    assert await sync_api_status(api, CheckpointStatus()) is None  # type: ignore[arg-type]
    checkpoint_id = str(await api.create(idempotency_key="k"))
    status = CheckpointStatus(checkpoint_id=checkpoint_id)
    assert await sync_api_status(api, status) == "initializing"  # type: ignore[arg-type]
    del api.records[checkpoint_id]
    assert await sync_api_status(api, status) == "absent"  # type: ignore[arg-type]


def _locations(items: dict[str, dict[str, Any]]) -> Locations:
    async def get(name: str) -> dict[str, Any] | None:
        return items.get(name)

    async def list_all() -> list[dict[str, Any]]:
        return list(items.values())

    async def read_secret(name: str) -> dict[str, str] | None:
        return {"accessKeyId": "AK", "secretAccessKey": "SK"} if name == "keys" else None

    return Locations(get, list_all, read_secret)


S3_MAIN = {
    "metadata": {"name": "s3-main"},
    "spec": {"type": "s3", "bucket": "ckpts", "default": True,
             "credentialsSecretRef": {"name": "keys"}},
}


async def test_the_named_or_default_location_goes_to_the_agent_with_its_credentials() -> None:
    for storage in ("s3-main", None):
        world = World()
        world.resource = dataclasses.replace(
            world.resource, spec=CheckpointSpec(pod_name=POD, storage=storage)
        )
        deps = world.deps()
        deps.locations = _locations({"s3-main": S3_MAIN})
        status = await Checkpointer(deps, world.resource, CheckpointStatus(), world.report).run()
        assert status.phase is Phase.Ready and status.storage_location == "s3-main"
        (request,) = world.agents.requests
        assert request.destination is not None and request.destination.bucket == "ckpts"
        assert request.destination.credentials is not None
        assert request.destination.identities == [], "a dump never carries the age identity"
        assert "SK" not in status.model_dump_json() and not any(
            "SK" in message for _, _, message in world.report.events
        )


async def test_a_missing_location_fails_clearly_without_calling_an_agent() -> None:
    world = World()
    world.resource = dataclasses.replace(
        world.resource, spec=CheckpointSpec(pod_name=POD, storage="nowhere")
    )
    deps = world.deps()
    deps.locations = _locations({"s3-main": S3_MAIN})
    status = await Checkpointer(deps, world.resource, CheckpointStatus(), world.report).run()
    assert status.phase is Phase.Failed
    assert "StorageLocation 'nowhere' does not exist" in status.message
    assert world.agents.requests == []


async def test_the_record_binds_the_checkpoint_and_its_archive() -> None:
    # Issue 21, finding 2: what a Restore or a deletion later checks a status against.
    world = World()
    status = await world.run()
    assert status.phase is Phase.Ready
    (info,) = world.api.infos
    assert {k: info[k] for k in
            ("namespace", "pod", "checkpoint_uid", "restore_path", "storage_location", "node")
            } == {
        "namespace": NS, "pod": POD, "checkpoint_uid": "uid-1",
        "restore_path": RESULT.restore_path, "storage_location": None, "node": NODE,
    }


def _team_only_locations(labels: dict[str, dict[str, str]]) -> Locations:
    """The default S3 location, admitting only namespaces labelled team=a."""
    restricted = {**S3_MAIN, "spec": {**S3_MAIN["spec"],
                                      "allowedNamespaces": {"matchLabels": {"team": "a"}}}}

    async def get(name: str) -> dict[str, Any] | None:
        return restricted if name == "s3-main" else None

    async def list_all() -> list[dict[str, Any]]:
        return [restricted]

    async def read_secret(name: str) -> dict[str, str] | None:
        return {"accessKeyId": "AK", "secretAccessKey": "SK"}

    async def namespace_labels(name: str) -> dict[str, str] | None:
        return labels.get(name)

    return Locations(get, list_all, read_secret, namespace_labels)


@pytest.mark.parametrize("storage", ["s3-main", None])
async def test_a_location_that_does_not_allow_the_namespace_is_not_accepted(
    storage: str | None,
) -> None:
    # Issue 21, finding 9: named or default, a location whose allowedNamespaces does not
    # select the Checkpoint's namespace refuses it before anything is registered or frozen.
    world = World()
    world.resource = dataclasses.replace(
        world.resource, spec=CheckpointSpec(pod_name=POD, storage=storage)
    )
    deps = world.deps()
    deps.locations = _team_only_locations({NS: {"team": "b"}})
    status = await Checkpointer(deps, world.resource, CheckpointStatus(), world.report).run()
    assert status.phase is Phase.Failed
    accepted = get_condition(status, ACCEPTED)
    assert accepted is not None
    assert (accepted.status, accepted.reason) == ("False", "LocationNotAllowed")
    assert accepted.message == (
        f"StorageLocation 's3-main' does not allow namespace '{NS}' (its "
        "spec.allowedNamespaces does not select it)"
    )
    assert world.api.calls == [] and world.agents.requests == []
    assert "Accepted" not in world.report.reasons()


async def test_a_location_that_allows_the_namespace_is_used() -> None:
    world = World()
    deps = world.deps()
    deps.locations = _team_only_locations({NS: {"team": "a"}})
    status = await Checkpointer(deps, world.resource, CheckpointStatus(), world.report).run()
    assert status.phase is Phase.Ready and status.storage_location == "s3-main"
    assert get_condition(status, ACCEPTED).status == "True"  # type: ignore[union-attr]
