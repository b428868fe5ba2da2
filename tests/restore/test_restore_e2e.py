"""Restore as a Pod on the real cluster (kubelet + containerd nodes with the `ckpt` runtime
handler, ckpt deployed from deploy/): a busybox counter checkpointed and brought back as a new
Pod on the same node and on the other node, refusals, and a plain Pod under the class.

The counter lives in a shell variable only, so a restored Pod that goes on counting from the
checkpointed value proves the memory came back (no file holds it). Cross-node restores need an
archive both nodes reach: on the local cluster an S3 location on SeaweedFS at the cluster's
host address, made for this module; on a --kubeconfig cluster the StorageLocation named by
CKPT_TEST_SHARED_LOCATION.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.fixtures import ClusterUnderTest
from harness.cluster.shared_s3 import shared_s3_location
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

COUNTER = e2e.COUNTER


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def shared_location(
    kube: Cluster, cluster_nodes: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A StorageLocation every node reaches: made here on the local cluster, named by
    CKPT_TEST_SHARED_LOCATION on another one (this harness cannot start a server its pods
    reach)."""
    if cluster_nodes.local is not None:
        with shared_s3_location(kube, tmp_path_factory.mktemp("shared-s3")) as name:
            yield name
        return
    # The test is marked local_cluster(unless_env=...): --kubeconfig runs it only with one.
    yield os.environ["CKPT_TEST_SHARED_LOCATION"]


@pytest.fixture(scope="module")
def nodes(kube: Cluster) -> list[str]:
    names = e2e.nodes(kube)
    assert len(names) >= 2, f"needs two nodes, the cluster has {names}"
    return names


@pytest.fixture
def namespace(cluster_namespace: str) -> str:
    return cluster_namespace


def _counter_pod(kube: Cluster, cluster: ClusterUnderTest, namespace: str, name: str,
                 node: str) -> None:
    e2e.counter_pod(kube, namespace, name, cluster.busybox_image, node)


def _checkpoint(kube: Cluster, namespace: str, name: str, pod: str,
                storage: str | None = None) -> dict[str, Any]:
    extra = {"storage": storage} if storage else {}
    return e2e.checkpoint_ready(kube, namespace, name, pod, **extra)


def _assert_restored(kube: Cluster, namespace: str, pod_name: str, node: str,
                     at_checkpoint: int) -> None:
    pod = e2e.get(kube, namespace, "pod", pod_name)
    assert pod is not None
    assert pod["spec"]["nodeName"] == node
    assert pod["spec"]["runtimeClassName"] == "ckpt"
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod_name}",
                 "--timeout=60s")
    (container,) = pod["status"]["containerStatuses"]
    assert container["restartCount"] == 0
    e2e.wait_ticks(kube, namespace, pod_name, at_least=3)
    ticks = e2e.ticks(kube, namespace, pod_name)
    # Its output goes on from the checkpointed counter: never from 1 again, and in order.
    assert ticks, "the restored Pod printed nothing"
    assert ticks[0] >= at_checkpoint > 1
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    # The file written into the original's writable layer came along.
    marker = kube.kubectl("-n", namespace, "exec", pod_name, "--", "cat", "/tmp/marker")
    assert marker.stdout.strip() == "written-by-the-original"
    kube.kubectl("-n", namespace, "delete", "pod", pod_name, "--wait=true", "--timeout=60s")
    assert e2e.get(kube, namespace, "pod", pod_name) is None


def test_counter_restored_as_a_pod_on_the_same_node(
    kube: Cluster, cluster_nodes: ClusterUnderTest, nodes: list[str], namespace: str
) -> None:
    _counter_pod(kube, cluster_nodes, namespace, "counter", nodes[0])
    at_checkpoint = e2e.wait_ticks(kube, namespace, "counter", at_least=5)
    _checkpoint(kube, namespace, "counter-1", "counter")

    e2e.create_restore(kube, namespace, "back", "counter-1", podName="counter-back",
                       nodeName=nodes[0])
    status = e2e.wait_phase(kube, namespace, "restore", "back", {"Running", "Failed"})
    assert status["phase"] == "Running", status
    assert (status["podName"], status["nodeName"]) == ("counter-back", nodes[0])
    assert {"fetch", "verify", "extract", "restore", "total"} <= status["timings"].keys()
    _assert_restored(kube, namespace, "counter-back", nodes[0], at_checkpoint)
    # The staged files are gone once the Pod runs, and deleting the Restore keeps nothing.
    assert e2e.get(kube, namespace, "restore", "back")["status"].get("staged") is False
    kube.kubectl("-n", namespace, "delete", "restore", "back", "--timeout=60s")


