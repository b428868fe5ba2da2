"""Storage locations on the real cluster, through ckpt as deployed: the schema refuses a path or
URL as a Checkpoint's storage, and the faults of object storage, on a SeaweedFS of this module
at the cluster's host address (not the cluster's default one, which other tests use):

- the S3 server killed in the middle of an upload: no object appears, the Checkpoint fails with
  a reason naming the location, the target keeps running; the parts sent before the kill stay
  as a pending multipart upload (the abort cannot reach a dead server: README's documented
  limit) until removed as README says;
- wrong credentials: a condition on the StorageLocation and on the Checkpoint, and no key in
  a status, an Event, the checkpoints API or a log line;
- the Checkpoint deleted (retainPolicy Delete) while its node has no agent (the node relabelled
  as a GPU node, so the CPU agent DaemonSet leaves it): the object is still removed, as listed
  with the S3 API. This test takes ckpt's agent off one node for a while: run the module under
  the cluster's exclusive lock when the cluster is shared.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.cluster import API_ADDRESS
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.cluster.shared_s3 import PREFIX, s3_location
from harness.controlplane import Cluster
from harness.s3 import SeaweedS3

# Needs an S3 server its pods reach, started here: --kubeconfig deselects the module.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.local_cluster]

CPU_AGENTS = f"{e2e.AGENT_SELECTOR},ckpt.dev/agent-kind=cpu"
GPU_LABEL = "nvidia.com/gpu.present"


@dataclass
class Store:
    """This module's S3 server, its bucket, and an Available location on it."""

    server: SeaweedS3
    bucket: str
    location: str

    def keys(self, namespace: str) -> list[str]:
        return self.server.keys(self.bucket, f"{PREFIX}/{namespace}/")


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster, cluster_nodes: ClusterUnderTest) -> Cluster:
    assert cluster_nodes.local is not None, "the local cluster only (marked local_cluster)"
    return ckpt_cluster


@pytest.fixture(scope="module")
def store(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    server = SeaweedS3(tmp_path_factory.mktemp("s3"), bind=API_ADDRESS)
    with server:
        bucket = f"ckpt-faults-{secrets.token_hex(3)}"
        server.create_bucket(bucket)
        with s3_location(kube, server, bucket) as location:
            yield Store(server, bucket, location)


@pytest.fixture(scope="module")
def nodes(kube: Cluster) -> list[str]:
    names = e2e.nodes(kube)
    assert len(names) >= 2, names
    return names


def _pod_unharmed(kube: Cluster, namespace: str, pod: str, before: int) -> None:
    """The target runs, was never restarted, and its counter went on."""
    found = e2e.get(kube, namespace, "pod", pod)
    assert found is not None and found["status"]["phase"] == "Running"
    assert found["status"]["containerStatuses"][0]["restartCount"] == 0
    e2e.wait_until(lambda: e2e.ticks(kube, namespace, pod)[-1] > before + 5, 60,
                   f"{pod}'s counter stopped")


def test_a_path_or_url_as_storage_is_refused_by_the_schema(kube: Cluster,
                                                            cluster_namespace: str) -> None:
    for value in ("/var/lib/ckpt/archives", "s3://bucket/key", "file:///etc", "../secrets"):
        body = {"apiVersion": e2e.GROUP_VERSION, "kind": "Checkpoint",
                "metadata": {"name": "by-path"},
                "spec": {"podName": "anything", "storage": value}}
        proc = kube.kubectl("-n", cluster_namespace, "apply", "-f", "-",
                            input=json.dumps(body), check=False)
        assert proc.returncode != 0, value
        # The apiserver's message for the schema's pattern (a StorageLocation's name).
        assert 'spec.storage: Invalid value: "' + value + '"' in proc.stderr, proc.stderr
        assert "spec.storage in body should match '^[a-z0-9]" in proc.stderr, proc.stderr
        assert e2e.get(kube, cluster_namespace, "checkpoint", "by-path") is None


def test_s3_killed_mid_upload_leaves_no_object_and_the_target_running(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, store: Store,
    nodes: list[str],
) -> None:
    namespace = cluster_namespace
    # Memory a dump must copy and the agent must upload: several 32 MiB parts, seconds.
    e2e.ballast_counter_pod(kube, namespace, "big", cluster_nodes.busybox_image, 320,
                            node=nodes[1])
    before = e2e.wait_ticks(kube, namespace, "big")
    e2e.create_checkpoint(kube, namespace, "cut-off", "big", storage=store.location)

    client = store.server.client()
    killed_at: list[str] = []
    deadline = time.monotonic() + 300
    next_look = 0.0
    while not killed_at and time.monotonic() < deadline:
        uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        if uploads:
            store.server.kill()
            killed_at.append(uploads[0]["Key"])
            break
        if time.monotonic() > next_look:
            next_look = time.monotonic() + 2
            phase = ((e2e.get(kube, namespace, "checkpoint", "cut-off") or {})
                     .get("status") or {}).get("phase")
            assert phase not in ("Ready", "Failed"), f"over before any upload was seen: {phase}"
        time.sleep(0.05)
    assert killed_at, "no multipart upload began"
    try:
        status = e2e.wait_phase(kube, namespace, "checkpoint", "cut-off", {"Ready", "Failed"})
        # Failed, with the reason and the location in the condition; never Ready.
        assert status["phase"] == "Failed", status
        ready = e2e.conditions(status)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "DumpFailed"), ready
        assert f"location '{store.location}'" in ready["message"], ready
        assert "unreachable" in ready["message"] or "HTTP" in ready["message"], ready
        assert not status.get("restorePath")
        key = f"{PREFIX}/{namespace}/{status['checkpointId']}.tar.zst"
        assert killed_at == [key]
        _pod_unharmed(kube, namespace, "big", before)
    finally:
        store.server.start()
    # Back up with the same data: no object, complete or partial, under the namespace.
    assert store.keys(namespace) == []
    # The parts sent before the kill: a pending upload of that key (README's limit), which
    # README's clean-up (abort every pending upload older than the newest checkpoint) removes.
    pending = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert [u["Key"] for u in pending] == [key]
    for upload in pending:
        client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"],
                                      UploadId=upload["UploadId"])
    assert store.server.pending_uploads(store.bucket) == []


