"""The flow kit every operator flow is built on (ckpt.operator.flow), on looptime's virtual
clock: waiting with conditions, one retry policy for agents and the API, deadlines, the clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest
from pydantic import BaseModel

from ckpt.apis.checkpoint import Condition
from ckpt.errors import NotFound, Rejected, Unavailable
from ckpt.operator.agents import AgentPod
from ckpt.operator.flow import AgentGone, Clock, Failure, Flow, Waiting

pytestmark = pytest.mark.looptime

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Status(BaseModel):
    phase: str = ""
    message: str = ""
    conditions: list[Condition] = []


class Report:
    def __init__(self) -> None:
        self.saved: list[Status] = []
        self.events: list[tuple[str, str, str]] = []

    async def save(self, status: Status) -> None:
        self.saved.append(status.model_copy(deep=True))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def _agent(name: str) -> AgentPod:
    return AgentPod(name=name, namespace="ckpt-system", node="node-1", ip="10.0.0.1",
                    port=8443, gpu=False, ready=True)


class Probe(Flow[Status]):
    def __init__(self, agents: list[AgentPod] | None = None) -> None:
        self.agents = agents if agents is not None else [_agent("agent-a")]
        self.report_to = Report()
        super().__init__(Status(), self.report_to, label="test/probe",
                         agent_pods=lambda: list(self.agents), poll_interval=0.5,
                         clock=Clock(epoch=EPOCH))
        self.failed: list[tuple[str, str]] = []
        self.stopped = False

    async def fail(self, reason: str, message: str) -> None:
        self.failed.append((reason, message))

    async def before_timeout(self) -> None:
        self.stopped = True


def _now() -> float:
    return asyncio.get_running_loop().time()


async def test_until_says_what_it_waits_for_once_and_backs_off_to_the_cap() -> None:
    flow = Probe()
    tries: list[float] = []

    async def step() -> str:
        tries.append(_now())
        if len(tries) < 6:
            raise Waiting("Ready", "NotYet", "the thing is not there")
        return "there"

    assert await flow.until(step) == "there"
    # 0.5, 1, 2, 4, then the 5 s cap.
    assert [b - a for a, b in itertools.pairwise(tries)] == [0.5, 1, 2, 4, 5]
    assert flow.report_to.events == [("Normal", "NotYet", "the thing is not there")]
    [saved] = flow.report_to.saved
    assert saved.message == "waiting: the thing is not there"
    assert [(c.type, c.status, c.reason) for c in saved.conditions] == [
        ("Ready", "False", "NotYet")
    ]


async def test_an_agent_outage_is_retried_and_the_message_restored_after_it() -> None:
    flow = Probe()
    flow.status.message = "dumping"
    answers: list[BaseException | str] = [Unavailable("down"), Unavailable("down"), "job"]

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await flow.call_agent(call, flow.agents[0]) == "job"
    # One Event and one status write for the outage, however often it repeats.
    assert flow.report_to.events == [("Warning", "AgentUnavailable", "down")]
    assert [s.message for s in flow.report_to.saved] == ["retrying: down"]
    assert flow.status.message == "dumping"


async def test_an_agent_deleted_during_an_outage_ends_the_call() -> None:
    flow = Probe()

    async def call() -> str:
        flow.agents = [_agent("agent-a2")]  # the DaemonSet replaced the pod
        raise Unavailable("connection refused")

    with pytest.raises(AgentGone):
        await flow.call_agent(call, _agent("agent-a"))


async def test_refusals_fail_the_flow_and_not_found_goes_to_the_caller() -> None:
    flow = Probe()

    async def rejected() -> None:
        raise Rejected("bad request", status=400)

    async def missing() -> None:
        raise NotFound("no such job", status=404)

    with pytest.raises(Failure) as failure:
        await flow.call_agent(rejected)
    assert failure.value.reason == "AgentRejected"
    with pytest.raises(NotFound):
        await flow.call_agent(missing)
    with pytest.raises(Failure) as failure:
        await flow.call_api("create", rejected)
    assert failure.value.reason == "ApiRejected"


async def test_the_deadline_stops_the_steps_and_fails_with_the_last_message() -> None:
    flow = Probe()

    async def steps() -> None:
        await flow.say("staging")
        await asyncio.sleep(3600)

    await flow.drive(steps, EPOCH + dt.timedelta(seconds=60), "not Running within 60s")
    assert _now() == pytest.approx(60)
    assert flow.stopped
    assert flow.failed == [("Timeout", "not Running within 60s; last: staging")]


async def test_a_failure_in_the_steps_fails_the_flow() -> None:
    flow = Probe()

    async def steps() -> None:
        raise Failure("PodGone", "the pod was deleted")

    await flow.drive(steps, EPOCH + dt.timedelta(seconds=60), "late")
    assert flow.failed == [("PodGone", "the pod was deleted")] and not flow.stopped


async def test_the_clock_moves_with_the_loop_from_its_epoch() -> None:
    clock = Clock(epoch=EPOCH)
    assert clock.now() == EPOCH
    await asyncio.sleep(90)
    assert clock.now() == EPOCH + dt.timedelta(seconds=90)
    assert clock.stamp() == "2026-01-01T00:01:30.000Z"
    assert clock.stamp(precise=False) == "2026-01-01T00:01:30Z"
