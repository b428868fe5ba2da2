"""`make cluster-down` (LocalKubeCluster.down) leaves nothing behind: no process, mount,
bridge, veth, iptables chain, cgroup or address. Only for the local cluster."""

from __future__ import annotations

import json

import pytest

from harness.cluster.deploy import NAMESPACE, deploy_ckpt
from harness.cluster.fixtures import ClusterUnderTest

# Only the local cluster is ours to stop (--kubeconfig deselects this module).
pytestmark = [pytest.mark.e2e, pytest.mark.local_cluster]


def test_down_leaves_nothing_behind(cluster_nodes: ClusterUnderTest) -> None:
    local = cluster_nodes.local
    assert local is not None, "the local cluster only (marked local_cluster)"
    state = local.state()
    assert state is not None
    baseline = dict(state["baseline"])  # type: ignore[call-overload]
    nodes = len(state["nodes"])  # type: ignore[arg-type]
    deployed = cluster_nodes.kube.kubectl("get", "namespace", NAMESPACE,
                                          check=False).returncode == 0
    # Something for the teardown to clean: a pod on every node (veths, mounts, shims).
    for info in local.nodes():
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"sleeper-{info.name}", "namespace": "default"},
               "spec": {"nodeName": info.name, "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "main", "image": cluster_nodes.busybox_image,
                                        "command": ["sleep", "3600"]}]}}
        cluster_nodes.kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster_nodes.kube.kubectl("-n", "default", "wait", "--for=condition=Ready", "pod",
                               "--all", "--timeout=120s")
    # The detector itself sees a running cluster's traces, so an empty list later means gone.
    running = "\n".join(local.leftovers(baseline))
    for trace in ("process", "bridge", "cgroup ckpt-node-1", "veth", "iptables chain",
                  "address 198.18.0.1/32"):
        assert trace in running, trace

    local.down()
    try:
        assert local.leftovers(baseline) == []
        assert not local.running()
    finally:
        # The session's last test (tests/conftest.py orders it so): a cluster the session
        # started stays down; a developer's `make cluster` is brought back as it was.
        if not cluster_nodes.started_here:
            cluster_nodes.kube = local.up(nodes=nodes)
            if deployed:
                deploy_ckpt(local)
