"""What every resource flow of the operator shares: Checkpoint, Restore, and the next ones.

A flow is plain async code that drives one resource from wherever its status says it is to a
terminal phase; each flow module holds only its own steps. This kit gives all of them:

- two outcomes besides success: `Failure` ends the flow Failed with a reason, `Waiting` names
  a condition not met yet, which `Flow.until` says in status and tries again with backoff;
- reporting through a `Reporter` (status subresource and Events), a message written once
  however often it is repeated;
- calls to agents and the checkpoints API under one retry policy (`ckpt.retry`): outages are
  retried until the resource's deadline ends the flow, refusals fail it, and an agent pod that
  is deleted while a call waits on it ends the call with `AgentGone`, so that the step starts
  over on the node's current agent;
- one clock, the event loop's: deadlines, stamps and timings read it, so the unit tests run
  every flow on looptime's virtual clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

from ckpt.apis.checkpoint import Condition
from ckpt.errors import NotFound, ServiceError, Unavailable
from ckpt.operator import metrics
from ckpt.operator.agents import AgentPod
from ckpt.operator.conditions import set_condition
from ckpt.retry import Backoff, retry

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S", bound="FlowStatus")
S_contra = TypeVar("S_contra", contravariant=True)

# Outages of the API or an agent are retried until the resource's deadline ends the flow.
API_BACKOFF = Backoff(first=1.0, cap=15.0)
AGENT_BACKOFF = Backoff(first=1.0, cap=10.0)
# Something missing (a target, an agent, a Ready checkpoint) is checked again from the flow's
# poll interval on, doubling up to this.
WAITING_CAP = 5.0
# Seconds an agent may hold a job-status request open until the job's phase changes.
LONG_POLL = 10.0


class Failure(Exception):
    """The flow cannot succeed; the resource ends Failed with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Waiting(Exception):
    """Not yet: `condition` is False for `reason`, and the step is tried again."""

    def __init__(self, condition: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.condition = condition
        self.reason = reason
        self.message = message


class AgentGone(Exception):
    """The agent pod a call went to stopped answering and is no longer listed (deleted or
    replaced): its job died with it, and the step starts over on the node's current agent."""


class FlowStatus(Protocol):
    """What the kit writes in every flow's status model."""

    message: str
    conditions: list[Condition]


class Reporter(Protocol[S_contra]):
    """Where a flow writes what it does: the resource's status and its Events."""

    async def save(self, status: S_contra) -> None: ...

    def event(self, kind: str, reason: str, message: str) -> None: ...


class Clock:
    """The event loop's clock, with wall time anchored to it: `now()` moves exactly as the
    loop's time does (virtual under looptime), from `epoch` (default: the wall clock when the
    loop first asked)."""

    def __init__(self, epoch: dt.datetime | None = None) -> None:
        self._epoch = epoch
        self._anchors: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[dt.datetime, float]
        ] = weakref.WeakKeyDictionary()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> dt.datetime:
        loop = asyncio.get_running_loop()
        anchor = self._anchors.get(loop)
        if anchor is None:
            anchor = (self._epoch or dt.datetime.now(dt.UTC), loop.time())
            self._anchors[loop] = anchor
        wall, at = anchor
        return wall + dt.timedelta(seconds=loop.time() - at)

    def stamp(self, *, precise: bool = True) -> str:
        """Now in RFC 3339, UTC; with milliseconds when `precise` (timings are read off it)."""
        return (
            self.now().isoformat(timespec="milliseconds" if precise else "seconds")
            .replace("+00:00", "Z")
        )


