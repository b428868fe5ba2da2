"""The checkpoint flow: accept, route, register, dump, record, ready.

Plain async code, free of kopf: the handlers hand it the resource and the ways to reach
Kubernetes, the checkpoints API and the agents. Every step is idempotent and keyed, so a
restart at any point resumes without duplicates:

- the API record is created with the resource uid as `Idempotency-Key`, and its id is
  written to status at once;
- the agent job is keyed by the checkpoint id (the same POST returns the same job);
- recording looks at the API record's status first and only moves it forward.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus, Phase
from ckpt.apis.storagelocation import Destination
from ckpt.contract.agent import CheckpointJob, CheckpointRequest, JobState, Timings
from ckpt.contract.agent_client import AgentClient
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.contract.checkpoints_client import CheckpointsClient
from ckpt.errors import NotFound, ServiceError
from ckpt.operator import binding, metrics
from ckpt.operator.agents import AgentPod, choose_agent
from ckpt.operator.conditions import (
    ACCEPTED,
    DUMPED,
    READY,
    REGISTERED,
    set_condition,
)
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
from ckpt.operator.locations import NOT_ALLOWED, LocationError, Locations
from ckpt.operator.podtemplate import pod_template
from ckpt.operator.target import Blocked, NotCheckpointable, Target, resolve_target

log = logging.getLogger(__name__)

TERMINAL = frozenset({Phase.Ready, Phase.Failed})
# Tries of a dump whose agent stopped under it, before the checkpoint fails.
DUMP_ATTEMPTS = 3
_UNRECORDED = frozenset({ApiStatus.initializing, ApiStatus.updated_info})
# Agent phases during which the archive is being written to the store.
STORING_PHASES = frozenset({"storing"})


@dataclass(frozen=True)
class Resource:
    namespace: str
    name: str
    uid: str
    created: dt.datetime
    spec: CheckpointSpec
    # metadata.generation: every status this flow writes says which spec it acted on.
    generation: int | None = None

    @property
    def deadline(self) -> dt.datetime:
        return self.created + dt.timedelta(seconds=self.spec.timeout_seconds)


@dataclass
class Dependencies:
    api: CheckpointsClient
    agents: AgentClient
    get_pod: Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
    agent_pods: Callable[[], Iterable[AgentPod]]
    poll_interval: float = 0.5
    # StorageLocations; None (or no location at all) means each agent's node-local folder.
    locations: Locations | None = None
    clock: Clock = LOOP_CLOCK


class Checkpointer(Flow[CheckpointStatus]):
    """Drives one Checkpoint from wherever its status says it is to Ready or Failed."""

    def __init__(
        self,
        deps: Dependencies,
        resource: Resource,
        status: CheckpointStatus,
        report: Reporter[CheckpointStatus],
    ) -> None:
        super().__init__(
            status, report, label=f"{resource.namespace}/{resource.name}",
            agent_pods=deps.agent_pods, poll_interval=deps.poll_interval, clock=deps.clock,
        )
        self.deps = deps
        self.res = resource
        self._target: Target | None = None
        # When this process began the checkpoint: the total in status is timed from here,
        # and from the (coarser) startedAt only when a restarted operator took it over.
        self._began: float | None = None

    async def run(self) -> CheckpointStatus:
        if self.status.phase in TERMINAL:
            return self.status
        self.status.observed_generation = self.res.generation
        await self.drive(
            self._flow, self.res.deadline, f"not Ready within {self.res.spec.timeout_seconds}s"
        )
        return self.status

    async def _flow(self) -> None:
        agent = await self._accept()
        if not self.status.checkpoint_id:
            await self._register()
        job = await self._dump(agent)
        await self._record(job)
        await self._ready(job)

    # -- accept and route -------------------------------------------------------------------

    async def _accept(self) -> AgentPod:
        """Resolves target and agent, waiting (with the reason in status) while either is
        missing. A dump already handed to an agent goes back to that agent: the pod may be
        stopped by then (leaveRunning: false), which must not look like a missing target."""

        async def resolve() -> tuple[Target | None, AgentPod]:
            try:
                if self.status.checkpoint_id and self.status.agent:
                    return None, self._recorded_agent()
                pod = await self.deps.get_pod(self.res.namespace, self.res.spec.pod_name)
                target = resolve_target(self.res.spec, self.res.namespace, pod)
                if pod is not None and self.status.pod_template is None:
                    # What a Restore creates the new Pod from; saved with the next status write.
                    self.status.pod_template = pod_template(pod)
                return target, choose_agent(
                    target.node, self.deps.agent_pods(), target.needs_gpu
                )
            except Blocked as blocked:
                raise Waiting(ACCEPTED, blocked.reason, blocked.message) from blocked

        try:
            target, agent = await self.until(resolve, kind="Warning")
        except NotCheckpointable as exc:
            set_condition(self.status, ACCEPTED, False, exc.reason, exc.message)
            raise Failure(exc.reason, exc.message) from exc
        if target is not None:
            await self._check_location()
            await self._accepted(target, agent)
        return agent

    async def _check_location(self) -> None:
        """The Checkpoint's location must exist and allow this namespace (its
        spec.allowedNamespaces), before anything is registered or frozen."""
        if self.deps.locations is None:
            return
        try:
            await self.deps.locations.choose(self.res.spec.storage, self.res.namespace)
        except LocationError as exc:
            if exc.reason == "NoDefaultStorageLocation":
                return  # no location defined at all: the agent's node-local folder
            raise self._location_refused(exc) from exc

    def _location_refused(self, exc: LocationError) -> Failure:
        # The spec names what cannot be used: the Checkpoint is not accepted, and says why.
        set_condition(self.status, ACCEPTED, False, exc.reason, exc.message)
        return Failure(exc.reason, exc.message)

    def _recorded_agent(self) -> AgentPod:
        for agent in self.deps.agent_pods():
            if agent.ref == self.status.agent:
                return agent
        raise Blocked("NoAgent", f"agent {self.status.agent}, which holds the dump, is gone")

    async def _accepted(self, target: Target, agent: AgentPod) -> None:
        self._target = target
        self._began = self.clock.monotonic()
        self.status.node_name = target.node
        self.status.agent = agent.ref
        self.status.started_at = self.status.started_at or self.clock.stamp()
        self.status.message = f"checkpointing on node {target.node}"
        set_condition(
            self.status, ACCEPTED, True, "Accepted",
            f"{len(target.containers)} container(s) on node {target.node}, agent {agent.ref}"
            + (" (GPU)" if target.needs_gpu else ""),
        )
        self.report.event(
            "Normal", "Accepted",
            f"checkpointing {target.namespace}/{target.pod} "
            f"({', '.join(c.name for c in target.containers)}) on node {target.node} "
            f"via agent {agent.ref}",
        )
        if self.status.checkpoint_id:
            await self.report.save(self.status)
        # else registering comes next and saves all of it in one status write.

    # -- register -----------------------------------------------------------------------------

    async def _register(self) -> None:
        checkpoint_id = await self.call_api(
            "create",
            lambda: self.deps.api.create(
                idempotency_key=self.res.uid, name=f"{self.res.namespace}/{self.res.name}"
            ),
        )
        self.status.checkpoint_id = str(checkpoint_id)
        self.status.api_status = ApiStatus.initializing.value
        self.status.phase = Phase.Checkpointing
        set_condition(self.status, REGISTERED, True, "Registered", f"API id {checkpoint_id}")
        self.report.event("Normal", "Registered", f"checkpoint {checkpoint_id} in the API")
        await self.report.save(self.status)

    # -- dump ----------------------------------------------------------------------------------

    async def _destination(self) -> Destination | None:
        """The Checkpoint's location, with credentials for this one request."""
        if self.deps.locations is None:
            return None
        try:
            dest = await self.deps.locations.destination(
                self.res.spec.storage, namespace=self.res.namespace
            )
        except LocationError as exc:
            if exc.reason == "NoDefaultStorageLocation":
                return None  # no location defined at all: the agent's node-local folder
            if exc.reason == NOT_ALLOWED:
                raise self._location_refused(exc) from exc
            raise Failure(exc.reason, exc.message) from exc
        self.status.storage_location = dest.location
        return dest

    def _agent_request(self, destination: Destination | None = None) -> CheckpointRequest:
        target = self._target
        assert target is not None, "a job is only started after the target was resolved"
        return CheckpointRequest(
            checkpoint_id=str(self.status.checkpoint_id),
            namespace=target.namespace,
            pod=target.pod,
            pod_uid=target.pod_uid,
            containers=list(target.containers),
            leave_running=self.res.spec.leave_running,
            gpu=self.res.spec.gpu,
            destination=destination,
            pod_template=self.status.pod_template,
        )

    async def _dump(self, agent: AgentPod) -> CheckpointJob:
        job = await self._attempt(agent)
        for attempt in range(2, DUMP_ATTEMPTS + 1):
            if not (job.state is JobState.failed and job.retryable):
                break
            # The agent stopped under the job (a restart, a rollout, its pod deleted): its
            # containers were thawed when it came back, and the same request starts the job
            # over, on the node's current agent when the old pod is gone.
            self.report.event(
                "Warning", "Retrying", f"agent {agent.ref}: {job.error}; attempt {attempt}"
            )
            if self._target is None or not self.agent_listed(agent):
                self.status.agent = None
                agent = await self._accept()
            job = await self._attempt(agent)
        if job.state is JobState.failed or job.result is None:
            raise Failure("DumpFailed", f"agent {agent.ref}: {job.error or 'no result'}")
        set_condition(
            self.status, DUMPED, True, "Dumped",
            f"{_human(job.result.size_bytes)} at {job.result.restore_path}",
        )
        self.report.event(
            "Normal", "Dumped",
            f"{_human(job.result.size_bytes)} in {job.result.timings.total} ms "
            f"(freeze {job.result.timings.freeze} ms, dump {job.result.timings.dump} ms, "
            f"store {job.result.timings.store} ms)",
        )
        return job

    async def _attempt(self, agent: AgentPod) -> CheckpointJob:
        """One dump on `agent`, followed to its end; an agent that vanished under it is a
        failed, retryable attempt."""
        try:
            return await self._follow_job(agent, await self._start_or_find_job(agent))
        except AgentGone as gone:
            return CheckpointJob(
                checkpoint_id=str(self.status.checkpoint_id), state=JobState.failed,
                error=str(gone), retryable=True,
            )

    async def _follow_job(self, agent: AgentPod, job: CheckpointJob) -> CheckpointJob:
        """Follows the agent's job (long polls) until it succeeds or fails."""
        checkpoint_id = job.checkpoint_id
        while job.state is JobState.running:
            await self._follow(job)
            seen = (job.phase, job.bytes_done)

            def poll(phase: str = job.phase) -> Awaitable[CheckpointJob]:
                return self.deps.agents.checkpoint_job(
                    agent, checkpoint_id, wait=LONG_POLL, phase=phase
                )

            job = await self.call_agent(poll, agent)
            if job.state is JobState.running and (job.phase, job.bytes_done) == seen:
                # Nothing changed within the long poll (or an agent without long polls
                # answered at once): don't spin.
                await self.pause()
        return job

    async def _start_or_find_job(self, agent: AgentPod) -> CheckpointJob:
        if self._target is None:
            # Resumed after a restart: the job may be running already, and the target is
            # not resolved again unless the agent lost the job.
            checkpoint_id = str(self.status.checkpoint_id)
            try:
                return await self.call_agent(
                    lambda: self.deps.agents.checkpoint_job(agent, checkpoint_id), agent
                )
            except NotFound:
                self.status.agent = None
                agent = await self._accept()
        # The POST is idempotent by checkpoint id: a job already there is answered as is.
        destination = await self._destination()
        return await self.call_agent(
            lambda: self.deps.agents.start_checkpoint(agent, self._agent_request(destination)),
            agent,
        )

    async def _follow(self, job: CheckpointJob) -> None:
        phase = Phase.Uploading if job.phase in STORING_PHASES else Phase.Checkpointing
        message = f"agent: {job.phase or 'started'}" + (
            f", {_human(job.bytes_done)} stored" if job.bytes_done else ""
        )
        if (phase, message) != (self.status.phase, self.status.message):
            self.status.phase, self.status.message = phase, message
            await self.report.save(self.status)

    # -- record and ready --------------------------------------------------------------------

    async def _record(self, job: CheckpointJob) -> None:
        result = job.result
        assert result is not None
        self.status.phase = Phase.Uploading
        checkpoint_id = str(self.status.checkpoint_id)
        records = await self.call_api("list", lambda: self.deps.api.list([checkpoint_id]))
        current = records[0].status if records else None
        if current is None:
            raise Failure("ApiRecordGone", f"checkpoint {checkpoint_id} is not in the API")
        if current is ApiStatus.deprecated:
            raise Failure("ApiRecordDeprecated", f"checkpoint {checkpoint_id} was deprecated")
        if current in _UNRECORDED:
            # What binds the record to this Checkpoint (binding.py): a Restore or a deletion
            # acts on an archive only when its Checkpoint's status agrees with this info.
            info = {
                **binding.record_info(
                    namespace=self.res.namespace,
                    pod=self.res.spec.pod_name,
                    uid=self.res.uid,
                    restore_path=result.restore_path,
                    storage_location=self.status.storage_location,
                ),
                binding.NODE: self.status.node_name,
                binding.AGENT: self.status.agent,
                "runtime": result.runtime,
                "criu_version": result.criu_version,
                "containers": result.containers,
                "size_bytes": result.size_bytes,
                "timings": result.timings.model_dump(),
            }
            await self.call_api(
                "put_info",
                lambda: self.deps.api.put_info(checkpoint_id, result.gpu, result.platform, info),
            )
        if current is not ApiStatus.ready:
            await self.call_api(
                "uploaded",
                lambda: self.deps.api.uploaded(
                    checkpoint_id, result.restore_path, checksum=result.checksum
                ),
            )

    async def _ready(self, job: CheckpointJob) -> None:
        result = job.result
        assert result is not None
        if self._began is not None:
            total_ms = int((self.clock.monotonic() - self._began) * 1000)
        else:
            started = parse_time(self.status.started_at) or self.res.created
            total_ms = int((self.clock.now() - started).total_seconds() * 1000)
        self.status.phase = Phase.Ready
        self.status.message = ""
        self.status.api_status = ApiStatus.ready.value
        self.status.gpu = result.gpu
        self.status.platform = result.platform
        self.status.restore_path = result.restore_path
        self.status.checksum = result.checksum
        self.status.size_bytes = result.size_bytes
        self.status.size = _human(result.size_bytes)
        self.status.completed_at = self.clock.stamp()
        self.status.timings = Timings(**{**result.timings.model_dump(), "total": total_ms})
        set_condition(self.status, READY, True, "Ready", f"restore from {result.restore_path}")
        # Event and metrics first: once status says Ready, kopf stops this daemon (its `when`
        # filter no longer matches) and nothing after the save would run.
        self.report.event("Normal", "Ready", f"{self.status.size} in {total_ms} ms")
        metrics.CHECKPOINTS.labels("Ready", "Ready").inc()
        metrics.DURATION.observe(total_ms / 1000)
        await self.report.save(self.status)

    async def before_timeout(self) -> None:
        """At the deadline, a dump still running on the agent is stopped: its archive would
        never be recorded, and its containers stay frozen for nothing."""
        if not (self.status.checkpoint_id and self.status.agent):
            return
        try:
            agent = self._recorded_agent()
            async with asyncio.timeout(30):
                await self.deps.agents.cancel_checkpoint(agent, self.status.checkpoint_id)
        except (Blocked, ServiceError, TimeoutError) as exc:
            # The job may be finished, or unknown to the agent: nothing left to stop.
            log.info("%s/%s: no job cancelled: %s", self.res.namespace, self.res.name, exc)

    async def fail(self, reason: str, message: str) -> None:
        self.status.phase = Phase.Failed
        self.status.message = message
        self.status.completed_at = self.clock.stamp(precise=False)
        set_condition(self.status, READY, False, reason, message)
        metrics.CHECKPOINTS.labels("Failed", reason).inc()
        self.report.event("Warning", reason, message)
        if self.status.checkpoint_id:
            self.status.api_status = await self._abandon_record(reason, message)
        await self.report.save(self.status)

    async def _abandon_record(self, reason: str, message: str) -> str | None:
        """Leaves the API record saying why it failed, then deprecated so cleanup removes it:
        never an `initializing` record without a reason."""
        checkpoint_id = str(self.status.checkpoint_id)
        try:
            async with asyncio.timeout(30):
                records = await self.deps.api.list([checkpoint_id])
                if records and records[0].status in _UNRECORDED:
                    await self.deps.api.put_info(
                        checkpoint_id, "", "",
                        {"error": {"reason": reason, "message": message},
                         "namespace": self.res.namespace, "pod": self.res.spec.pod_name},
                    )
                await self.deps.api.deprecate(checkpoint_id)
        except (ServiceError, TimeoutError) as exc:
            metrics.API_ERRORS.labels("abandon").inc()
            log.warning("could not mark checkpoint %s failed in the API: %s", checkpoint_id, exc)
            return self.status.api_status
        return ApiStatus.deprecated.value


async def sync_api_status(api: CheckpointsClient, status: CheckpointStatus) -> str | None:
    """The API's current status of a Ready checkpoint ("absent" once cleanup removed it)."""
    if not status.checkpoint_id:
        return None
    records = await api.list([status.checkpoint_id])
    return records[0].status.value if records else "absent"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "Ki", "Mi", "Gi"):
        if value < 1024 or unit == "Gi":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
