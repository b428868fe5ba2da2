"""Fixtures shared by every part's tests: the Kubernetes API they run against."""

from __future__ import annotations

import os
import tempfile
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
# The tests that use the local cluster with nodes (the `cluster_nodes` fixture, directly or
# through another fixture) form one group, found from their fixtures at collection: under
# `pytest -n N` (`make test`) the group is one unit of work, run by one worker in order (they
# share one cluster, some reconfigure ckpt on it, and the last one stops it).
CLUSTER_GROUP = "local-cluster"
# The scheduler (in the controller, which collects nothing) learns the group from the workers
# through this file: xdist's own group marker travels as a nodeid suffix that pytest 9's
# nodes no longer take (pytest-xdist 3.8 writes `_nodeid`, pytest 9 reads `_id`).
_GROUP_FILE_ENV = "CKPT_TEST_CLUSTER_GROUP_FILE"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    # Set before the workers start (xdist spawns them at session start): they inherit it.
    fd, name = tempfile.mkstemp(prefix="ckpt-cluster-tests-")
    os.close(fd)
    os.environ[_GROUP_FILE_ENV] = name
    config.add_cleanup(lambda: Path(name).unlink(missing_ok=True))


def _uses_cluster(item: pytest.Item) -> bool:
    return "cluster_nodes" in getattr(item, "fixturenames", ())


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cluster's tests first (the longest unit of work starts at once), test_cluster_down
    last. Against a --kubeconfig cluster, tests marked `local_cluster` are deselected (not
    skipped): what they need exists only on the local cluster this harness starts."""
    group_file = os.environ.get(_GROUP_FILE_ENV)
    if group_file and hasattr(config, "workerinput"):
        # Every worker collects the same tests, and writes the same names.
        worker = config.workerinput["workerid"]
        partial = Path(f"{group_file}.{worker}")
        partial.write_text("\n".join(i.nodeid for i in items if _uses_cluster(i)))
        partial.replace(group_file)
    items.sort(key=lambda item: (not _uses_cluster(item),
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
    start their servers once), and the cluster's tests are one unit together, in collection
    order (the order above: it starts first, and test_cluster_down ends it)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndTheCluster(LoadScopeScheduling):
        _cluster: frozenset[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            # Called once all workers collected (and so wrote the group file).
            if self._cluster is None:
                self._cluster = frozenset(
                    Path(os.environ[_GROUP_FILE_ENV]).read_text().splitlines()
                )
            return CLUSTER_GROUP if nodeid in self._cluster else _module(nodeid)

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

