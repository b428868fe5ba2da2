"""The agent's `JobManager` in process: scripted runners instead of CRIU, records in a temporary
folder, and looptime's virtual clock for timeouts, queueing and long polls."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from ckpt.agent.errors import AgentError
from ckpt.agent.jobs import CANCELLED, INTERRUPTED, QUEUED, SHUT_DOWN, JobManager, Progress
from ckpt.agent.metrics import AgentMetrics
from ckpt.agent.pipeline import PipelineError
from ckpt.agent.staging import Stagings
from ckpt.contract.agent import (
    CheckpointRequest,
    CheckpointResult,
    ContainerTarget,
    JobState,
    StageRequest,
)

pytestmark = pytest.mark.looptime

TIMEOUT = 300.0


def request(checkpoint_id: str = "ck-1", pod: str = "db") -> CheckpointRequest:
    return CheckpointRequest(
        checkpoint_id=checkpoint_id, namespace="apps", pod=pod,
        containers=[ContainerTarget(name="app", container_id="c0ffee")],
    )


def result(size: int = 4096) -> CheckpointResult:
    return CheckpointResult(
        restore_path="/archives/x.tar.zst", checksum="sha256:" + "00" * 32, size_bytes=size,
        gpu="none", platform="linux/amd64", runtime="runc", criu_version="4.1",
    )


class Runner:
    """A checkpoint runner driven by the test: it reports `phases` (one per virtual second),
    then waits for `release` (when set) and returns, or raises `error`."""

    def __init__(self) -> None:
        self.phases = ["freezing", "dumping", "storing"]
        self.release: asyncio.Event | None = None
        # Jobs that never finish on their own (an agent that dies under them).
        self.hang: set[str] = set()
        self.error: BaseException | None = None
        self.started: list[str] = []
        self.cleaned_up: list[str] = []

    async def __call__(self, req: CheckpointRequest, progress: Progress) -> CheckpointResult:
        self.started.append(req.checkpoint_id)
        try:
            for n, phase in enumerate(self.phases):
                progress(phase, n * 1000)
                await asyncio.sleep(1)
            if req.checkpoint_id in self.hang:
                await asyncio.Event().wait()
            if self.release is not None:
                await self.release.wait()
            if self.error is not None:
                raise self.error
            return result()
        finally:
            # Where the real pipeline thaws containers and removes partial files.
            self.cleaned_up.append(req.checkpoint_id)


def manager(
    state: Path, runner: Runner, *, slots: int = 1, timeout: float = TIMEOUT,
    retention: dt.timedelta = dt.timedelta(days=7),
) -> JobManager:
    return JobManager(
        state, max_concurrent=slots, timeout_seconds=timeout, run_checkpoint=runner,
        metrics=AgentMetrics(), retention=retention,
    )


async def finished(jobs: JobManager, key: str) -> None:
    task = jobs.checkpoints.entries[key].task
    assert task is not None
    await task


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_a_job_runs_through_its_phases_to_a_result(tmp_path: Path) -> None:
    runner = Runner()
    jobs = manager(tmp_path, runner)
    job = jobs.checkpoints.submit(request())
    assert (job.state, job.phase) == (JobState.running, QUEUED)
    await finished(jobs, "ck-1")

    job = jobs.checkpoints.get("ck-1")
    assert (job.state, job.phase, job.result, job.bytes_done) == (
        JobState.succeeded, "done", result(), 4096
    )
    on_disk = json.loads((tmp_path / "checkpoints" / "ck-1.json").read_text())
    assert on_disk["job"]["state"] == "succeeded"
    assert jobs.counts() == {("checkpoint", "succeeded"): 1}


async def test_submitting_the_same_request_again_answers_the_same_job(tmp_path: Path) -> None:
    runner = Runner()
    jobs = manager(tmp_path, runner)
    first = jobs.checkpoints.submit(request())
    assert jobs.checkpoints.submit(request()) is first
    await finished(jobs, "ck-1")
    assert jobs.checkpoints.submit(request()).state is JobState.succeeded
    assert runner.started == ["ck-1"]


async def test_the_same_key_with_another_request_is_a_conflict(tmp_path: Path) -> None:
    jobs = manager(tmp_path, Runner())
    jobs.checkpoints.submit(request())
    with pytest.raises(AgentError) as conflict:
        jobs.checkpoints.submit(request(pod="other"))
    assert (conflict.value.status, conflict.value.code) == (409, "conflict")
    await jobs.shutdown()


async def test_unknown_jobs_are_not_found(tmp_path: Path) -> None:
    jobs = manager(tmp_path, Runner())
    with pytest.raises(AgentError) as missing:
        jobs.checkpoints.get("nope")
    assert missing.value.status == 404
    with pytest.raises(AgentError):
        await jobs.checkpoints.watch("nope", None, 10)
    with pytest.raises(AgentError) as missing:
        await jobs.checkpoints.cancel("nope", CANCELLED)
    assert missing.value.body().code == "not_found"


async def test_jobs_queue_for_a_slot_and_the_timeout_starts_with_the_slot(tmp_path: Path) -> None:
    runner = Runner()
    runner.release = asyncio.Event()
    jobs = manager(tmp_path, runner, slots=1, timeout=60)
    jobs.checkpoints.submit(request("ck-1"))
    second = jobs.checkpoints.submit(request("ck-2"))
    await asyncio.sleep(10)
    assert runner.started == ["ck-1"] and second.phase == QUEUED
    assert jobs.counts() == {("checkpoint", "running"): 1, ("checkpoint", QUEUED): 1}
    # ck-1 hits its 60 s limit; ck-2 then gets the slot with a full 60 s of its own.
    await finished(jobs, "ck-1")
    assert now() == pytest.approx(60)
    first = jobs.checkpoints.get("ck-1")
    assert (first.state, first.error, first.retryable) == (
        JobState.failed, "timed out after 60 s", False
    )
    await asyncio.sleep(30)
    assert jobs.checkpoints.get("ck-2").state is JobState.running
    runner.release.set()
    await finished(jobs, "ck-2")
    assert jobs.checkpoints.get("ck-2").state is JobState.succeeded
    assert runner.cleaned_up == ["ck-1", "ck-2"]


async def test_stagings_share_the_slots_of_checkpoints(tmp_path: Path) -> None:
    runner = Runner()
    runner.release = asyncio.Event()
    jobs = manager(tmp_path, runner, slots=1)
    # As the agent wires them: one semaphore for dumps and stagings alike.
    stagings = Stagings(tmp_path / "restores", jobs.slots, archive_root=tmp_path / "archives")
    jobs.checkpoints.submit(request())
    stagings.submit(StageRequest(
        restore_id="r-1", namespace="apps", pod_name="db-restored",
        source=(tmp_path / "archives" / "apps" / "missing.tar.zst").as_uri(),
        checksum="sha256:" + "00" * 32,
    ))
    await asyncio.sleep(5)
    assert stagings.get("r-1").phase == QUEUED
    runner.release.set()
    await finished(jobs, "ck-1")
    task = stagings.entries["r-1"].task
    assert task is not None
    await task
    # It ran once the checkpoint gave the slot back (and found no archive there).
    done = stagings.get("r-1")
    assert (done.state, done.error_code) == (JobState.failed, "not_found")


async def test_a_timeout_of_the_pipeline_itself_keeps_its_message(tmp_path: Path) -> None:
    runner = Runner()
    runner.error = TimeoutError("criu dump did not answer within 120 s")
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await finished(jobs, "ck-1")
    assert jobs.checkpoints.get("ck-1").error == "criu dump did not answer within 120 s"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PipelineError("container c0ffee is not running"), "container c0ffee is not running"),
        # An unexpected error's own text (an OSError's names a host path) stays in the log.
        (
            OSError(2, "No such file or directory", "work/x"),
            "internal error in the node agent (FileNotFoundError); see its log",
        ),
        (KeyError(), "internal error in the node agent (KeyError); see its log"),
    ],
)
async def test_failures_end_the_job_with_a_message(
    tmp_path: Path, error: Exception, message: str
) -> None:
    runner = Runner()
    runner.error = error
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await finished(jobs, "ck-1")
    job = jobs.checkpoints.get("ck-1")
    assert (job.state, job.error, job.retryable) == (JobState.failed, message, False)
    # A final failure is answered as is: submitting again starts nothing.
    assert jobs.checkpoints.submit(request()).error == message
    assert runner.started == ["ck-1"]


async def test_cancel_stops_the_job_after_its_cleanup(tmp_path: Path) -> None:
    runner = Runner()
    runner.release = asyncio.Event()
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await asyncio.sleep(5)
    job = await jobs.checkpoints.cancel("ck-1", CANCELLED)
    assert (job.state, job.error, job.retryable) == (JobState.failed, CANCELLED, False)
    assert runner.cleaned_up == ["ck-1"]
    # Cancelling a finished job changes nothing.
    assert (await jobs.checkpoints.cancel("ck-1", CANCELLED)).error == CANCELLED


async def test_shutdown_fails_jobs_retryably_and_a_new_post_starts_over(tmp_path: Path) -> None:
    runner = Runner()
    runner.release = asyncio.Event()
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await asyncio.sleep(2)
    await jobs.shutdown()
    job = jobs.checkpoints.get("ck-1")
    assert (job.state, job.error, job.retryable) == (JobState.failed, SHUT_DOWN, True)

    runner.release.set()
    again = jobs.checkpoints.submit(request())
    assert again is not job and again.phase == QUEUED
    await finished(jobs, "ck-1")
    assert jobs.checkpoints.get("ck-1").state is JobState.succeeded
    assert runner.started == ["ck-1", "ck-1"]


async def test_a_long_poll_answers_at_the_next_phase_change(tmp_path: Path) -> None:
    runner = Runner()
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await asyncio.sleep(0)  # the job takes its slot: phase "starting", then "freezing"
    seen = jobs.checkpoints.get("ck-1").phase
    start = now()
    job = await jobs.checkpoints.watch("ck-1", seen, wait=30)
    assert job.phase != seen
    assert now() - start == pytest.approx(1)  # one phase per virtual second, not 30 s
    # The end of the job also wakes a reader.
    while job.state is JobState.running:
        job = await jobs.checkpoints.watch("ck-1", job.phase, wait=30)
    assert job.state is JobState.succeeded and now() - start == pytest.approx(3)


async def test_a_long_poll_without_change_answers_after_its_wait(tmp_path: Path) -> None:
    runner = Runner()
    runner.phases = ["dumping"]
    runner.release = asyncio.Event()
    jobs = manager(tmp_path, runner)
    jobs.checkpoints.submit(request())
    await asyncio.sleep(5)
    start = now()
    job = await jobs.checkpoints.watch("ck-1", "dumping", wait=10)
    assert job.phase == "dumping" and now() - start == pytest.approx(10)
    # Another phase than the caller's, or no wait at all: answered at once.
    assert (await jobs.checkpoints.watch("ck-1", "freezing", wait=10)).phase == "dumping"
    assert (await jobs.checkpoints.watch("ck-1", "dumping", wait=0)).phase == "dumping"
    assert now() - start == pytest.approx(10)
    await jobs.shutdown()


async def test_a_restart_fails_interrupted_jobs_and_keeps_finished_ones(tmp_path: Path) -> None:
    runner = Runner()
    runner.hang = {"running"}
    before = manager(tmp_path, runner, slots=2)
    before.checkpoints.submit(request("done"))
    before.checkpoints.submit(request("running"))
    await finished(before, "done")
    # The agent dies with "running" still running: no shutdown, its record says running.
    task = before.checkpoints.entries["running"].task
    assert task is not None
    on_disk = json.loads((tmp_path / "checkpoints" / "running.json").read_text())
    assert on_disk["job"]["state"] == "running"

    after = manager(tmp_path, Runner())
    interrupted = after.load()
    assert [r.checkpoint_id for r in interrupted] == ["running"]
    job = after.checkpoints.get("running")
    assert (job.state, job.error, job.retryable) == (JobState.failed, INTERRUPTED, True)
    assert after.checkpoints.get("done").result == result()
    task.cancel()


async def test_records_older_than_the_retention_are_dropped_at_start(tmp_path: Path) -> None:
    jobs = manager(tmp_path, Runner())
    jobs.checkpoints.submit(request())
    await finished(jobs, "ck-1")
    path = tmp_path / "checkpoints" / "ck-1.json"
    record = json.loads(path.read_text())
    record["updated_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).isoformat()
    path.write_text(json.dumps(record))

    fresh = manager(tmp_path, Runner())
    assert fresh.load() == []
    assert "ck-1" not in fresh.checkpoints.entries and not path.exists()