def test_wrong_credentials_show_on_the_location_and_the_checkpoint_never_in_clear(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, store: Store,
    nodes: list[str],
) -> None:
    namespace = cluster_namespace
    wrong = "wrong" + secrets.token_hex(16)
    started = time.monotonic()
    with s3_location(kube, store.server, store.bucket, secret_key=wrong) as location:
        status: dict[str, Any] = {}

        def unavailable() -> bool:
            status.clear()
            found = json.loads(kube.kubectl("get", "storagelocation", location, "-o",
                                            "json").stdout)
            status.update(found.get("status") or {})
            return status.get("phase") == "Unavailable"

        e2e.wait_until(unavailable, 120, f"StorageLocation {location} never Unavailable")
        available = e2e.conditions(status)["Available"]
        assert available["status"] == "False"
        assert "the secret key is wrong" in available["message"], available

        e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image, nodes[0])
        before = e2e.wait_ticks(kube, namespace, "counter")
        e2e.create_checkpoint(kube, namespace, "denied", "counter", storage=location)
        checkpoint = e2e.wait_phase(kube, namespace, "checkpoint", "denied",
                                    {"Ready", "Failed"})
        assert checkpoint["phase"] == "Failed", checkpoint
        ready = e2e.conditions(checkpoint)["Ready"]
        assert ready["reason"] == "DumpFailed", ready
        assert "the secret key is wrong" in ready["message"], ready
        assert f"location '{location}'" in ready["message"], ready
        _pod_unharmed(kube, namespace, "counter", before)
        assert store.keys(namespace) == []

        # No key in clear: statuses, Events (the namespace's, and those about cluster-scoped
        # locations, in `default`), the API record, the operator's and the agent's logs.
        minutes = f"{int(time.monotonic() - started) // 60 + 2}m"
        seen = "\n".join([
            json.dumps(checkpoint), json.dumps(status),
            kube.kubectl("-n", namespace, "get", "events", "-o", "json").stdout,
            kube.kubectl("-n", "default", "get", "events", "-o", "json").stdout,
            kube.kubectl("-n", NAMESPACE, "get", "events", "-o", "json").stdout,
            *(r.model_dump_json() for r in e2e.api_records(kube, namespace, "denied")),
            kube.kubectl("-n", NAMESPACE, "logs", "deployment/ckpt-operator",
                         f"--since={minutes}").stdout,
            kube.kubectl("-n", NAMESPACE, "logs", e2e.agent_on(kube, nodes[0]), "-c", "agent",
                         f"--since={minutes}").stdout,
        ])
        assert "denied" in seen and location in seen  # the texts are the right ones
        for secret in (wrong, store.server.secret_key):
            assert secret not in seen


def _cpu_agents_on(kube: Cluster, node: str) -> list[dict[str, Any]]:
    return e2e.items(kube, NAMESPACE, "pods", "-l", CPU_AGENTS,
                     "--field-selector", f"spec.nodeName={node}")


@pytest.fixture
def node_without_agent(kube: Cluster, nodes: list[str]) -> Iterator[str]:
    """nodes[0] labelled as a GPU node: the CPU agent DaemonSet's pod leaves it (its
    affinity excludes GPU nodes) and the GPU one cannot run there. Afterwards the label goes
    and the node's agent is Ready again."""
    node = nodes[0]
    kube.kubectl("label", "node", node, f"{GPU_LABEL}=true", "--overwrite")
    try:
        e2e.wait_until(lambda: not _cpu_agents_on(kube, node), 330,
                       f"the CPU agent did not leave {node}")
        yield node
    finally:
        kube.kubectl("label", "node", node, f"{GPU_LABEL}-")

        def agent_ready() -> bool:
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for p in _cpu_agents_on(kube, node)
                for c in p["status"].get("conditions", [])
            )

        e2e.wait_until(agent_ready, 300, f"no Ready agent on {node} again")


def test_deleting_a_checkpoint_removes_its_object_with_no_agent_on_its_node(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, store: Store,
    nodes: list[str], request: pytest.FixtureRequest,
) -> None:
    namespace = cluster_namespace
    e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image, nodes[0])
    e2e.wait_ticks(kube, namespace, "counter")
    status = e2e.checkpoint_ready(kube, namespace, "kept", "counter",
                                  storage=store.location, retainPolicy="Delete")
    key = f"{PREFIX}/{namespace}/{status['checkpointId']}.tar.zst"
    assert status["restorePath"] == f"s3://{store.bucket}/{key}"
    assert status["nodeName"] == nodes[0]
    assert store.keys(namespace) == [key]

    node = request.getfixturevalue("node_without_agent")
    kube.kubectl("-n", namespace, "delete", "checkpoint", "kept", "--timeout=120s")
    assert e2e.get(kube, namespace, "checkpoint", "kept") is None
    assert not _cpu_agents_on(kube, node), "an agent came back before the deletion was over"
    assert store.keys(namespace) == []
