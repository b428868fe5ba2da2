"""The cluster that e2e tests with real nodes run against (tests/conftest.py registers it).

Three cases, in this order:
1. `--kubeconfig PATH` (or KUBECONFIG with CKPT_TEST_USE_KUBECONFIG=1): that cluster, as it is
   (kind on a machine with Docker, ...). Nothing is started or stopped.
2. A local cluster already running (`make cluster`): reused, and left running.
3. Otherwise a local cluster is started (CKPT_TEST_NODES nodes, default 2) and stopped at the
   end of the session, leaving nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.cluster.cluster import LocalKubeCluster
from harness.cluster.images import BUSYBOX_IMAGE
from harness.controlplane import Cluster, existing_cluster


@dataclass
class ClusterUnderTest:
    """What a test gets: the API (`kube`), and the local cluster when it is one."""

    kube: Cluster
    local: LocalKubeCluster | None
    started_here: bool

    @property
    def busybox_image(self) -> str:
        """A busybox image the cluster's nodes have (CKPT_TEST_BUSYBOX_IMAGE elsewhere)."""
        if self.local is not None:
            return BUSYBOX_IMAGE
        return os.environ.get("CKPT_TEST_BUSYBOX_IMAGE", "docker.io/library/busybox:1.36")


@contextmanager
def cluster_with_nodes(kubeconfig: Path | None) -> Iterator[ClusterUnderTest]:
    if kubeconfig is not None:
        yield ClusterUnderTest(existing_cluster(kubeconfig), None, started_here=False)
        return
    local = LocalKubeCluster()
    if local.running():
        yield ClusterUnderTest(local.cluster(), local, started_here=False)
        return
    nodes = int(os.environ.get("CKPT_TEST_NODES", "2"))
    try:
        kube = local.up(nodes=nodes)
        yield ClusterUnderTest(kube, local, started_here=True)
    finally:
        local.down()
