"""Fixtures shared by every part's tests: the Kubernetes API they run against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster.deploy import NAMESPACE, deploy_ckpt
from harness.cluster.e2e import fresh_namespace
from harness.cluster.fixtures import ClusterUnderTest, cluster_with_nodes
from harness.controlplane import Cluster, cluster_for_tests


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=None,
        help="run against this existing cluster (e.g. kind) instead of a local control plane; "
        "KUBECONFIG is used too when CKPT_TEST_USE_KUBECONFIG=1",
    )


def _existing_kubeconfig(config: pytest.Config) -> Path | None:
    explicit = config.getoption("--kubeconfig")
    if explicit:
        return Path(explicit)
    if os.environ.get("CKPT_TEST_USE_KUBECONFIG") == "1" and os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"])
    return None


_DESELECTED = pytest.StashKey[list[str]]()


# Stops the cluster: the last test, so that a cluster this session started need not be
# brought back (its start and deploy take more than a minute).
CLUSTER_DOWN_MODULE = "tests/cluster/test_cluster_down.py"
# The modules whose tests use the local cluster with nodes (the `cluster_nodes` fixture).
# Under `pytest -n N` (`make test`) they form one unit of work, run by one worker in order:
# they share one cluster, some reconfigure ckpt on it, and the last one stops it.
# pytest_collection_modifyitems refuses a cluster test in a module missing here.
CLUSTER_MODULES = frozenset({
    "tests/apps/test_applications_e2e.py",
    "tests/cluster/test_backends_e2e.py",
    "tests/cluster/test_checkpoint_e2e.py",
    "tests/cluster/test_cluster_e2e.py",
    "tests/cluster/test_policy_e2e.py",
    "tests/operator/test_cli.py",
    "tests/operator/test_operator_flow.py",
    "tests/operator/test_operator_resilience.py",
    "tests/restore/test_restore_e2e.py",
    "tests/restore/test_restore_faults.py",
    "tests/restore/test_restore_pod_shapes.py",
    "tests/security/test_admission_attacks.py",
    "tests/security/test_cluster_attacks.py",
    "tests/storage/test_cluster_storage.py",
    CLUSTER_DOWN_MODULE,
})


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cluster's tests first (the longest unit of work starts at once), test_cluster_down
    last. Against a --kubeconfig cluster, tests marked `local_cluster` are deselected (not
    skipped): what they need exists only on the local cluster this harness starts."""
    for item in items:
        if ("cluster_nodes" in getattr(item, "fixturenames", ())
                and _module(item.nodeid) not in CLUSTER_MODULES):
            raise pytest.UsageError(
                f"{item.nodeid} uses the local cluster: add its module to CLUSTER_MODULES in "
                "tests/conftest.py, so that `pytest -n` runs it in the cluster's worker"
            )
    items.sort(key=lambda item: (_module(item.nodeid) not in CLUSTER_MODULES,
                                 _module(item.nodeid) == CLUSTER_DOWN_MODULE))  # stable
    if _existing_kubeconfig(config) is None:
        return
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("local_cluster")
        stand_in = marker.kwargs.get("unless_env") if marker else None
        if marker is None or (stand_in and os.environ.get(stand_in)):
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config.stash[_DESELECTED] = [item.nodeid for item in dropped]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    dropped = config.stash.get(_DESELECTED, [])
    if dropped:
        terminalreporter.write_line(
            f"{len(dropped)} test(s) need the local cluster (`make cluster`), not the "
            f"--kubeconfig one, and were deselected: {', '.join(dropped)}"
        )


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n N`: every module is a unit of work for one worker (module fixtures
    start their servers once), and the cluster's modules are one unit together, in
    collection order (the order above: it starts first, and test_cluster_down ends it)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndTheCluster(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "local-cluster" if module in CLUSTER_MODULES else module

    # Units in collection order, not largest first.
    config.option.loadscopereorder = False
    return ModulesAndTheCluster(config, log)


@pytest.fixture(scope="session")
def kube(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """A real kube-apiserver (RBAC on, token auth, ServiceAccount tokens) for the whole session."""
    with cluster_for_tests(_existing_kubeconfig(pytestconfig)) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_nodes(pytestconfig: pytest.Config) -> Iterator[ClusterUnderTest]:
    """A cluster with real nodes (kubelet + containerd): the --kubeconfig one, the running
    `make cluster`, or a local one started for this session and stopped at its end."""
    with cluster_with_nodes(_existing_kubeconfig(pytestconfig)) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ckpt_cluster(cluster_nodes: ClusterUnderTest) -> Cluster:
    """The cluster with real nodes, ckpt installed from deploy/ and its own images (on the
    local cluster, installed or updated here once per session; elsewhere as found).

    CKPT_TEST_KEEP_DEPLOYED=1 keeps an installed ckpt as it runs (no image rebuild, no
    restart): for developers sharing one running cluster between several test runs."""
    local = cluster_nodes.local
    keep = os.environ.get("CKPT_TEST_KEEP_DEPLOYED") == "1" and cluster_nodes.kube.kubectl(
        "get", "namespace", NAMESPACE, check=False).returncode == 0
    if local is not None and not keep:
        deploy_ckpt(local)
    return cluster_nodes.kube


@pytest.fixture
def cluster_namespace(ckpt_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on the cluster with real nodes, deleted after the test."""
    with fresh_namespace(ckpt_cluster) as name:
        yield name
