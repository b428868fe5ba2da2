"""The operator tests' world: the local stack (API, agent, operator as real processes, with
the RBAC from deploy/) on the test control plane, and real runc containers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from operator_support import Checkpoints

from ckpt.api.client import SyncCheckpointsClient
from harness.containers import BusyboxContainer, Launcher, Runc
from harness.controlplane import Cluster
from harness.stack import LocalStack
from harness.tools import criu_binary


@pytest.fixture(scope="module")
def stack(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    runc = Runc(root=workdir / "runc", criu=criu_binary())
    with LocalStack(kube, workdir, runc) as running:
        yield running
        for cid in runc.list_ids():
            runc.run("delete", "--force", cid, check=False)


@pytest.fixture
def namespace(kube: Cluster) -> str:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(name)
    return name


@pytest.fixture
def container(stack: LocalStack, tmp_path: Path) -> Iterator[Callable[..., BusyboxContainer]]:
    """Starts counter containers under the stack's runc root; all are removed afterwards."""
    with Launcher(tmp_path / "bundles", stack.runc) as launcher:
        yield launcher.start


@pytest.fixture
def api(stack: LocalStack) -> Iterator[SyncCheckpointsClient]:
    with SyncCheckpointsClient(stack.api_url, stack.api_token) as http:
        yield http


@pytest.fixture
def custom(kube: Cluster) -> Iterator[client.CustomObjectsApi]:
    with kube.api_client() as api:
        yield client.CustomObjectsApi(api)


@pytest.fixture
def checkpoints(custom: client.CustomObjectsApi, namespace: str) -> Checkpoints:
    return Checkpoints(custom, namespace)
