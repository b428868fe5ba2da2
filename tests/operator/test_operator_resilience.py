"""Crashes and outages in the middle of a checkpoint: each ends Ready, or Failed with the
reason, and always with exactly one record in the checkpoints API."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from operator_support import Checkpoints, event_reasons, records_named

from ckpt.api.client import SyncCheckpointsClient
from harness.containers import BusyboxContainer
from harness.stack import LocalStack

# Needs the local stack: apiserver, operator, agent, runc and CRIU.
pytestmark = pytest.mark.e2e


def test_api_down_for_a_while(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
) -> None:
    assert stack.api is not None
    stack.register_pod(namespace, "web", {"app": container()})
    stack.api.stop()
    try:
        checkpoints.create("during-outage", podName="web")
        waiting = checkpoints.wait(
            "during-outage", lambda s: "checkpoints API unreachable" in s.get("message", "")
        )
        assert waiting["phase"] == "Pending"
    finally:
        stack.api.start()
    ready = checkpoints.wait_phase("during-outage", "Ready", "Failed", timeout=180)
    assert ready["phase"] == "Ready", ready
    assert len(records_named(api, f"{namespace}/during-outage")) == 1


def test_operator_restarted_in_the_middle(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
) -> None:
    assert stack.operator is not None
    stack.register_pod(namespace, "web", {"app": container(ballast_mib=128)})
    checkpoints.create("across-restart", podName="web")
    midway = checkpoints.wait("across-restart", lambda s: bool(s.get("checkpointId")))
    stack.operator.kill()
    stack.operator.start()
    ready = checkpoints.wait_phase("across-restart", "Ready", "Failed", timeout=180)
    assert ready["phase"] == "Ready", ready
    assert ready["checkpointId"] == midway["checkpointId"]
    records = records_named(api, f"{namespace}/across-restart")
    assert [str(r.id) for r in records] == [ready["checkpointId"]]
    assert records[0].status.value == "ready"


def test_agent_killed_in_the_middle_of_a_dump(
    stack: LocalStack,
    namespace: str,
    container: Callable[..., BusyboxContainer],
    checkpoints: Checkpoints,
    api: SyncCheckpointsClient,
) -> None:
    assert stack.agent is not None
    stack.register_pod(namespace, "big", {"app": container(ballast_mib=256)})
    checkpoints.create("agent-dies", podName="big")
    checkpoints.wait("agent-dies", lambda s: s.get("message", "").startswith("agent: "))
    stack.agent.kill()
    stack.agent.start()
    ready = checkpoints.wait_phase("agent-dies", "Ready", "Failed", timeout=180)
    assert ready["phase"] == "Ready", ready
    records = records_named(api, f"{namespace}/agent-dies")
    assert [(str(r.id), r.status.value) for r in records] == [(ready["checkpointId"], "ready")]
    interrupted = f"job {ready['checkpointId']} was interrupted" in stack.agent.log_tail(10**7)
    if interrupted:
        # The agent came back, failed the job it lost as retryable, and the operator
        # started it over rather than failing the checkpoint.
        assert "Retrying" in event_reasons(stack.cluster, namespace, "agent-dies")
