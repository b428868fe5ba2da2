"""ckpt's checkpoint backends on real Pods, through the deployed operator and agents.

- The `kubelet` backend: the agents configured as deploy/README.md ("Adapting") says
  (CKPT_AGENT_RUNTIME=kubelet on the DaemonSet) call the real kubelet's checkpoint API
  (`POST /checkpoint/{namespace}/{pod}/{container}`, which has containerd and CRIU dump the
  container); the Checkpoint goes Ready, the archive holds the kubelet's CRIU images and is
  verified from the node's agent pod, the kubelet's own tar is gone from the node, the target
  keeps running, and a Restore brings the counter back as a Pod through runc. The agents are
  switched back to the deployed configuration afterwards. Both switches restart every agent:
  run this module alone on a shared cluster (the exclusive lock of README's cluster notes).
- The `runc` backend (as deployed) on a Pod of two containers: both are frozen before either
  is dumped and thawed only after both are, i.e. one cut. Each container prints the host's
  uptime (one clock for both) every 50 ms; the pauses in their output overlap by at least the
  time the agent spent dumping, which dumps taken one container at a time could not do.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator

import pytest

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test starts the cluster (when none runs) and installs ckpt from its images:
# minutes on a cold 2-core machine, more than the suite's default per-test timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Where the kubelet leaves its checkpoint tars on a node (the agent mounts that folder).
KUBELET_CHECKPOINTS = "/var/lib/kubelet/checkpoints"
# The host's uptime (CLOCK_BOOTTIME, in centiseconds, not namespaced) every 50 ms, read
# with shell builtins only: a frozen container prints nothing, so its output pauses.
UPTIME = "while true; do read up rest < /proc/uptime; echo \"up $up\"; sleep 0.05; done"
UP = re.compile(r"^up (\d+\.\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def location(kube: Cluster) -> Iterator[str]:
    """A `file` StorageLocation: the archives stay on their node, where the agent pod reads
    them (the local cluster's default location is in object storage)."""
    with e2e.file_location(kube) as name:
        yield name


@pytest.fixture
def kubelet_agents(kube: Cluster, cluster_nodes: ClusterUnderTest) -> Iterator[None]:
    """The agents on the kubelet backend for one test, then as deployed again.

    The local cluster's kubelets serve certificates of the cluster CA, which the agent trusts
    by default (its ServiceAccount's ca.crt); elsewhere (kind) a kubelet serves a self-signed
    certificate that nothing can verify, so there the agent is told not to."""
    env = {"CKPT_AGENT_RUNTIME": "kubelet"}
    if cluster_nodes.local is None:
        env["CKPT_AGENT_KUBELET_INSECURE_SKIP_VERIFY"] = "true"
    with e2e.agents_configured(kube, **env):
        yield


def test_kubelet_backend_checkpoint_of_a_real_pod_and_its_restore(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str,
    location: str, kubelet_agents: None,
) -> None:
    namespace = cluster_namespace
    node = e2e.nodes(kube)[0]
    e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image, node)
    e2e.wait_ticks(kube, namespace, "counter", 3)
    agent = e2e.agent_on(kube, node)
    before = set(kube.kubectl("-n", NAMESPACE, "exec", agent, "-c", "agent", "--",
                              "ls", KUBELET_CHECKPOINTS).stdout.split())

    at_checkpoint = e2e.ticks(kube, namespace, "counter")[-1]
    status = e2e.checkpoint_ready(kube, namespace, "cp", "counter", storage=location)
    assert (status["nodeName"], status["agent"]) == (node, f"{NAMESPACE}/{agent}")

    verified = e2e.verified_archive(kube, node, status)
    meta = verified["meta"]
    assert isinstance(meta, dict)
    # The agent's configuration chose the backend: the kubelet dumped the container, and
    # its archive restores through runc.
    assert meta["runtime"] == "kubelet"
    assert (meta["namespace"], meta["pod"], meta["node"]) == (namespace, "counter", node)
    assert meta["checkpoint_id"] == status["checkpointId"]
    (entry,) = meta["containers"]
    assert (entry["name"], entry["images"], entry["restore_runtime"]) == (
        "counter", "containers/counter/checkpoint", "runc")
    assert entry["extra"] == {"kubelet": f"https://{_internal_ip(kube, node)}:10250"}
    names = set(verified["names"])
    # The kubelet's tar as containerd wrote it (CRIU images under checkpoint/, the container's
    # spec and config), nested under the container's folder of ckpt's archive.
    assert {"containers/counter/checkpoint/pstree.img", "containers/counter/spec.dump",
            "containers/counter/config.dump", "pod.json"} <= names

    # The kubelet's tar (mode 0600, never removed by the kubelet) is gone once archived.
    after = set(kube.kubectl("-n", NAMESPACE, "exec", agent, "-c", "agent", "--",
                             "ls", KUBELET_CHECKPOINTS).stdout.split())
    assert after <= before, f"the kubelet's tar was left behind: {after - before}"
    # The kubelet API always leaves the container running: never restarted, still counting.
    pod = e2e.get(kube, namespace, "pod", "counter")
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    last = e2e.ticks(kube, namespace, "counter")[-1]
    e2e.wait_until(lambda: e2e.ticks(kube, namespace, "counter")[-1] > last, 30,
                   "the counter stopped after the kubelet's checkpoint")

    # The kubelet's CRIU images come back as a new Pod (through runc, under runtime class
    # ckpt) going on from the checkpointed counter.
    kube.kubectl("-n", namespace, "delete", "pod", "counter", "--wait=true", "--timeout=60s")
    e2e.create_restore(kube, namespace, "back", "cp", podName="counter-back", nodeName=node)
    restored = e2e.wait_phase(kube, namespace, "restore", "back", {"Running", "Failed"})
    assert restored["phase"] == "Running", restored
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/counter-back",
                 "--timeout=60s")
    e2e.wait_ticks(kube, namespace, "counter-back", 3)
    ticks = e2e.ticks(kube, namespace, "counter-back")
    assert ticks[0] >= at_checkpoint > 1
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def _internal_ip(kube: Cluster, node: str) -> str:
    found = json.loads(kube.kubectl("get", "node", node, "-o", "json").stdout)
    return str(next(a["address"] for a in found["status"]["addresses"]
                    if a["type"] == "InternalIP"))


