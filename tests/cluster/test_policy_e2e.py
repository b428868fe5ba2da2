"""A CheckpointPolicy on a real cluster, through ckpt as deployed: a counter Pod selected by
`every: 20s, keepLast: 2` gets a leave-running Checkpoint each period, they go Ready, and those
beyond keepLast are deleted with their archives (node-local, checked on the node), while the
Pod runs on untouched. Deleting the policy deletes its Checkpoints and their archives. Then
`kubectl ckpt policy status` (the plugin, through the real kubectl binary) tells what a policy
made."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster, kubectl_binary
from harness.describe_text import sections

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


STATUS_POLICY = "counter-status"


def _plugin(kube: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl ckpt ...` through the real kubectl binary, which finds kubectl-ckpt (and
    kubectl_complete-ckpt) beside this Python, as after `pip install ckpt`. kubectl takes no
    flags of its own before a plugin's name, so the kubeconfig goes by KUBECONFIG."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([kubectl_binary(), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_kubectl_ckpt_policy_status_tells_what_the_policy_made(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, node_local: str,
    pods_listable: None,
) -> None:
    namespace = cluster_namespace
    e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image)
    e2e.apply(kube, namespace, {
        "apiVersion": e2e.GROUP_VERSION, "kind": "CheckpointPolicy",
        "metadata": {"name": STATUS_POLICY},
        "spec": {"selector": {"matchLabels": {"app": "counter"}}, "every": "20s",
                 "keepLast": 2, "storage": node_local},
    })

    def made_two_ready() -> bool:
        made = e2e.items(kube, namespace, "checkpoints", "-l",
                         f"ckpt.dev/policy={STATUS_POLICY}")
        phases = [(i.get("status") or {}).get("phase") for i in made]
        assert "Failed" not in phases, f"a periodic checkpoint failed: {made}"
        status = (e2e.get(kube, namespace, "checkpointpolicy", STATUS_POLICY) or {}).get(
            "status") or {}
        return phases.count("Ready") >= 2 and bool(status.get("lastCheckpoint"))

    e2e.wait_until(made_two_ready, 240, "the policy never made two Ready checkpoints",
                   interval=1)

    # The story, as a user reads it.
    told = _plugin(kube, "ckpt", "policy", "status", STATUS_POLICY, "-n", namespace)
    assert told.returncode == 0, told.stderr
    story = sections(told.stdout)
    assert (story[""]["Name"], story[""]["Namespace"]) == (STATUS_POLICY, namespace)
    assert story["Spec"]["Selector"] == "app=counter"
    assert story["Spec"]["Every"] == "20s" and story["Spec"]["Storage"] == node_local
    assert story["Status"]["Pods Covered"] == "1"
    assert story["Status"]["Last Checkpoint"].startswith("counter-")
    # The next slot is at most a period away (or just passing, when a dump is about to start).
    assert story["Status"]["Next Checkpoint"].endswith(", pod counter)")
    assert story["Status"]["Next Checkpoint"].startswith(("in ", "due ")), story["Status"]
    lineage_rows = told.stdout.split("\nLineages:\n")[1].split("\nFailed Checkpoints:")[0]
    header, row = (line.split() for line in lineage_rows.splitlines()[:2])
    assert header[:3] == ["Workload", "Pods", "Latest-Ready"]
    assert row[:3] == ["Pod/counter", "counter", story["Status"]["Last Checkpoint"].split()[0]]
    assert "Conditions:" in told.stdout and "Reconciled" in told.stdout

    # The same as data: consistent with itself whatever the policy did in between.
    as_json = _plugin(kube, "ckpt", "policy", "status", STATUS_POLICY, "-n", namespace,
                      "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["kind"] == "CheckpointPolicyReport" and report["podsCovered"] == 1
    [lineage] = report["lineages"]
    assert (lineage["workload"], lineage["pods"], lineage["keep"]) == (
        "Pod/counter", ["counter"], 2)
    assert lineage["ready"] >= 1 and lineage["failed"] == 0
    latest = lineage["latestReady"]
    assert latest["phase"] == "Ready" and latest["sizeBytes"] > 0 and latest["size"]
    newest = max(_created({"metadata": {"creationTimestamp": c["createdAt"]}})
                 for c in lineage["checkpoints"])
    due = dt.datetime.fromisoformat(report["nextDue"]["at"].replace("Z", "+00:00"))
    assert due - newest == dt.timedelta(seconds=20), report["nextDue"]
    assert report["nextDue"]["pod"] == "counter"

    # Every policy of the namespace; a missing one; completion of the names.
    listed = _plugin(kube, "ckpt", "policy", "status", "-n", namespace, "-o", "name")
    assert listed.stdout.splitlines() == [f"checkpointpolicy.ckpt.dev/{STATUS_POLICY}"]
    missing = _plugin(kube, "ckpt", "policy", "status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: could not read checkpointpolicy {namespace}/nope")
    assert "not found" in missing.stderr and "Traceback" not in missing.stderr
    completed = _plugin(kube, "__complete", "ckpt", "policy", "status", "-n", namespace, "")
    assert completed.stdout.splitlines() == [STATUS_POLICY, ":4"], completed.stdout

    kube.kubectl("-n", namespace, "delete", "checkpointpolicy", STATUS_POLICY, "--timeout=120s")
    e2e.wait_until(
        lambda: not e2e.items(kube, namespace, "checkpoints", "-l",
                              f"ckpt.dev/policy={STATUS_POLICY}"),
        180, "the policy's Checkpoints outlived it")
