"""End to end: kubectl-style Checkpoint resources reconciled by the operator process, with the
checkpoints API, a node agent and real runc containers, all real processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from operator_support import Checkpoints, condition, event_reasons, records_named

from ckpt.api.client import SyncCheckpointsClient
from harness.containers import BusyboxContainer
from harness.stack import SYSTEM_NAMESPACE, LocalStack

# Needs the local stack: apiserver, operator, agent, runc and CRIU.
pytestmark = pytest.mark.e2e


def test_checkpoint_goes_ready_and_restores(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
) -> None:
    box = container()
    stack.register_pod(namespace, "web", {"app": box})
    before = box.wait_counter(3)
    checkpoints.create("web-1", podName="web")

    status = checkpoints.wait_phase("web-1", "Ready", "Failed")
    assert status["phase"] == "Ready", status
    assert status["nodeName"] == stack.node
    assert status["agent"] == f"{SYSTEM_NAMESPACE}/ckpt-agent-{stack.node}"
    assert status["checksum"].startswith("sha256:")
    assert status["sizeBytes"] > 0 and status["size"]
    assert status["gpu"] == "none"
    assert status["restorePath"].startswith("file://")
    assert Path(urlparse(status["restorePath"]).path).is_file()
    assert set(status["timings"]) == {"freeze", "gpu", "dump", "store", "total"}
    assert status["timings"]["total"] >= status["timings"]["dump"] > 0
    assert condition(status, "Ready")["status"] == "True"
    assert box.status() == "running"  # leaveRunning is the default

    # Each step is an Event on the resource (kubectl describe checkpoint shows them).
    assert event_reasons(stack.cluster, namespace, "web-1") >= {
        "Accepted",
        "Registered",
        "Dumped",
        "Ready",
    }

    record = api.list([status["checkpointId"]])[0]
    assert record.status.value == "ready"
    assert record.checksum == status["checksum"]
    assert record.name == f"{namespace}/web-1"
    assert record.info["node"] == stack.node and record.info["containers"] == ["app"]

    # Restore through the agent as a new container; the original must be gone first,
    # since both would write the same counter file.
    box.delete()
    restored_id = f"restored-{uuid.uuid4().hex[:6]}"
    job = _agent_post(
        stack,
        "/v1/restores",
        {
            "restore_path": status["restorePath"],
            "checksum": status["checksum"],
            "container_id": restored_id,
        },
    )
    _wait_restore(stack, restored_id, job)
    restored = BusyboxContainer(
        runc=stack.runc, id=restored_id, bundle=box.bundle, owns_bundle=False
    )
    try:
        resumed_at = restored.wait_counter(before)
        # A fresh start would count from 1; the restored process goes on from its memory.
        assert resumed_at >= before
        assert restored.wait_counter(resumed_at + 3) > resumed_at
    finally:
        restored.delete()


def test_missing_pod_waits_with_a_reason_then_fails_without_an_api_record(
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
    namespace: str,
) -> None:
    checkpoints.create("ghost", podName="nobody", timeoutSeconds=10)
    waiting = checkpoints.wait(
        "ghost", lambda s: condition(s, "Accepted").get("reason") == "TargetNotFound"
    )
    assert f"pod {namespace}/nobody does not exist" in waiting["message"]
    failed = checkpoints.wait_phase("ghost", "Failed", timeout=60)
    assert condition(failed, "Ready")["reason"] == "Timeout"
    assert "does not exist" in failed["message"]
    assert "checkpointId" not in failed
    assert records_named(api, f"{namespace}/ghost") == []


def test_pod_not_running_and_unknown_container_name_the_problem(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
) -> None:
    box = container()
    stack.register_pod(namespace, "pending", {"app": box}, phase="Pending")
    stack.register_pod(namespace, "web", {"app": box})
    checkpoints.create("not-running", podName="pending")
    checkpoints.create("no-such-container", podName="web", containers=["db"])
    not_running = checkpoints.wait(
        "not-running", lambda s: condition(s, "Accepted").get("reason") == "TargetNotRunning"
    )
    assert "is Pending, not Running" in not_running["message"]
    unknown = checkpoints.wait(
        "no-such-container",
        lambda s: condition(s, "Accepted").get("reason") == "ContainerNotFound",
    )
    assert "has no container db (it has app)" in unknown["message"]
    assert not_running["phase"] == unknown["phase"] == "Pending"


def test_no_agent_on_the_node_and_no_gpu_agent_for_a_gpu_pod(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
) -> None:
    box = container()
    stack.register_pod(namespace, "elsewhere", {"app": box}, node="node-without-agent")
    stack.register_pod(namespace, "trainer", {"app": box}, gpus=1)
    checkpoints.create("elsewhere", podName="elsewhere")
    checkpoints.create("trainer", podName="trainer")
    elsewhere = checkpoints.wait(
        "elsewhere", lambda s: condition(s, "Accepted").get("reason") == "NoAgent"
    )
    assert "no ckpt agent runs on node node-without-agent" in elsewhere["message"]
    trainer = checkpoints.wait(
        "trainer", lambda s: condition(s, "Accepted").get("reason") == "NoAgent"
    )
    assert "needs GPU state" in trainer["message"]


def _agent_post(stack: LocalStack, path: str, body: dict[str, object]) -> dict[str, object]:
    token = (stack.workdir / "operator.token").read_text()
    assert stack.agent is not None
    url = stack.agent.url + path
    # The agent speaks TLS with the stack's agent certificate, as the operator calls it.
    response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"},
                          timeout=30, verify=stack.agent.verify)
    assert response.status_code == 202, response.text
    return response.json()


def _wait_restore(stack: LocalStack, container_id: str, job: dict[str, object]) -> None:
    token = (stack.workdir / "operator.token").read_text()
    assert stack.agent is not None
    url = f"{stack.agent.url}/v1/restores/{container_id}"
    deadline = time.monotonic() + 120
    while job["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        verify=stack.agent.verify).json()
    assert job["state"] == "succeeded", job


def test_deleting_deprecates_in_the_api_and_deletes_the_archive_only_when_asked(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
) -> None:
    stack.register_pod(namespace, "web", {"app": container()})
    checkpoints.create("keep", podName="web")
    checkpoints.create("drop", podName="web", retainPolicy="Delete")
    kept = checkpoints.wait_phase("keep", "Ready", "Failed")
    dropped = checkpoints.wait_phase("drop", "Ready", "Failed")
    assert kept["phase"] == dropped["phase"] == "Ready", (
        kept.get("message"),
        dropped.get("message"),
    )

    checkpoints.delete("keep")
    checkpoints.delete("drop")

    records = {
        str(r.id): r.status.value for r in api.list([kept["checkpointId"], dropped["checkpointId"]])
    }
    assert records == {kept["checkpointId"]: "deprecated", dropped["checkpointId"]: "deprecated"}
    assert Path(urlparse(kept["restorePath"]).path).is_file()
    assert not Path(urlparse(dropped["restorePath"]).path).exists()
