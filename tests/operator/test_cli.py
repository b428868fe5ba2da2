"""The user's `ckpt` verbs against the local stack, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from harness.containers import BusyboxContainer
from harness.stack import LocalStack

# Needs the local stack: apiserver, operator, agent, runc and CRIU.
pytestmark = pytest.mark.e2e


def _ckpt(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(stack.cluster.kubeconfig),
        "CKPT_API_URL": stack.api_url,
        "CKPT_API_TOKEN": stack.api_token,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "ckpt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_checkpoint_list_and_restore_from_the_command_line(
    stack: LocalStack, namespace: str, container: Callable[..., BusyboxContainer]
) -> None:
    box = container()
    stack.register_pod(namespace, "web", {"app": box})
    at_checkpoint = box.wait_counter(5)

    made = _ckpt(stack, "checkpoint", "web", "-n", namespace, "--name", "from-cli")
    assert made.returncode == 0, made.stderr
    assert "checkpoint.ckpt.dev/from-cli created" in made.stderr
    assert "Ready" in made.stdout and "sha256:" in made.stdout
    assert _metric(stack, 'ckpt_operator_checkpoints_total{phase="Ready",reason="Ready"}') >= 1
    assert _metric(stack, "ckpt_operator_checkpoint_duration_seconds_count") >= 1

    listed = _ckpt(stack, "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "from-cli" in line)
    assert row.split()[2:5] == ["Ready", "web", stack.node]
    assert "ready" in row.split()  # joined with the checkpoints API

    # `ckpt restore` only creates a Restore (no agent calls, no tokens); the Pod it leads to
    # needs kubelets and the ckpt runtime class, covered by tests/restore on the real cluster.
    restored = _ckpt(
        stack, "restore", "from-cli", "-n", namespace, "--name", "from-cli-back",
        "--node", stack.node, "--pod-name", "web-again", "--no-wait",
    )
    assert restored.returncode == 0, restored.stderr
    assert "restore.ckpt.dev/from-cli-back created" in restored.stderr
    resource = json.loads(stack.cluster.kubectl(
        "get", "restore", "from-cli-back", "-n", namespace, "-o", "json"
    ).stdout)
    assert resource["spec"] == {
        "checkpointName": "from-cli", "nodeName": stack.node, "podName": "web-again"
    }
    assert at_checkpoint >= 5


def test_errors_say_what_to_do(stack: LocalStack, namespace: str) -> None:
    missing = _ckpt(stack, "restore", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert "could not read checkpoint" in missing.stderr and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    unknown_pod = _ckpt(stack, "checkpoint", "ghost", "-n", namespace, "--timeout", "10")
    assert unknown_pod.returncode == 1
    assert "does not exist" in unknown_pod.stderr
    assert "kubectl -n" in unknown_pod.stderr  # the next step to take


def _metric(stack: LocalStack, sample: str) -> float:
    """A sample's value from the operator's /metrics (Prometheus text format)."""
    for line in httpx.get(stack.operator_metrics_url, timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError(f"{sample} not in the operator's metrics")