# Elsewhere than on the local cluster: only with a StorageLocation both nodes reach, named by
# CKPT_TEST_SHARED_LOCATION (node-local archives stay on their node).
@pytest.mark.local_cluster(unless_env="CKPT_TEST_SHARED_LOCATION")
def test_counter_restored_as_a_pod_on_the_other_node(
    kube: Cluster, cluster_nodes: ClusterUnderTest, nodes: list[str], namespace: str,
    shared_location: str,
) -> None:
    _counter_pod(kube, cluster_nodes, namespace, "counter", nodes[0])
    at_checkpoint = e2e.wait_ticks(kube, namespace, "counter", at_least=5)
    _checkpoint(kube, namespace, "counter-1", "counter",
                storage=shared_location)
    e2e.create_restore(kube, namespace, "moved", "counter-1", podName="counter-moved",
                       nodeName=nodes[1])
    status = e2e.wait_phase(kube, namespace, "restore", "moved", {"Running", "Failed"})
    assert status["phase"] == "Running", status
    _assert_restored(kube, namespace, "counter-moved", nodes[1], at_checkpoint)


def test_refusals_create_no_pod(
    kube: Cluster, cluster_nodes: ClusterUnderTest, nodes: list[str], namespace: str
) -> None:
    # A missing Checkpoint: waited for, with the reason in a condition, and no Pod.
    e2e.create_restore(kube, namespace, "early", "not-there", podName="never")
    deadline = time.monotonic() + 60
    reason = ""
    while time.monotonic() < deadline and reason != "CheckpointNotFound":
        status = (e2e.get(kube, namespace, "restore", "early") or {}).get("status") or {}
        reason = next((c["reason"] for c in status.get("conditions", [])
                       if c["type"] == "CheckpointReady"), "")
        time.sleep(1)
    assert reason == "CheckpointNotFound"
    assert e2e.get(kube, namespace, "pod", "never") is None

    # A Checkpoint whose status names another archive than the API records.
    _counter_pod(kube, cluster_nodes, namespace, "counter", nodes[0])
    _checkpoint(kube, namespace, "counter-1", "counter")

    # A node that does not exist.
    e2e.create_restore(kube, namespace, "nowhere", "counter-1", nodeName="no-such-node")
    status = e2e.wait_phase(kube, namespace, "restore", "nowhere", {"Running", "Failed"})
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Running"] == "NodeNotFound"

    kube.kubectl(
        "-n", namespace, "patch", "checkpoint", "counter-1", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"checksum": "sha256:" + "0" * 64}}),
    )
    e2e.create_restore(kube, namespace, "tampered", "counter-1", podName="tampered-pod")
    status = e2e.wait_phase(kube, namespace, "restore", "tampered", {"Running", "Failed"})
    assert status["phase"] == "Failed"
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons["Running"] == "ChecksumMismatch"
    assert e2e.get(kube, namespace, "pod", "tampered-pod") is None
    # Nothing but the original counter runs in the namespace.
    pods = json.loads(kube.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
    assert [p["metadata"]["name"] for p in pods["items"]] == ["counter"]


def test_a_plain_pod_under_the_ckpt_class_runs_normally(
    kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str
) -> None:
    e2e.apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
        "spec": {
            "runtimeClassName": "ckpt",
            "containers": [{
                "name": "main", "image": cluster_nodes.busybox_image,
                "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", COUNTER],
            }],
        },
    })
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/plain",
                 "--timeout=120s")
    e2e.wait_ticks(kube, namespace, "plain", at_least=1)
    assert e2e.ticks(kube, namespace, "plain")[0] == 1
