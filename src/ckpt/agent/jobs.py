"""The job manager: idempotent submission, a per-node concurrency limit, timeouts, cancellation.

Checkpoint jobs are keyed by ``checkpoint_id``; submitting the same key again answers the
existing job, so the operator can retry a POST safely. Restores are staged by
``ckpt.agent.staging``, which shares this manager's slots (``FairSlots``: shared fairly
between namespaces). Every state or phase change is
written to a record on disk (``records.py``): finished results survive a restart, and a job
that was running when the agent died is reported failed on the next start instead of staying
"running" forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ckpt.agent.errors import AgentError
from ckpt.agent.metrics import AgentMetrics
from ckpt.agent.pipeline import PipelineError
from ckpt.agent.records import JobRecord, RecordStore, utcnow
from ckpt.agent.slots import FairSlots
from ckpt.contract.agent import (
    CheckpointJob,
    CheckpointRequest,
    CheckpointResult,
    JobState,
)

log = logging.getLogger(__name__)

INTERRUPTED = "agent restarted while the job was running"
SHUT_DOWN = "agent shut down while the job was running"
CANCELLED = "cancelled on request"
QUEUED = "queued"

Progress = Callable[[str, int], None]
CheckpointRunner = Callable[[CheckpointRequest, Progress], Awaitable[CheckpointResult]]
CheckpointRecord = JobRecord[CheckpointRequest, CheckpointJob]


@dataclass
class _Entry:
    record: CheckpointRecord
    task: asyncio.Task[None] | None = None
    # Why the task is being cancelled; a bare CancelledError does not say who asked.
    cancel_reason: str = ""
    phase_since: float = field(default_factory=time.monotonic)
    # Set (and replaced) at every phase or state change, to wake long-polling readers.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class _Track:
    """The checkpoint jobs: their records, tasks and lifecycle."""

    #: The `kind` label of the job metrics.
    kind = "checkpoint"

    def __init__(
        self, records: RecordStore[CheckpointRequest, CheckpointJob], run: CheckpointRunner,
        manager: JobManager,
    ) -> None:
        self._records = records
        self._run = run
        self._manager = manager
        self.entries: dict[str, _Entry] = {}

    def load(self, retention: timedelta) -> list[CheckpointRequest]:
        """Read the records; fail (and return the requests of) jobs a dead agent left running."""
        cutoff = utcnow() - retention
        interrupted: list[CheckpointRequest] = []
        for key, record in self._records.load_all().items():
            job = record.job
            if job.state == JobState.running:
                job.state = JobState.failed
                job.error = INTERRUPTED
                job.retryable = True
                self._records.save(key, record)
                interrupted.append(record.request)
                log.warning("%s job %s was interrupted by an agent restart", self.kind, key)
            elif record.updated_at < cutoff:
                self._records.delete(key)
                continue
            self.entries[key] = _Entry(record=record)
        return interrupted

    def submit(self, request: CheckpointRequest) -> CheckpointJob:
        # No await between the lookup and the insert: concurrent POSTs of one key cannot
        # both create a job.
        key = request.checkpoint_id
        entry = self.entries.get(key)
        if entry is not None:
            if entry.record.request != request:
                raise AgentError(
                    409,
                    "conflict",
                    f"{self.kind} job {key!r} already exists with a different request",
                )
            if not entry.record.job.retryable:
                return entry.record.job
            # It failed only because an agent stopped under it: this request starts over.
            log.info("%s job %s: new attempt after %s", self.kind, key, entry.record.job.error)
        job = CheckpointJob(checkpoint_id=key, state=JobState.running, phase=QUEUED)
        record = CheckpointRecord(request=request, job=job)
        entry = _Entry(record=record)
        self._records.save(key, record)
        self.entries[key] = entry
        entry.task = asyncio.create_task(self._execute(key, entry), name=f"{self.kind}-{key}")
        return job

    def get(self, key: str) -> CheckpointJob:
        return self._entry(key).record.job

    def _entry(self, key: str) -> _Entry:
        entry = self.entries.get(key)
        if entry is None:
            raise AgentError(404, "not_found", f"no {self.kind} job {key!r}")
        return entry

    async def watch(self, key: str, seen_phase: str | None, wait: float) -> CheckpointJob:
        """The job once its phase differs from `seen_phase` or it ended, or after `wait`
        seconds: a long poll, so a caller following a job needs no polling loop."""
        entry = self._entry(key)
        job = entry.record.job
        if job.state != JobState.running or job.phase != seen_phase or wait <= 0:
            return job
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await entry.changed.wait()
        return entry.record.job

    async def cancel(self, key: str, reason: str) -> CheckpointJob:
        entry = self.entries.get(key)
        if entry is None:
            raise AgentError(404, "not_found", f"no {self.kind} job {key!r}")
        task = entry.task
        if task is not None and not task.done():
            entry.cancel_reason = reason
            task.cancel()
            # The pipeline thaws containers and removes partial files before it ends.
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return entry.record.job

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries.values():
            job = entry.record.job
            state = QUEUED if job.phase == QUEUED and job.state == JobState.running else job.state
            out[state] = out.get(state, 0) + 1
        return out

    def _set_phase(self, key: str, entry: _Entry, phase: str) -> None:
        job = entry.record.job
        if phase == job.phase:
            return
        now = time.monotonic()
        self._manager.metrics.phase_seconds.labels(self.kind, job.phase).observe(
            now - entry.phase_since
        )
        entry.phase_since = now
        job.phase = phase
        self._records.save(key, entry.record)
        entry.notify()

    async def _execute(self, key: str, entry: _Entry) -> None:
        job = entry.record.job

        def progress(phase: str, bytes_done: int) -> None:
            # bytes_done changes many times a second while storing; it is kept in memory and
            # written with the next phase change only.
            job.bytes_done = bytes_done
            self._set_phase(key, entry, phase)

        timeout = self._manager.timeout_seconds
        # The limit runs from when the job gets a slot: time spent queued is not its fault.
        deadline: asyncio.Timeout | None = None
        try:
            async with self._manager.slots.take(entry.record.request.namespace):
                self._set_phase(key, entry, "starting")
                deadline = asyncio.timeout(timeout)
                async with deadline:
                    result = await self._run(entry.record.request, progress)
        except TimeoutError as exc:
            # A TimeoutError of the pipeline's own (a subprocess limit) keeps its message.
            expired = deadline is not None and deadline.expired()
            message = f"timed out after {timeout:g} s" if expired else str(exc)
            self._finish(key, entry, JobState.failed, message or "timed out")
        except asyncio.CancelledError:
            entry.record.job.retryable = not entry.cancel_reason or entry.cancel_reason == SHUT_DOWN
            self._finish(key, entry, JobState.failed, entry.cancel_reason or SHUT_DOWN)
            raise
        except PipelineError as exc:
            # An expected failure (container gone, CRIU refused, bad archive): its message is
            # written for the caller.
            log.warning("%s job %s failed: %s", self.kind, key, exc)
            self._finish(key, entry, JobState.failed, str(exc))
        except Exception as exc:
            # Anything else is a bug: the traceback belongs in the log, not in the API answer,
            # nor its message (an OSError's names a host path), which reaches the
            # Checkpoint's status and Events, readable by the namespace.
            log.exception("%s job %s failed", self.kind, key)
            self._finish(
                key, entry, JobState.failed,
                f"internal error in the node agent ({type(exc).__name__}); see its log",
            )
        else:
            job.result = result
            job.bytes_done = result.size_bytes
            self._manager.metrics.archive_written(result.size_bytes)
            self._finish(key, entry, JobState.succeeded, None)

    def _finish(self, key: str, entry: _Entry, state: JobState, error: str | None) -> None:
        job = entry.record.job
        self._manager.metrics.phase_seconds.labels(self.kind, job.phase).observe(
            time.monotonic() - entry.phase_since
        )
        job.state = state
        job.error = error
        if state == JobState.succeeded:
            job.phase = "done"
        self._records.save(key, entry.record)
        entry.notify()
        self._manager.metrics.jobs_finished.labels(self.kind, state.value).inc()
        log.info("%s job %s %s%s", self.kind, key, state.value, f": {error}" if error else "")

    async def shutdown(self) -> None:
        running: list[tuple[_Entry, asyncio.Task[None]]] = [
            (e, e.task) for e in self.entries.values() if e.task is not None and not e.task.done()
        ]
        for entry, task in running:
            entry.cancel_reason = SHUT_DOWN
            task.cancel()
        for _, task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class JobManager:
    """Checkpoint jobs of one agent and the concurrency limit the agent's stagings share."""

    def __init__(
        self,
        state_dir: Path,
        *,
        max_concurrent: int,
        timeout_seconds: float,
        run_checkpoint: CheckpointRunner,
        metrics: AgentMetrics,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        # Shared with the stagings of restores (ckpt.agent.staging.Stagings): fetching and
        # unpacking an archive loads the node as much as a dump does.
        self.slots = FairSlots(max_concurrent)
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        self._retention = retention
        self.checkpoints = _Track(
            RecordStore(state_dir / "checkpoints", CheckpointRecord), run_checkpoint, self
        )
        metrics.track_jobs(self.counts)

    def load(self) -> list[CheckpointRequest]:
        """Read the records of earlier runs and fail those that were running; returns the
        interrupted checkpoints, whose containers may still be frozen."""
        return self.checkpoints.load(self._retention)

    def counts(self) -> dict[tuple[str, str], int]:
        return {(self.checkpoints.kind, state): n for state, n in self.checkpoints.counts().items()}

    async def shutdown(self) -> None:
        """Cancel running jobs (thawing containers, removing partial files) and wait for them."""
        await self.checkpoints.shutdown()
