"""Restore as a Pod survives losing ckpt's own pods halfway: the operator killed between
staging and Pod creation, and the target node's agent deleted while it stages. Each Restore
still ends Running with exactly one restored Pod, whose counter goes on from memory, and the
staged files are removed once it runs.

DISRUPTIVE: these tests stop the operator and an agent that every other test on the cluster
uses. Run them alone (`flock -x` on a shared cluster).

Timing. Staging a small counter takes a tenth of a second, and the operator creates the Pod
right after it, so "between staging and Pod creation" is no window one could hit by chance.
Two things make it deterministic here:

- the counter holds a memory ballast (`BALLAST_MIB` of random base64 text), so its archive
  takes seconds to fetch, verify and extract;
- the operator is not merely deleted: its Deployment is first scaled to 0, then its pod is
  force-deleted (killed, no grace) as soon as a watch shows the Restore in phase Staging. The
  agent finishes the staging with no operator alive (the test waits until `stage.json`, written
  last, is there, and checks that no Pod exists and the Restore never reached Restoring), and
  only then does the Deployment get its replica back. The new operator must find the finished
  staging (the agent answers the same job by restore id) and create the Pod exactly once.

The agent case deletes the agent pod on the target node (as a rollout or an eviction would)
as soon as the watch shows Staging; the DaemonSet replaces it. The test checks that the fault
hit the staging (the operator's `Retrying` or `AgentUnavailable` Event about the Restore), so it
cannot pass by the staging having finished first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BALLAST_MIB = 384
OPERATOR = "deployment/ckpt-operator"


@pytest.fixture
def counter(
    ckpt_cluster: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str
) -> Iterator[tuple[str, int]]:
    """A Ready Checkpoint of a ballast counter on the first node: (node, last tick seen
    before the checkpoint)."""
    kube, namespace = ckpt_cluster, cluster_namespace
    node = e2e.nodes(kube)[0]
    e2e.ballast_counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image,
                            BALLAST_MIB, node)
    at_checkpoint = e2e.wait_ticks(kube, namespace, "counter", 3)
    e2e.checkpoint_ready(kube, namespace, "counter-1", "counter")
    yield node, at_checkpoint


def _restore_uid(kube: Cluster, namespace: str, name: str) -> str:
    found = e2e.get(kube, namespace, "restore", name)
    assert found is not None
    return str(found["metadata"]["uid"])


def _assert_one_running_pod(kube: Cluster, namespace: str, restore: str, uid: str, node: str,
                            at_checkpoint: int) -> None:
    status = e2e.wait_phase(kube, namespace, "restore", restore, {"Running", "Failed"})
    assert status["phase"] == "Running", status
    pods = e2e.restored_pods(kube, namespace, restore)
    assert [p["metadata"]["name"] for p in pods] == [status["podName"]], pods
    (pod,) = pods
    assert pod["metadata"]["annotations"]["ckpt.dev/restore"] == uid
    assert pod["spec"]["nodeName"] == node
    name = pod["metadata"]["name"]
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}",
                 "--timeout=60s")
    ticks = e2e.ticks(kube, namespace, name)
    assert ticks and ticks[0] >= at_checkpoint > 1, (ticks[:5], at_checkpoint)
    # The staged files go once the Pod runs (the operator asks the node's agent).
    e2e.wait_until(lambda: not e2e.staged(kube, node, uid), 60,
                   f"the staged restore {uid} is still on {node}")
    e2e.wait_until(
        lambda: (e2e.get(kube, namespace, "restore", restore) or {})
        .get("status", {}).get("staged") is False,
        60, "status.staged never went false",
    )
    # Still exactly one Pod (no late duplicate from a second flow).
    assert len(e2e.restored_pods(kube, namespace, restore)) == 1


def _operator_pod(kube: Cluster) -> str:
    pods = [p for p in e2e.items(kube, NAMESPACE, "pods", "-l",
                                 "app.kubernetes.io/name=ckpt-operator")
            if p["metadata"].get("deletionTimestamp") is None]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return str(pods[0]["metadata"]["name"])


def _scale_operator(kube: Cluster, replicas: int) -> None:
    kube.kubectl("-n", NAMESPACE, "scale", OPERATOR, f"--replicas={replicas}")
    if replicas:
        kube.kubectl("-n", NAMESPACE, "rollout", "status", OPERATOR, "--timeout=180s")


def test_operator_killed_between_staging_and_pod_creation(
    ckpt_cluster: Cluster, cluster_namespace: str, counter: tuple[str, int]
) -> None:
    kube, namespace = ckpt_cluster, cluster_namespace
    node, at_checkpoint = counter
    old = _operator_pod(kube)
    e2e.create_restore(kube, namespace, "back", "counter-1", podName="back", nodeName=node)
    uid = _restore_uid(kube, namespace, "back")
    try:
        assert e2e.watch_phase(kube, namespace, "restore", "back",
                               {"Staging", "Restoring", "Running", "Failed"}) == "Staging"
        _scale_operator(kube, 0)
        kube.kubectl("-n", NAMESPACE, "delete", "pod", old, "--grace-period=0", "--force")
        # The agent completes the staging on its own; no operator is left to create the Pod.
        e2e.wait_until(lambda: e2e.staged(kube, node, uid, "stage.json"), 120,
                       "the agent never finished staging")
        status = (e2e.get(kube, namespace, "restore", "back") or {})["status"]
        assert status["phase"] == "Staging", status
        assert e2e.restored_pods(kube, namespace, "back") == []
    finally:
        _scale_operator(kube, 1)
    assert _operator_pod(kube) != old
    _assert_one_running_pod(kube, namespace, "back", uid, node, at_checkpoint)


def test_agent_deleted_while_staging(
    ckpt_cluster: Cluster, cluster_namespace: str, counter: tuple[str, int]
) -> None:
    kube, namespace = ckpt_cluster, cluster_namespace
    node, at_checkpoint = counter
    old = e2e.agent_on(kube, node)
    e2e.create_restore(kube, namespace, "back", "counter-1", podName="back", nodeName=node)
    uid = _restore_uid(kube, namespace, "back")
    assert e2e.watch_phase(kube, namespace, "restore", "back",
                           {"Staging", "Restoring", "Running", "Failed"}) == "Staging"
    kube.kubectl("-n", NAMESPACE, "delete", "pod", old, "--wait=false")
    try:
        _assert_one_running_pod(kube, namespace, "back", uid, node, at_checkpoint)
    finally:
        kube.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/ckpt-agent",
                     "--timeout=180s", check=False)
    assert e2e.agent_on(kube, node) != old
    status = (e2e.get(kube, namespace, "restore", "back") or {})["status"]
    assert status["agent"] != f"{NAMESPACE}/{old}", status
    # The fault hit the staging: the operator saw its agent go and staged again.
    reasons = e2e.event_reasons(kube, namespace, "Restore", "back", until="Restored")
    assert reasons & {"Retrying", "AgentUnavailable"}, (reasons, status)
