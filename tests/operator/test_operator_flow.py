"""The Checkpoint flow on a cluster with real nodes, through ckpt as deployed (operator, agent
DaemonSet and checkpoints API pods from deploy/), seen as a user sees it: Checkpoint resources,
their status and Events, and the checkpoints API's records (queried with the operator's token).

- A Checkpoint of a running Pod goes Ready; the target keeps running; the archive is on the
  node; the API holds exactly one record for it, ready, with the archive's path and checksum.
- A missing pod waits with the reason in a condition, then fails at its deadline without an
  API record; a pod not running, an unknown container name and a GPU dump no agent can take
  are each named in the Accepted condition.
- Deleting a Checkpoint deprecates its API record and deletes the archive only when
  retainPolicy: Delete asks for it.

The Checkpoints whose archive is looked at name a `file` StorageLocation (the archive stays in
the node's agent folder, where the test reads it): the local cluster's default location is S3.

Restoring from a Checkpoint is covered by test_cli.py (the `ckpt restore` verb) and
tests/restore (Restore resources); faults in the middle of a dump by
test_operator_resilience.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ckpt.errors import Conflict
from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def namespace(kube: Cluster) -> Iterator[str]:
    """One namespace for the module: its tests share the counter Pod `web`."""
    with e2e.fresh_namespace(kube, "flow") as name:
        yield name


@pytest.fixture(scope="module")
def storage(kube: Cluster) -> Iterator[str]:
    """A `file` StorageLocation: archives in the agent folder of the target's node."""
    with e2e.file_location(kube) as name:
        yield name


@pytest.fixture(scope="module")
def web(kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str) -> str:
    """A running counter Pod `web`; its node's name."""
    e2e.counter_pod(kube, namespace, "web", cluster_nodes.busybox_image)
    pod = e2e.get(kube, namespace, "pod", "web")
    assert pod is not None
    return str(pod["spec"]["nodeName"])


def test_checkpoint_goes_ready_with_one_ready_api_record(
    kube: Cluster, namespace: str, web: str, storage: str
) -> None:
    e2e.wait_ticks(kube, namespace, "web")
    status = e2e.checkpoint_ready(kube, namespace, "web-1", "web", storage=storage)
    at_ready = e2e.ticks(kube, namespace, "web")[-1]

    assert status["nodeName"] == web
    assert status["agent"] == f"{NAMESPACE}/{e2e.agent_on(kube, web)}"
    assert status["checksum"].startswith("sha256:")
    assert status["sizeBytes"] > 0 and status["size"]
    assert status["gpu"] == "none"
    assert status["storageLocation"] == storage
    assert status["restorePath"].startswith("file://")
    assert e2e.archive_on_node(kube, web, status["restorePath"])
    assert set(status["timings"]) == {"freeze", "gpu", "dump", "store", "total"}
    assert status["timings"]["total"] >= status["timings"]["dump"] > 0
    assert e2e.conditions(status)["Ready"]["status"] == "True"

    # leaveRunning is the default: the target goes on counting, never restarted.
    pod = e2e.get(kube, namespace, "pod", "web")
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    e2e.wait_until(lambda: e2e.ticks(kube, namespace, "web")[-1] > at_ready + 2, 30,
                   "the checkpointed pod stopped counting")

    # Each step is an Event on the resource (kubectl describe checkpoint shows them).
    assert e2e.event_reasons(kube, namespace, "Checkpoint", "web-1") >= {
        "Accepted", "Registered", "Dumped", "Ready",
    }

    (record,) = e2e.api_records(kube, namespace, "web-1")
    assert str(record.id) == status["checkpointId"]
    assert record.status.value == "ready"
    assert record.checksum == status["checksum"]
    assert record.info["node"] == web and record.info["containers"] == ["counter"]
    # The list does not show the restore path; a ready record accepts only an exact repeat
    # of its upload, so the repeat passes and any other path is refused.
    with e2e.checkpoints_api(kube, namespace) as api:
        api.uploaded(record.id, status["restorePath"], checksum=status["checksum"])
        with pytest.raises(Conflict):
            api.uploaded(record.id, status["restorePath"] + ".other",
                         checksum=status["checksum"])


