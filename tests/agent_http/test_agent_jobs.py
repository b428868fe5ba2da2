"""Checkpoint jobs and the staging of restores through a real agent process: real runc
containers, real CRIU, real archives on disk; the agent is killed and restarted where the test
needs it. A staged archive is restored with `runc restore`, as the ckpt-runc wrapper does."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import httpx
import pytest

from ckpt.agent.pipeline import NODE_LOCAL
from harness.containers import BusyboxContainer, ContainerError, Pod, Runc

# Needs a real agent process with runc and CRIU, as root.
pytestmark = pytest.mark.e2e

if TYPE_CHECKING:
    from conftest import JobWaiter

    from harness.processes import ManagedProcess

Launch = Callable[..., BusyboxContainer]


def _body(checkpoint_id: str, container: BusyboxContainer, **extra: object) -> dict:
    return {
        "checkpoint_id": checkpoint_id,
        "namespace": "default",
        "pod": "counter",
        "containers": [{"name": "app", "container_id": container.id}],
        **extra,
    }


def _path(location: str) -> Path:
    return Path(urlparse(location).path)


def _checkpoint(client: httpx.Client, wait_job: JobWaiter, body: dict) -> dict:
    response = client.post("/v1/checkpoints", json=body)
    assert response.status_code == 202, response.text
    job = wait_job(f"/v1/checkpoints/{body['checkpoint_id']}")
    assert job["state"] == "succeeded", job
    return job


def _stage(client: httpx.Client, wait_job: JobWaiter, restore_id: str, result: dict) -> dict:
    """Stages a checkpoint's archive as the operator asks it for a Restore; the ended job."""
    response = client.post("/v1/restores", json={
        "restore_id": restore_id, "namespace": "default", "pod_name": "counter-restored",
        "source": result["restore_path"], "checksum": result["checksum"],
    })
    assert response.status_code == 202, response.text
    return wait_job(f"/v1/restores/{restore_id}")


def _wait_for_counter(counter_file: Path, at_least: int, timeout: float = 20) -> int:
    """The restored container's counter once it is at least `at_least` (a file it rewrites:
    there is nothing to wait on but the file itself)."""
    deadline = time.monotonic() + timeout
    while True:
        text = counter_file.read_text().strip()
        if text and int(text) >= at_least:
            return int(text)
        assert time.monotonic() < deadline, f"restored counter at {text!r}, wanted {at_least}"
        time.sleep(0.05)


def test_checkpoint_leaves_running_and_restore_continues_the_counter(
    client: httpx.Client, wait_job: JobWaiter, launch: Launch, runc: Runc, tmp_path: Path
) -> None:
    original = launch()
    original.wait_counter(10)
    job = _checkpoint(client, wait_job, _body("cp-roundtrip", original))

    result = job["result"]
    archive = _path(result["restore_path"])
    assert archive.is_file()
    assert result["checksum"] == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result["size_bytes"] == archive.stat().st_size == job["bytes_done"]
    assert result["runtime"] == "runc"
    assert result["gpu"] == "none"
    assert int(result["criu_version"].split(".")[0]) >= 4
    assert result["containers"] == ["app"]
    assert job["phase"] == "done"
    assert result["timings"]["total"] >= result["timings"]["dump"] > 0

    # leave_running (the default): the original keeps counting.
    assert original.status() == "running"
    before = original.counter()
    original.wait_counter(before + 5)

    # Restored as a Restore restores it: the agent stages the archive, and `runc restore` of
    # the staged images (the ckpt-runc wrapper's create) starts a new container in the
    # original's bundle. The original goes, and its rootfs's counter file is reset to 0.
    original.delete()
    counter_file = original.bundle / "rootfs" / "state" / "counter"
    counter_file.write_text("0\n")
    staged = _stage(client, wait_job, "r-counter", result)
    assert staged["state"] == "succeeded", staged
    assert staged["result"]["containers"] == ["app"]
    images = Path(staged["result"]["path"]) / "containers" / "app" / "images"
    original.restore_as(images, "restored-counter")
    state = runc.state("restored-counter")
    assert state is not None and state["status"] == "running"

    # The restored process carries on from the value it had in memory at the dump (>= 10),
    # in its own rootfs, whose counter file we reset to 0: its first write is already past
    # 10 (a fresh start would write 1, then 2, one every 0.1 s), and it keeps counting.
    first = _wait_for_counter(counter_file, 1)
    assert first >= 10, f"the restored counter started over at {first}"
    _wait_for_counter(counter_file, first + 1)
    # The same staging again answers the same job rather than staging twice.
    assert _stage(client, wait_job, "r-counter", result) == staged


