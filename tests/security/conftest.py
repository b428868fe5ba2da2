"""Fixtures of the attack tests: a real agent process checking tokens with the real
apiserver of the test control plane, and real runc containers recorded as pods' containers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import tools
from harness.containers import Launcher, Runc
from harness.controlplane import Cluster, free_port
from harness.identities import token_for
from harness.processes import ManagedProcess

OPERATOR_NAMESPACE = "ckpt-system"
OPERATOR_SA = "ckpt-operator"
OPERATOR_IDENTITY = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


@pytest.fixture(scope="session")
def operator_token(kube: Cluster) -> str:
    """The operator's projected token: audience ckpt-agent."""
    kube.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SA)  # creates the account
    return token_for(kube, OPERATOR_NAMESPACE, OPERATOR_SA)


@pytest.fixture
def runc(tmp_path: Path) -> Runc:
    return Runc(root=tmp_path / "runc", criu=tools.criu_binary())


@pytest.fixture
def runc_root(runc: Runc) -> Path:
    return runc.root


@pytest.fixture
def launcher(tmp_path: Path, runc: Runc) -> Iterator[Launcher]:
    with Launcher(tmp_path / "bundles", runc) as launched:
        yield launched


@pytest.fixture
def make_agent(
    tmp_path: Path, kube: Cluster, runc: Runc
) -> Iterator[Callable[..., ManagedProcess]]:
    servers: list[ManagedProcess] = []

    def make(**overrides: str) -> ManagedProcess:
        port = free_port()
        env = {
            "CKPT_AGENT_NODE_NAME": "attacked-node",
            "CKPT_AGENT_HOST": "127.0.0.1",
            "CKPT_AGENT_PORT": str(port),
            "CKPT_AGENT_RUNTIME": "runc",
            "CKPT_AGENT_RUNC_ROOT": str(runc.root),
            "CKPT_AGENT_CRIU_BINARY": tools.criu_binary(),
            "CKPT_AGENT_STORE": str(tmp_path / "archives"),
            "CKPT_AGENT_WORK_DIR": str(tmp_path / "work"),
            "CKPT_AGENT_STATE_DIR": str(tmp_path / "state"),
            "CKPT_AGENT_RESTORES_DIR": str(tmp_path / "restores"),
            "CKPT_AGENT_KUBECONFIG": str(kube.kubeconfig),
            "CKPT_AGENT_ALLOWED_IDENTITIES": OPERATOR_IDENTITY,
            "CKPT_AGENT_MAX_CONCURRENT_JOBS": "1",
            "CKPT_AGENT_JOB_TIMEOUT_SECONDS": "120",
            **{f"CKPT_AGENT_{k.upper()}": v for k, v in overrides.items()},
        }
        server = ManagedProcess(
            "agent", ["agent", "serve"], env=env, url=f"http://127.0.0.1:{port}",
            log_path=tmp_path / f"agent-{len(servers)}.log",
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def agent(make_agent: Callable[..., ManagedProcess]) -> ManagedProcess:
    return make_agent()