LOOP_CLOCK = Clock()


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 stamp of a status or of metadata, as an aware datetime."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class Flow(ABC, Generic[S]):
    """The shared half of a resource flow; subclasses add their steps and `fail`."""

    def __init__(
        self,
        status: S,
        report: Reporter[S],
        *,
        label: str,
        agent_pods: Callable[[], Iterable[AgentPod]],
        poll_interval: float,
        clock: Clock = LOOP_CLOCK,
    ) -> None:
        self.status = status
        self.report = report
        self.clock = clock
        self._label = label
        self._agent_pods = agent_pods
        self._poll_interval = poll_interval

    @abstractmethod
    async def fail(self, reason: str, message: str) -> None:
        """Ends the flow Failed: status, Event, and whatever the flow must undo."""

    async def before_timeout(self) -> None:
        """Called at the deadline before `fail`: stop what would go on for nothing."""

    async def drive(
        self, steps: Callable[[], Awaitable[None]], deadline: dt.datetime, late: str
    ) -> None:
        """Runs `steps` until they end, fail, or `deadline` passes: then the flow fails with
        reason Timeout, message `late` and the last thing it said."""
        limit = max((deadline - self.clock.now()).total_seconds(), 0.0)
        try:
            async with asyncio.timeout(limit):
                await steps()
        except TimeoutError:
            await self.before_timeout()
            last = self.status.message
            await self.fail("Timeout", late + (f"; last: {last}" if last else ""))
        except Failure as failure:
            await self.fail(failure.reason, failure.message)

    # -- saying what happens ------------------------------------------------------------------

    async def say(self, message: str) -> None:
        """Sets status.message, saving it only when it changed."""
        if message != self.status.message:
            self.status.message = message
            await self.report.save(self.status)

    async def until(self, step: Callable[[], Awaitable[T]], *, kind: str = "Normal") -> T:
        """Runs `step` until it stops `Waiting`; what it waits for is its condition (False),
        status.message and, when that changed, an Event of `kind`."""

        async def waiting(exc: Exception) -> None:
            assert isinstance(exc, Waiting)
            changed = set_condition(self.status, exc.condition, False, exc.reason, exc.message)
            self.status.message = f"waiting: {exc.message}"
            if changed:
                self.report.event(kind, exc.reason, exc.message)
                await self.report.save(self.status)

        backoff = Backoff(first=self._poll_interval, cap=WAITING_CAP)
        return await retry(step, backoff, retry_on=Waiting, on_retry=waiting)

    async def pause(self) -> None:
        """One poll interval: a follower whose long poll came back unchanged must not spin."""
        await asyncio.sleep(self._poll_interval)

    async def _transient(self, reason: str, message: str) -> None:
        log.warning("%s: %s", self._label, message)
        if self.status.message != f"retrying: {message}":
            self.status.message = f"retrying: {message}"
            self.report.event("Warning", reason, message)
            # Status writes go to the apiserver, not the failing service, so this is safe.
            await self.report.save(self.status)

    # -- calling the agents and the checkpoints API ---------------------------------------------

    def agent_listed(self, agent: AgentPod) -> bool:
        """Whether `agent` is still an agent pod (not deleted), ready or not."""
        return any(
            a.name == agent.name and a.namespace == agent.namespace for a in self._agent_pods()
        )

    async def call_agent(
        self, call: Callable[[], Awaitable[T]], agent: AgentPod | None = None
    ) -> T:
        """Calls an agent until it answers: `NotFound` goes to the caller, other refusals
        fail the flow (AgentRejected), outages are retried until the deadline, unless `agent`
        is no longer listed (`AgentGone`: a deleted pod's address would never answer)."""

        async def transient(exc: Exception) -> None:
            metrics.AGENT_ERRORS.labels(_status_label(exc)).inc()
            if agent is not None and not self.agent_listed(agent):
                raise AgentGone(f"agent {agent.ref} is gone ({exc})") from exc
            await self._transient("AgentUnavailable", str(exc))

        before = self.status.message
        try:
            answer = await retry(call, AGENT_BACKOFF, retry_on=Unavailable, on_retry=transient)
        except NotFound as exc:
            metrics.AGENT_ERRORS.labels(_status_label(exc)).inc()
            raise
        except ServiceError as exc:
            metrics.AGENT_ERRORS.labels(_status_label(exc)).inc()
            raise Failure("AgentRejected", str(exc)) from exc
        # The outage is over: the next status write must not still say "retrying".
        self.status.message = before
        return answer

    async def call_api(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Calls the checkpoints API until it answers; a refusal fails the flow (ApiRejected),
        outages are retried until the deadline."""

        async def transient(exc: Exception) -> None:
            metrics.API_ERRORS.labels(what).inc()
            await self._transient("ApiUnavailable", f"checkpoints API {what} failed: {exc}")

        before = self.status.message
        try:
            answer = await retry(call, API_BACKOFF, retry_on=Unavailable, on_retry=transient)
        except ServiceError as exc:
            metrics.API_ERRORS.labels(what).inc()
            raise Failure("ApiRejected", f"checkpoints API refused {what}: {exc}") from exc
        self.status.message = before
        return answer


def _status_label(exc: Exception) -> str:
    status = exc.status if isinstance(exc, ServiceError) else None
    return str(status or "transport")