def test_same_checkpoint_id_returns_the_same_job(
    client: httpx.Client, wait_job: JobWaiter, launch: Launch
) -> None:
    container = launch()
    body = _body("cp-idempotent", container)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/checkpoints", json=body), range(4)))
    assert {a.status_code for a in answers} == {202}
    assert {a.json()["checkpoint_id"] for a in answers} == {"cp-idempotent"}
    first = wait_job("/v1/checkpoints/cp-idempotent")
    assert first["state"] == "succeeded", first

    again = client.post("/v1/checkpoints", json=body)
    assert again.status_code == 202
    assert again.json() == first
    archives = list(_path(first["result"]["restore_path"]).parent.iterdir())
    assert [a.name for a in archives] == ["cp-idempotent.tar.zst"]

    other = client.post("/v1/checkpoints", json={**body, "leave_running": False})
    assert other.status_code == 409
    assert other.json()["code"] == "conflict"


def test_corrupted_archive_is_refused_at_staging(
    client: httpx.Client, wait_job: JobWaiter, launch: Launch, tmp_path: Path
) -> None:
    container = launch()
    result = _checkpoint(client, wait_job, _body("cp-corrupt", container))["result"]
    archive = _path(result["restore_path"])
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))

    job = _stage(client, wait_job, "r-corrupt", result)
    assert (job["state"], job["error_code"]) == ("failed", "checksum_mismatch"), job
    assert "checksum" in job["error"].lower()
    # Nothing of it is staged for the wrapper to find, not even a partial folder.
    assert list((tmp_path / "restores").iterdir()) == []


def test_finished_jobs_survive_a_restart(
    agent: ManagedProcess, client: httpx.Client, wait_job: JobWaiter, launch: Launch
) -> None:
    container = launch()
    done = _checkpoint(client, wait_job, _body("cp-persisted", container))
    agent.restart()
    response = client.get("/v1/checkpoints/cp-persisted")
    assert response.status_code == 200
    assert response.json() == done


def test_agent_killed_during_the_dump(
    agent: ManagedProcess, client: httpx.Client, wait_job: JobWaiter, launch: Launch,
    tmp_path: Path,
) -> None:
    # 512 MiB of touched memory: the dump takes long enough to be caught in the middle.
    container = launch(ballast_mib=512)
    response = client.post("/v1/checkpoints", json=_body("cp-killed", container))
    assert response.status_code == 202, response.text
    wait_job(
        "/v1/checkpoints/cp-killed", timeout=60,
        until=lambda job: job["phase"] in ("dumping", "storing") or job["state"] != "running",
    )
    agent.kill()
    # Where the archive goes: the request names no location, so the node-local one (the
    # agent's archive folder), in the folder of the checkpoint's namespace.
    final = tmp_path / "archives" / NODE_LOCAL.key_for("default", "cp-killed")
    assert not final.exists()

    agent.start()
    job = client.get("/v1/checkpoints/cp-killed").json()
    assert job["state"] == "failed"
    assert job["error"] == "agent restarted while the job was running"
    assert job["result"] is None
    assert job["retryable"] is True
    assert not final.exists()
    # Nothing of the dead job is left: no CRIU images in the work dir; the container that
    # was frozen for the cut is running again.
    work = tmp_path / "work"
    assert not work.exists() or list(work.iterdir()) == []
    assert container.status() == "running"
    value = container.counter()
    try:
        container.wait_counter(value + 3, timeout=30)
    except ContainerError as stalled:
        raise AssertionError(f"{stalled}; task states: {_task_states(container)}") from None

    # The same request starts the job over, and this time it completes.
    again = _checkpoint(client, wait_job, _body("cp-killed", container))
    assert again["retryable"] is False
    assert _path(again["result"]["restore_path"]) == final
    assert final.is_file()


def _task_states(container: BusyboxContainer) -> dict[int, str]:
    """The kernel's view of each process of a container (R, S, T stopped, t traced...)."""
    listed = container.runc.run("ps", "--format", "json", container.id, check=False).stdout
    states = {}
    for pid in json.loads(listed or "[]"):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            states[pid] = " ".join(
                line.split(":", 1)[1].strip() for line in status
                if line.startswith(("State:", "TracerPid:"))
            )
    return states


def test_cancel_stops_the_job_and_leaves_no_archive(
    make_agent: Callable[..., ManagedProcess], operator_token: str, launch: Launch,
    tmp_path: Path,
) -> None:
    # zstd level 19 on one thread stores 128 MiB of pages for tens of seconds: the cancel
    # surely arrives while the job runs (at level 1 a loaded machine could finish first).
    agent = make_agent(zstd_level="19", zstd_threads="0")
    container = launch(ballast_mib=128)
    with httpx.Client(
        base_url=agent.url, headers={"Authorization": f"Bearer {operator_token}"}, timeout=60
    ) as http:
        job = http.post("/v1/checkpoints", json=_body("cp-cancel", container)).json()
        deadline = time.monotonic() + 60
        while job["state"] == "running" and job["phase"] != "storing":
            assert time.monotonic() < deadline, job
            job = http.get(  # long polls: each answer is a new phase or the end
                "/v1/checkpoints/cp-cancel", params={"wait": 20, "phase": job["phase"]}
            ).json()
        assert (job["state"], job["phase"]) == ("running", "storing"), job
        response = http.delete("/v1/checkpoints/cp-cancel")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["state"] == "failed"
    assert job["error"] == "cancelled on request"
    # The namespace's folder may stay; no archive, complete or partial, is in it.
    archives = tmp_path / "archives"
    assert [f for f in archives.rglob("*") if not f.is_dir()] == []
    work = tmp_path / "work"
    assert not work.exists() or list(work.iterdir()) == []
    assert container.status() == "running"