def test_missing_pod_waits_with_a_reason_then_fails_without_an_api_record(
    kube: Cluster, namespace: str
) -> None:
    e2e.create_checkpoint(kube, namespace, "ghost", "nobody", timeoutSeconds=10)
    waiting = e2e.wait_condition(kube, namespace, "checkpoint", "ghost", "Accepted",
                                 "TargetNotFound")
    assert f"pod {namespace}/nobody does not exist" in waiting["message"]
    failed = e2e.wait_phase(kube, namespace, "checkpoint", "ghost", {"Failed"}, timeout=60)
    assert e2e.conditions(failed)["Ready"]["reason"] == "Timeout"
    assert "does not exist" in failed["message"]
    assert "checkpointId" not in failed
    assert e2e.api_records(kube, namespace, "ghost") == []


def test_pod_not_running_unknown_container_and_gpu_without_a_gpu_agent_are_named(
    kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str, web: str
) -> None:
    # Scheduled, but held in Pending by an init container that never ends.
    e2e.apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
        "spec": {
            "nodeName": web,
            "initContainers": [{
                "name": "hold", "image": cluster_nodes.busybox_image,
                "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
            }],
            "containers": [{
                "name": "app", "image": cluster_nodes.busybox_image,
                "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
            }],
        },
    })
    e2e.create_checkpoint(kube, namespace, "not-running", "pending")
    e2e.create_checkpoint(kube, namespace, "no-such-container", "web", containers=["db"])
    e2e.create_checkpoint(kube, namespace, "gpu-state", "web", gpu="required")

    not_running = e2e.wait_condition(kube, namespace, "checkpoint", "not-running", "Accepted",
                                     "TargetNotRunning")
    assert f"pod {namespace}/pending is Pending, not Running" in not_running["message"]
    unknown = e2e.wait_condition(kube, namespace, "checkpoint", "no-such-container",
                                 "Accepted", "ContainerNotFound")
    assert "has no container db (it has counter)" in unknown["message"]
    gpu = e2e.wait_condition(kube, namespace, "checkpoint", "gpu-state", "Accepted", "NoAgent")
    assert f"needs GPU state but node {web} has only a CPU agent" in gpu["message"]
    assert not_running["phase"] == unknown["phase"] == gpu["phase"] == "Pending"
    # Nothing was registered for any of them.
    for name in ("not-running", "no-such-container", "gpu-state"):
        assert e2e.api_records(kube, namespace, name) == []


def test_deleting_deprecates_in_the_api_and_deletes_the_archive_only_when_asked(
    kube: Cluster, namespace: str, web: str, storage: str
) -> None:
    e2e.create_checkpoint(kube, namespace, "keep", "web", storage=storage)
    e2e.create_checkpoint(kube, namespace, "drop", "web", storage=storage, retainPolicy="Delete")
    kept = e2e.wait_phase(kube, namespace, "checkpoint", "keep", {"Ready", "Failed"})
    dropped = e2e.wait_phase(kube, namespace, "checkpoint", "drop", {"Ready", "Failed"})
    assert kept["phase"] == dropped["phase"] == "Ready", (kept, dropped)
    assert e2e.archive_on_node(kube, web, kept["restorePath"])
    assert e2e.archive_on_node(kube, web, dropped["restorePath"])

    kube.kubectl("-n", namespace, "delete", "checkpoint", "keep", "drop", "--timeout=60s")

    records = {str(r.id): r.status.value for name in ("keep", "drop")
               for r in e2e.api_records(kube, namespace, name)}
    assert records == {kept["checkpointId"]: "deprecated", dropped["checkpointId"]: "deprecated"}
    assert e2e.archive_on_node(kube, web, kept["restorePath"])
    assert not e2e.archive_on_node(kube, web, dropped["restorePath"])
