"""The user's `ckpt` verbs run as a user runs them (`python -m ckpt` with the cluster's
kubeconfig) against ckpt as deployed on a cluster with real nodes: `ckpt checkpoint` follows a
Checkpoint of a running Pod to Ready, `ckpt list` joins it with the checkpoints API, and
`ckpt restore --wait` brings it back as a new Pod whose counter goes on from the checkpointed
value. That counter lives only in a shell variable (nothing on disk holds it) and the original
keeps running, so a restored Pod printing the checkpointed value and on proves the process
came back from its memory. Errors name the next step without a traceback.

`kubectl ckpt` runs the same verbs as kubectl runs them: the real kubectl binary finds the
plugin on PATH (this environment's bin, where `pip install` put kubectl-ckpt) and takes the
namespace from the kubeconfig's context, as for its own commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster import e2e
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster, kubectl_binary
from harness.describe_text import sections

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


API_ENV = ("CKPT_API_URL", "CKPT_API_TOKEN", "CKPT_API_CA", "CKPT_API_SERVER_NAME")


def _ckpt(
    kube: Cluster, *args: str, api: e2e.ApiEndpoint | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "COLUMNS": "200"}
    for key in API_ENV:
        env.pop(key, None)
    if api:
        env |= api.cli_env()
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

    with e2e.api_endpoint(kube) as api:
        listed = _ckpt(kube, "list", "-n", namespace, api=api)
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


def _namespaced_kubeconfig(kube: Cluster, namespace: str, path: Path) -> Path:
    """The cluster's kubeconfig with `namespace` as its context's namespace."""
    document: dict[str, Any] = yaml.safe_load(kube.kubeconfig.read_text())
    for context in document["contexts"]:
        context["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def _kubectl_ckpt(
    kubeconfig: Path, *args: str, api: e2e.ApiEndpoint | None = None,
    kube: Cluster | None = None,
) -> subprocess.CompletedProcess[str]:
    """`kubectl ckpt ARGS` through the real kubectl, which finds kubectl-ckpt on PATH."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "200",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in API_ENV:
        env.pop(key, None)
    if api and kube:
        env |= api.cli_env()
    return subprocess.run(
        [kubectl_binary(), "ckpt", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_kubectl_ckpt_checkpoint_ls_describe_and_restore(
    kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = _namespaced_kubeconfig(kube, namespace, tmp_path / "kubeconfig")
    e2e.counter_pod(kube, namespace, "plugin-web", cluster_nodes.busybox_image)
    node = e2e.get(kube, namespace, "pod", "plugin-web")["spec"]["nodeName"]
    at_checkpoint = e2e.wait_ticks(kube, namespace, "plugin-web", at_least=3)

    # No -n: the namespace is the context's.
    made = _kubectl_ckpt(kubeconfig, "checkpoint", "plugin-web", "--name", "from-plugin",
                         "--wait")
    assert made.returncode == 0, made.stderr
    at_ready = e2e.ticks(kube, namespace, "plugin-web")[-1]
    assert "checkpoint.ckpt.dev/from-plugin created" in made.stdout
    assert "Ready" in made.stdout and "sha256:" in made.stdout

    with e2e.api_endpoint(kube) as api:
        listed = _kubectl_ckpt(kubeconfig, "ls", "-o", "json", api=api, kube=kube)
    assert listed.returncode == 0, listed.stderr
    assert "not joined" not in listed.stderr
    document = json.loads(listed.stdout)
    assert document["kind"] == "List"
    (item,) = [i for i in document["items"] if i["metadata"]["name"] == "from-plugin"]
    assert item["metadata"]["namespace"] == namespace
    assert item["status"]["phase"] == "Ready" and item["status"]["nodeName"] == node
    # Joined with its record in the checkpoints API.
    assert item["checkpointsApi"]["id"] == item["status"]["checkpointId"]
    assert item["checkpointsApi"]["status"] == "ready"
    assert item["checkpointsApi"]["checksum"] == item["status"]["checksum"]
    names = _kubectl_ckpt(kubeconfig, "ls", "-A", "-o", "name")
    assert "checkpoint.ckpt.dev/from-plugin" in names.stdout.splitlines()

    # kopf posts Events in the background: wait for the last before reading the story.
    e2e.event_reasons(kube, namespace, "Checkpoint", "from-plugin")
    described = _kubectl_ckpt(kubeconfig, "describe", "checkpoint", "from-plugin")
    assert described.returncode == 0, described.stderr
    story = sections(described.stdout)
    assert story[""]["Kind"] == "Checkpoint" and story[""]["Namespace"] == namespace
    assert story["Status"]["Phase"] == "Ready" and story["Status"]["Node"] == node
    assert story["Archive"]["Checksum"] == item["status"]["checksum"]
    assert story["Archive"]["Path"] == item["status"]["restorePath"]
    assert int(story["Timings"]["Total"].removesuffix(" ms")) > 0
    events = described.stdout.split("Events:\n")[1].splitlines()[2:]
    assert {"Accepted", "Ready"} <= {row.split()[1] for row in events}, described.stdout

    restored = _kubectl_ckpt(kubeconfig, "restore", "from-plugin", "--name",
                             "from-plugin-back", "--pod-name", "plugin-web-again", "--wait",
                             "-o", "json")
    assert restored.returncode == 0, restored.stderr
    resource = json.loads(restored.stdout)
    assert resource["kind"] == "Restore"
    assert resource["status"]["phase"] == "Running"
    assert resource["status"]["podName"] == "plugin-web-again"
    assert resource["spec"] == {"checkpointName": "from-plugin", "podName": "plugin-web-again"}
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/plugin-web-again",
                 "--timeout=60s")
    e2e.wait_ticks(kube, namespace, "plugin-web-again", at_least=3)
    ticks = e2e.ticks(kube, namespace, "plugin-web-again")
    # The counter goes on from its value at the checkpoint: restored from memory.
    assert at_checkpoint <= ticks[0] <= at_ready + 1, (at_checkpoint, at_ready, ticks[:5])

    restore_story = sections(
        _kubectl_ckpt(kubeconfig, "describe", "restore/from-plugin-back").stdout
    )
    assert restore_story["Status"]["Phase"] == "Running"
    assert restore_story["Archive"]["Checkpoint"] == "from-plugin (Ready)"

    missing = _kubectl_ckpt(kubeconfig, "restore", "nope")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: could not read checkpoint")
    assert "Traceback" not in missing.stderr
