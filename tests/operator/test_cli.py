"""The user's `ckpt` verbs run as a user runs them (`python -m ckpt` with the cluster's
kubeconfig) against ckpt as deployed on a cluster with real nodes: `ckpt checkpoint` follows a
Checkpoint of a running Pod to Ready, `ckpt list` joins it with the checkpoints API, and
`ckpt restore --wait` brings it back as a new Pod whose counter goes on from the checkpointed
value. That counter lives only in a shell variable (nothing on disk holds it) and the original
keeps running, so a restored Pod printing the checkpointed value and on proves the process
came back from its memory. Errors name the next step without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

READY_TOTAL = 'ckpt_operator_checkpoints_total{phase="Ready",reason="Ready"}'
DURATION_COUNT = "ckpt_operator_checkpoint_duration_seconds_count"


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def namespace(kube: Cluster) -> Iterator[str]:
    with e2e.fresh_namespace(kube, "cli") as name:
        yield name


def _ckpt(
    kube: Cluster, *args: str, api_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "COLUMNS": "200"}
    for key in ("CKPT_API_URL", "CKPT_API_TOKEN"):
        env.pop(key, None)
    if api_url:
        env |= {"CKPT_API_URL": api_url, "CKPT_API_TOKEN": e2e.api_token(kube)}
    return subprocess.run(
        [sys.executable, "-m", "ckpt", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_checkpoint_list_and_restore_from_memory_on_the_command_line(
    kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str
) -> None:
    e2e.counter_pod(kube, namespace, "web", cluster_nodes.busybox_image)
    node = e2e.get(kube, namespace, "pod", "web")["spec"]["nodeName"]
    at_checkpoint = e2e.wait_ticks(kube, namespace, "web", at_least=3)
    ready_before = e2e.operator_metric(kube, READY_TOTAL) or 0
    durations_before = e2e.operator_metric(kube, DURATION_COUNT) or 0

    made = _ckpt(kube, "checkpoint", "web", "-n", namespace, "--name", "from-cli")
    assert made.returncode == 0, made.stderr
    at_ready = e2e.ticks(kube, namespace, "web")[-1]
    assert "checkpoint.ckpt.dev/from-cli created" in made.stderr
    assert "Ready" in made.stdout and "sha256:" in made.stdout
    # The operator counted it (its /metrics, as Prometheus scrapes them).
    assert (e2e.operator_metric(kube, READY_TOTAL) or 0) >= ready_before + 1
    assert (e2e.operator_metric(kube, DURATION_COUNT) or 0) >= durations_before + 1

    with e2e.port_forward(kube, NAMESPACE, "svc/ckpt-api", e2e.API_PORT) as api_url:
        listed = _ckpt(kube, "list", "-n", namespace, api_url=api_url)
    assert listed.returncode == 0, listed.stderr
    assert "not joined" not in listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "from-cli" in line).split()
    assert row[2:5] == ["Ready", "web", node]
    assert "ready" in row  # the API column: joined with the checkpoints API

    restored = _ckpt(kube, "restore", "from-cli", "-n", namespace, "--name", "from-cli-back",
                     "--pod-name", "web-again")
    assert restored.returncode == 0, restored.stderr
    assert "restore.ckpt.dev/from-cli-back created" in restored.stderr
    assert "Running" in restored.stdout and f"{namespace}/web-again" in restored.stdout
    resource = e2e.get(kube, namespace, "restore", "from-cli-back")
    assert resource is not None
    assert resource["spec"] == {"checkpointName": "from-cli", "podName": "web-again"}

    # Without --node the operator picks the source node.
    again = e2e.get(kube, namespace, "pod", "web-again")
    assert again is not None
    assert again["spec"]["nodeName"] == node
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/web-again",
                 "--timeout=60s")
    e2e.wait_ticks(kube, namespace, "web-again", at_least=3)
    ticks = e2e.ticks(kube, namespace, "web-again")
    # A fresh start would print 1; the restored shell goes on from the value it held when
    # dumped (between the last tick before the checkpoint and the one when it was Ready).
    assert at_checkpoint <= ticks[0] <= at_ready + 1, (at_checkpoint, at_ready, ticks[:5])
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert again["spec"]["runtimeClassName"] == "ckpt"
    (status,) = e2e.get(kube, namespace, "pod", "web-again")["status"]["containerStatuses"]
    assert status["restartCount"] == 0
    # The original was left running all along.
    assert e2e.ticks(kube, namespace, "web")[-1] > at_ready


def test_errors_say_what_to_do(kube: Cluster, namespace: str) -> None:
    missing = _ckpt(kube, "restore", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert "could not read checkpoint" in missing.stderr and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    unknown_pod = _ckpt(kube, "checkpoint", "ghost", "-n", namespace, "--timeout", "10")
    assert unknown_pod.returncode == 1
    assert "does not exist" in unknown_pod.stderr
    assert f"kubectl -n {namespace} describe checkpoint" in unknown_pod.stderr  # the next step
    assert "Traceback" not in unknown_pod.stderr