def test_two_container_pod_is_one_archive(
    client: httpx.Client, wait_job: JobWaiter, runc: Runc, tmp_path: Path
) -> None:
    with Pod.launch(tmp_path / "pod", runc, ("app", "sidecar")) as pod:
        body = {
            "checkpoint_id": "cp-pod",
            "namespace": "default",
            "pod": "counter",  # the pod the harness's containers are recorded in
            "containers": [
                {"name": name, "container_id": c.id} for name, c in pod.containers.items()
            ],
        }
        result = _checkpoint(client, wait_job, body)["result"]
        assert result["containers"] == ["app", "sidecar"]
        for c in pod.containers.values():
            assert c.status() == "running"
        # Staged for a Restore, the one archive brings back both containers of the Pod.
        job = _stage(client, wait_job, "r-pod", result)
        assert job["state"] == "succeeded", job
        assert job["result"]["containers"] == ["app", "sidecar"]
        staged = Path(job["result"]["path"]) / "containers"
        assert all((staged / name / "images" / "inventory.img").is_file()
                   for name in ("app", "sidecar"))


def test_timeout_fails_the_job_and_cleans_up(
    make_agent: Callable[..., ManagedProcess], operator_token: str, launch: Launch,
    tmp_path: Path,
) -> None:
    agent = make_agent(job_timeout_seconds="0.3")
    container = launch(ballast_mib=256)
    with httpx.Client(
        base_url=agent.url, headers={"Authorization": f"Bearer {operator_token}"}
    ) as http:
        job = http.post("/v1/checkpoints", json=_body("cp-slow", container)).json()
        deadline = time.monotonic() + 60
        while job["state"] == "running":  # long polls: each answer is a new phase or the end
            assert time.monotonic() < deadline, job
            job = http.get(
                "/v1/checkpoints/cp-slow", params={"wait": 20, "phase": job["phase"]}
            ).json()
    assert job["state"] == "failed"
    assert job["error"] == "timed out after 0.3 s"
    archives = tmp_path / "archives"
    assert not archives.exists() or list(archives.iterdir()) == []
    assert container.status() == "running"


def test_jobs_beyond_the_limit_wait_queued(
    client: httpx.Client, wait_job: JobWaiter, launch: Launch
) -> None:
    # The test agent allows one job at a time.
    big, small = launch(ballast_mib=512), launch()
    assert client.post("/v1/checkpoints", json=_body("cp-first", big)).status_code == 202
    second = client.post("/v1/checkpoints", json=_body("cp-second", small))
    assert second.status_code == 202
    assert second.json()["phase"] == "queued"
    # Read the second job before the first: once the second has left the queue, the first
    # (read later) must have ended. The other order would race with the hand-over.
    deadline = time.monotonic() + 120
    # Long polls: the agent answers as soon as the second job's phase is no longer queued.
    queued = {"wait": 20, "phase": "queued"}
    while client.get("/v1/checkpoints/cp-second", params=queued).json()["phase"] == "queued":
        assert time.monotonic() < deadline, "the second job never left the queue"
    first = client.get("/v1/checkpoints/cp-first").json()
    assert first["state"] == "succeeded", "the second job left the queue before the first ended"
    assert wait_job("/v1/checkpoints/cp-second")["state"] == "succeeded"
    metrics = client.get("/metrics").text
    assert 'ckpt_agent_phase_duration_seconds_count{kind="checkpoint",phase="queued"} 2.0' in (
        metrics
    )


def test_long_poll_answers_at_each_phase_change(client: httpx.Client, launch: Launch) -> None:
    original = launch(ballast_mib=32)
    response = client.post("/v1/checkpoints", json=_body("cp-long-poll", original))
    job = response.json()
    answers = [job["phase"]]
    started = time.monotonic()
    while job["state"] == "running":
        job = client.get(
            "/v1/checkpoints/cp-long-poll", params={"wait": 30, "phase": job["phase"]}
        ).json()
        answers.append(job["phase"])
    # Every answer brought news (no empty polls), and none waited out the 30 s.
    assert job["state"] == "succeeded", job
    assert all(a != b for a, b in itertools.pairwise(answers)), answers
    assert answers[-1] == "done" and "dumping" in answers
    assert time.monotonic() - started < 30
