"""A Checkpoint of a real Pod through ckpt as deployed (operator and agent pods from deploy/),
on the local cluster or any `--kubeconfig` cluster with ckpt installed: it goes Ready, the
target keeps running, and the archive on the node is verified from inside the node's agent pod
(checksum against the status, metadata, CRIU images and the captured writable layer). The
Checkpoint names a `file` location: the local cluster's default location is S3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

COUNTER = (
    "echo layer > /tmp/marker; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def node_local(kube: Cluster) -> Iterator[str]:
    with e2e.file_location(kube) as name:
        yield name


def test_checkpoint_of_a_real_pod_goes_ready_with_a_verified_archive(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, node_local: str
) -> None:
    namespace = cluster_namespace
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "counter"},
        "spec": {"containers": [{
            "name": "counter", "image": cluster_nodes.busybox_image,
            "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", COUNTER],
        }]},
    }))
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/counter",
                 "--timeout=120s")
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "ckpt.dev/v1alpha1", "kind": "Checkpoint",
        "metadata": {"name": "cp"}, "spec": {"podName": "counter", "storage": node_local},
    }))
    deadline = time.monotonic() + 300
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = e2e.get(kube, namespace, "checkpoint", "cp").get("status") or {}
        if status.get("phase") in ("Ready", "Failed"):
            break
        time.sleep(1)
    assert status.get("phase") == "Ready", status

    pod = e2e.get(kube, namespace, "pod", "counter")
    node = pod["spec"]["nodeName"]
    assert status["nodeName"] == node
    # leaveRunning defaults to true: the target goes on, never restarted.
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert status["checksum"].startswith("sha256:")
    assert status["storageLocation"] == node_local

    verified = e2e.verified_archive(kube, node, status)
    meta = verified["meta"]
    assert (meta["namespace"], meta["pod"], meta["node"]) == (namespace, "counter", node)
    assert meta["checkpoint_id"] == status["checkpointId"]
    assert [c["name"] for c in meta["containers"]] == ["counter"]
    names = set(verified["names"])
    # CRIU's images of the container, and what a Restore needs besides them.
    assert any(n.startswith("containers/counter/") and n.endswith("pstree.img") for n in names)
    assert {"pod.json", "capture/counter/rootfs-diff.tar"} <= names
    # The file written into the container's writable layer is in the captured diff.
    assert "tmp/marker" in verified["diff"]["capture/counter/rootfs-diff.tar"]
