"""Fixtures shared by every part's tests: the Kubernetes API they run against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


# Stops the local cluster: runs after every other test, so that a cluster this session
# started need not be brought back (its start and deploy take more than a minute).
CLUSTER_DOWN_TEST = "tests/cluster/test_cluster_down.py"


# Before xdist's own hook, which reads the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_cluster_down goes last. Under `pytest -n N --dist loadgroup` (`make test`), every
    test that needs the cluster with real nodes runs in one worker, in order (they share
    one cluster and some reconfigure or stop it), and the others by module (module fixtures
    start their servers once). Against a --kubeconfig cluster, tests marked `local_cluster`
    are deselected (not skipped): what they need exists only on the local cluster this
    harness starts."""
    items.sort(key=lambda item: item.nodeid.startswith(CLUSTER_DOWN_TEST))  # stable
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            uses_cluster = "cluster_nodes" in getattr(item, "fixturenames", ())
            group = "cluster" if uses_cluster else item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(group))
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