def _pauses(lines: str) -> list[tuple[float, float]]:
    """(last time printed before, first time printed after) of each pause longer than 0.1 s
    in a container's uptime output (it prints every 50 ms while it runs)."""
    times = [float(t) for t in UP.findall(lines)]
    assert len(times) > 20, lines[-2000:]
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > 0.1]


def test_two_containers_of_a_pod_are_frozen_as_one_cut(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, location: str
) -> None:
    namespace = cluster_namespace
    node = e2e.nodes(kube)[0]
    e2e.apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair"},
        "spec": {"nodeName": node, "containers": [
            {"name": name, "image": cluster_nodes.busybox_image,
             "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", UPTIME]}
            for name in ("left", "right")
        ]},
    })
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/pair",
                 "--timeout=120s")
    time.sleep(1)
    status = e2e.checkpoint_ready(kube, namespace, "cp", "pair", storage=location)
    time.sleep(1)

    verified = e2e.verified_archive(kube, node, status)
    meta = verified["meta"]
    assert isinstance(meta, dict)
    assert meta["runtime"] == "runc"
    assert [c["name"] for c in meta["containers"]] == ["left", "right"]
    assert meta["consistent_cut"] is True
    names = set(verified["names"])
    assert {"containers/left/pstree.img", "containers/right/pstree.img"} <= names

    # One cut: both containers are frozen before either is dumped and thawed after both
    # are, so a pause of one and a pause of the other overlap by at least the time spent
    # dumping. Dumped one after the other, each frozen only for its own dump, they would not.
    left, right = (
        _pauses(kube.kubectl("-n", namespace, "logs", "pair", "-c", c).stdout)
        for c in ("left", "right")
    )
    assert left and right, "a container of the pair never paused"
    overlap, pair = max(
        (min(l_[1], r_[1]) - max(l_[0], r_[0]), (l_, r_)) for l_ in left for r_ in right
    )
    dump_s = status["timings"]["dump"] / 1000
    assert dump_s > 0.1, status["timings"]
    # /proc/uptime counts in centiseconds.
    assert overlap >= dump_s - 0.02, (pair, status["timings"])
    # Both went on after the thaw (each printed after its pause), never restarted.
    pod = e2e.get(kube, namespace, "pod", "pair")
    assert pod is not None
    assert [c["restartCount"] for c in pod["status"]["containerStatuses"]] == [0, 0]
