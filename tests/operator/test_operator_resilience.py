"""ckpt's own pods failing in the middle of a Checkpoint of a real Pod, on a cluster with real
nodes (ckpt deployed from deploy/): the checkpoints API pod gone and back, the operator pod
deleted, the agent pod on the target's node deleted while it dumps (the operator hands the dump
to the pod its DaemonSet starts instead). Each Checkpoint ends Ready, always with exactly one
record in the checkpoints API, and the target Pod keeps running, never restarted.

The target holds a 256 MiB memory ballast, so that its dump and the archive's write take
seconds and each fault lands in the middle of them; the archives go to a `file` location (the
node's agent folder), whose write takes longer here than the local cluster's default S3 one.
ckpt's pods are deleted with a 1 s grace period: they are cut short, not left to finish their
work.

Disruptive: it scales, deletes and replaces ckpt's own pods, which any other test running on
the same cluster at the same time would see. Run it alone on a shared cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BALLAST_MIB = 256
OPERATOR = "deployment/ckpt-operator"
API = "deployment/ckpt-api"
# The agent's job phases while the target is frozen, dumped, and its archive written.
MID_DUMP = ("agent: freezing", "agent: dumping", "agent: storing")


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def namespace(kube: Cluster) -> Iterator[str]:
    with e2e.fresh_namespace(kube, "faults") as name:
        yield name


@pytest.fixture(scope="module")
def storage(kube: Cluster) -> Iterator[str]:
    with e2e.file_location(kube) as name:
        yield name


@pytest.fixture(scope="module")
def big(kube: Cluster, cluster_nodes: ClusterUnderTest, namespace: str) -> str:
    """The counter Pod `big` with its ballast, shared by the tests; its node's name."""
    e2e.ballast_counter_pod(kube, namespace, "big", cluster_nodes.busybox_image, BALLAST_MIB)
    pod = e2e.get(kube, namespace, "pod", "big")
    assert pod is not None
    return str(pod["spec"]["nodeName"])


