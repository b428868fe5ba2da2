"""A CheckpointPolicy on a real cluster, through ckpt as deployed: a counter Pod selected by
`every: 20s, keepLast: 2` gets a leave-running Checkpoint each period, they go Ready, and those
beyond keepLast are deleted with their archives (node-local, checked on the node), while the
Pod runs on untouched. Deleting the policy deletes its Checkpoints and their archives."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test may start the cluster and install ckpt from its images: minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

POLICY = "counter-every-20s"
LIST_PODS = "ckpt-operator-list-pods"


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def node_local(kube: Cluster) -> Iterator[str]:
    with e2e.file_location(kube) as name:
        yield name


@pytest.fixture
def pods_listable(kube: Cluster, cluster_namespace: str) -> Iterator[None]:
    """The per-namespace grant that lets the operator list the policy's pods (deploy/ binds
    ClusterRole ckpt-operator-list-pods nowhere), removed after: the security tests count
    every binding of ckpt's ServiceAccounts."""
    kube.kubectl("-n", cluster_namespace, "create", "rolebinding", LIST_PODS,
                 f"--clusterrole={LIST_PODS}",
                 f"--serviceaccount={NAMESPACE}:ckpt-operator")
    try:
        yield
    finally:
        kube.kubectl("-n", cluster_namespace, "delete", "rolebinding", LIST_PODS,
                     "--ignore-not-found", check=False)


def _created(item: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(
        item["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def test_periodic_checkpoints_are_taken_and_pruned_to_keep_last_with_their_archives(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, node_local: str,
    pods_listable: None,
) -> None:
    namespace = cluster_namespace
    e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image)
    e2e.apply(kube, namespace, {
        "apiVersion": e2e.GROUP_VERSION, "kind": "CheckpointPolicy",
        "metadata": {"name": POLICY},
        "spec": {"selector": {"matchLabels": {"app": "counter"}}, "every": "20s",
                 "keepLast": 2, "storage": node_local},
    })

    # Every Checkpoint the policy makes, as last seen: name -> object.
    seen: dict[str, dict[str, Any]] = {}
    current: list[dict[str, Any]] = []

    def pruned_to_keep_last() -> bool:
        current[:] = e2e.items(kube, namespace, "checkpoints", "-l",
                               f"ckpt.dev/policy={POLICY}")
        for item in current:
            seen[item["metadata"]["name"]] = item
        failed = [i for i in current if (i.get("status") or {}).get("phase") == "Failed"]
        assert not failed, f"a periodic checkpoint failed: {failed[0].get('status')}"
        ready_seen = [n for n, i in seen.items()
                      if (i.get("status") or {}).get("phase") == "Ready"]
        ready_now = [i for i in current if (i.get("status") or {}).get("phase") == "Ready"]
        gone = set(seen) - {i["metadata"]["name"] for i in current}
        return len(ready_seen) >= 4 and len(gone) >= 2 and len(ready_now) == 2

    e2e.wait_until(pruned_to_keep_last, 300,
                   f"the policy's Checkpoints never went Ready and pruned to 2 (seen {seen})",
                   interval=1)

    # What the policy made: leave-running, its archive deleted with it, labelled and owned.
    policy = e2e.get(kube, namespace, "checkpointpolicy", POLICY)
    assert policy is not None
    for item in seen.values():
        meta, spec = item["metadata"], item["spec"]
        assert spec["podName"] == "counter" and spec["leaveRunning"] is True
        assert (spec["retainPolicy"], spec["storage"]) == ("Delete", node_local)
        assert meta["labels"]["ckpt.dev/policy"] == POLICY
        assert meta["annotations"]["ckpt.dev/workload"] == "Pod/counter"
        assert [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in
                meta["ownerReferences"]] == [
            ("CheckpointPolicy", POLICY, policy["metadata"]["uid"], True)]
    assert len({i["metadata"]["labels"]["ckpt.dev/lineage"] for i in seen.values()}) == 1
    # One period apart (at most a second early: the loop takes a slot that close at once), never
    # two at once; the creationTimestamp has whole seconds.
    times = sorted(_created(i) for i in seen.values())
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 18 for gap in gaps), gaps

    # The pruned ones took their archives; the kept ones' archives are on the node (unless
    # the next period's checkpoint has pruned one since).
    kept = {i["metadata"]["name"] for i in current}
    found = 0
    for name, item in seen.items():
        status = item.get("status") or {}
        if status.get("phase") != "Ready":
            continue
        on_node = e2e.archive_on_node(kube, status["nodeName"], status["restorePath"])
        if name not in kept:
            assert not on_node, f"{status['restorePath']} outlived its pruned Checkpoint {name}"
        else:
            assert on_node or e2e.get(kube, namespace, "checkpoint", name) is None, name
            found += on_node
    assert found >= 1

    # The pod ran on throughout: periodic checkpoints leave it running.
    pod = e2e.get(kube, namespace, "pod", "counter")
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    # The policy's status tells the story.
    status = (e2e.get(kube, namespace, "checkpointpolicy", POLICY) or {}).get("status") or {}
    assert status["podsCovered"] == 1
    assert status["lastCheckpoint"].startswith("counter-")
    [lineage] = status["lineages"]
    assert (lineage["workload"], lineage["pods"]) == ("Pod/counter", ["counter"])
    assert 1 <= lineage["ready"] <= 2
    assert e2e.conditions(status)["Ready"]["status"] == "True"
    assert e2e.conditions(status)["CheckpointsFailing"]["status"] == "False"
    row = kube.kubectl("-n", namespace, "get", "cpol", POLICY, "--no-headers").stdout.split()
    assert row[:4] == [POLICY, "1", "20s", "2"], row

    # Deleting the policy deletes its Checkpoints (ownerReference), and their archives go with
    # them (retainPolicy: Delete).
    last = [i for i in e2e.items(kube, namespace, "checkpoints", "-l",
                                 f"ckpt.dev/policy={POLICY}")
            if (i.get("status") or {}).get("phase") == "Ready"]
    assert last
    kube.kubectl("-n", namespace, "delete", "checkpointpolicy", POLICY, "--timeout=120s")
    e2e.wait_until(
        lambda: not e2e.items(kube, namespace, "checkpoints", "-l",
                              f"ckpt.dev/policy={POLICY}"),
        180, "the policy's Checkpoints outlived it")
    for item in last:
        status = item["status"]
        deadline = time.monotonic() + 30
        while e2e.archive_on_node(kube, status["nodeName"], status["restorePath"]):
            assert time.monotonic() < deadline, f"{status['restorePath']} outlived its policy"
            time.sleep(1)
    assert json.loads(kube.kubectl("-n", namespace, "get", "pod", "counter", "-o",
                                   "json").stdout)["status"]["phase"] == "Running"


def test_a_policy_without_the_pod_list_grant_says_how_to_give_it(
    kube: Cluster, cluster_namespace: str
) -> None:
    e2e.apply(kube, cluster_namespace, {
        "apiVersion": e2e.GROUP_VERSION, "kind": "CheckpointPolicy",
        "metadata": {"name": "no-grant"},
        "spec": {"selector": {"matchLabels": {"app": "counter"}}, "every": "20s"},
    })
    status = e2e.wait_condition(kube, cluster_namespace, "checkpointpolicy", "no-grant",
                                "Ready", "PodsForbidden", timeout=120)
    message = e2e.conditions(status)["Ready"]["message"]
    assert (f"kubectl -n {cluster_namespace} create rolebinding {LIST_PODS} "
            f"--clusterrole={LIST_PODS} --serviceaccount={NAMESPACE}:ckpt-operator") in message