def _status(kube: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return (e2e.get(kube, namespace, "checkpoint", name) or {}).get("status") or {}


def _wait_message(kube: Cluster, namespace: str, name: str, starts: str | tuple[str, ...],
                  timeout: float = 120) -> dict[str, Any]:
    """The Checkpoint's status once its message starts with `starts` (or one of them)."""
    seen: dict[str, Any] = {}

    def there() -> bool:
        seen.clear()
        seen.update(_status(kube, namespace, name))
        return str(seen.get("message", "")).startswith(starts)

    try:
        e2e.wait_until(there, timeout, "", interval=0.2)
    except AssertionError:
        raise AssertionError(f"{name}: no message {starts!r} in {timeout:.0f}s; "
                             f"last status: {seen}") from None
    return seen


def _delete_pods(kube: Cluster, selector: str, node: str | None = None) -> list[str]:
    """Deletes ckpt's pods matching `selector` (on `node`) with a 1 s grace period."""
    extra = ["--field-selector", f"spec.nodeName={node}"] if node else []
    names = [p["metadata"]["name"] for p in e2e.items(kube, NAMESPACE, "pods", "-l", selector,
                                                      *extra)]
    assert names, f"no pod {selector} in {NAMESPACE}"
    kube.kubectl("-n", NAMESPACE, "delete", "pod", *names, "--grace-period=1", "--wait=false")
    return names


def _assert_target_running(kube: Cluster, namespace: str) -> None:
    """`big` runs, never restarted, and counts on from now (it was not left frozen)."""
    now = e2e.ticks(kube, namespace, "big")[-1]
    e2e.wait_until(lambda: e2e.ticks(kube, namespace, "big")[-1] > now + 2, 60,
                   "the target stopped counting")
    pod = e2e.get(kube, namespace, "pod", "big")
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def _one_record(kube: Cluster, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Exactly one API record for the Checkpoint: ready when it is, else abandoned."""
    records = e2e.api_records(kube, namespace, name)
    expected = "ready" if status["phase"] == "Ready" else "deprecated"
    assert [(str(r.id), r.status.value) for r in records] == [
        (status["checkpointId"], expected)
    ], (records, status)


def test_api_pod_gone_while_the_dump_runs(
    kube: Cluster, namespace: str, big: str, storage: str
) -> None:
    e2e.create_checkpoint(kube, namespace, "api-outage", "big", storage=storage)
    e2e.wait_until(lambda: _status(kube, namespace, "api-outage").get("checkpointId"), 120,
                   "never registered", interval=0.2)
    kube.kubectl("-n", NAMESPACE, "scale", API, "--replicas=0")
    try:
        e2e.wait_until(
            lambda: not e2e.items(kube, NAMESPACE, "pods", "-l", "app.kubernetes.io/name=ckpt-api"),
            60, "the API pod is still there")
        # Dumped and stored; recording it waits for the API, saying so.
        waiting = _wait_message(kube, namespace, "api-outage", "retrying: checkpoints API")
        assert waiting["phase"] == "Uploading", waiting
    finally:
        kube.kubectl("-n", NAMESPACE, "scale", API, "--replicas=1")
        kube.kubectl("-n", NAMESPACE, "rollout", "status", API, "--timeout=300s")
    ready = e2e.wait_phase(kube, namespace, "checkpoint", "api-outage", {"Ready", "Failed"},
                           timeout=180)
    assert ready["phase"] == "Ready", ready
    assert "ApiUnavailable" in e2e.event_reasons(kube, namespace, "Checkpoint", "api-outage")
    _one_record(kube, namespace, "api-outage", ready)
    _assert_target_running(kube, namespace)


def test_operator_pod_deleted_in_the_middle(
    kube: Cluster, namespace: str, big: str, storage: str
) -> None:
    e2e.create_checkpoint(kube, namespace, "across-restart", "big", storage=storage)
    midway = _wait_message(kube, namespace, "across-restart", "agent: ")
    assert midway["checkpointId"]
    (old,) = _delete_pods(kube, "app.kubernetes.io/name=ckpt-operator")
    try:
        e2e.wait_until(lambda: e2e.get(kube, NAMESPACE, "pod", old) is None, 120,
                       f"operator pod {old} still there")
    finally:
        kube.kubectl("-n", NAMESPACE, "rollout", "status", OPERATOR, "--timeout=300s")
    ready = e2e.wait_phase(kube, namespace, "checkpoint", "across-restart",
                           {"Ready", "Failed"}, timeout=180)
    assert ready["phase"] == "Ready", ready
    # The new operator took the same checkpoint over instead of starting another one.
    assert ready["checkpointId"] == midway["checkpointId"]
    _one_record(kube, namespace, "across-restart", ready)
    _assert_target_running(kube, namespace)


def test_agent_pod_deleted_in_the_middle_of_a_dump(
    kube: Cluster, namespace: str, big: str, storage: str
) -> None:
    e2e.create_checkpoint(kube, namespace, "agent-dies", "big", storage=storage,
                          timeoutSeconds=120)
    midway = _wait_message(kube, namespace, "agent-dies", MID_DUMP)
    (old,) = _delete_pods(kube, e2e.AGENT_SELECTOR, node=big)
    try:
        # Its DaemonSet replaces it on the same node.
        e2e.wait_until(lambda: e2e.get(kube, NAMESPACE, "pod", old) is None, 120,
                       f"agent pod {old} still there")
    finally:
        e2e.wait_until(lambda: _agent_ready(kube, big), 180, f"no ready agent on {big}")
    assert e2e.agent_on(kube, big) != old

    # The operator hands the dump to the replacement once the old pod is gone, well before
    # the Checkpoint's 120 s deadline (it used to call the dead address until then). A dump
    # already storing its last bytes may still finish on the old pod within its 1 s grace.
    ended = e2e.wait_phase(kube, namespace, "checkpoint", "agent-dies", {"Ready", "Failed"},
                           timeout=240)
    assert ended["phase"] == "Ready", ended
    assert ended["checkpointId"] == midway["checkpointId"]
    if ended["agent"] != f"{NAMESPACE}/{old}":
        assert ended["agent"] == f"{NAMESPACE}/{e2e.agent_on(kube, big)}", ended
        assert "Retrying" in e2e.event_reasons(kube, namespace, "Checkpoint", "agent-dies")
    _one_record(kube, namespace, "agent-dies", ended)
    # Left frozen by the killed dump, the target was thawed: it counts on.
    _assert_target_running(kube, namespace)


def _agent_ready(kube: Cluster, node: str) -> bool:
    try:
        name = e2e.agent_on(kube, node)
    except AssertionError:
        return False
    pod = e2e.get(kube, NAMESPACE, "pod", name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))
