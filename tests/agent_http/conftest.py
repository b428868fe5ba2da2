"""Fixtures of the node agent's service tests: a real agent process, real runc containers
under a private state root, real CRIU, and the real apiserver of the test control plane."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness import tools
from harness.containers import BusyboxContainer, Launcher, Runc
from harness.controlplane import Cluster, free_port
from harness.identities import token_for
from harness.processes import ManagedProcess

OPERATOR_NAMESPACE = "ckpt-system"
OPERATOR_SA = "ckpt-operator"
OPERATOR_IDENTITY = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


@pytest.fixture(scope="session")
def criu_binary() -> str:
    """CRIU >= 4 from tools/criu/install.sh (cached after its first run)."""
    return tools.criu_binary()


@pytest.fixture(scope="session")
def operator_token(kube: Cluster) -> str:
    """The operator's token for the agents' audience, as its projected volume holds it."""
    kube.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SA)  # creates the account
    return token_for(kube, OPERATOR_NAMESPACE, OPERATOR_SA)


@pytest.fixture(scope="session")
def operator_default_audience_token(kube: Cluster) -> str:
    """The operator's ServiceAccount token for the apiserver's own audience (what every pod
    of that account holds): the agent must refuse it."""
    return kube.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SA)


@pytest.fixture(scope="session")
def other_token(kube: Cluster) -> str:
    """A valid token, for the agents' audience, of an identity the agent must refuse."""
    kube.service_account_token("default", "not-the-operator")  # creates the account
    return token_for(kube, "default", "not-the-operator")


@pytest.fixture
def runc(tmp_path: Path, criu_binary: str) -> Runc:
    return Runc(root=tmp_path / "runc", criu=criu_binary)


@pytest.fixture
def launch(tmp_path: Path, runc: Runc) -> Iterator[Callable[..., BusyboxContainer]]:
    """Starts counter containers; every container under the test's runc root (restored ones
    included) is deleted afterwards."""
    with Launcher(tmp_path / "bundles", runc) as launcher:
        yield launcher.start


@pytest.fixture
def agent_env(tmp_path: Path, kube: Cluster, runc: Runc, criu_binary: str) -> dict[str, str]:
    return {
        "CKPT_AGENT_NODE_NAME": "test-node",
        "CKPT_AGENT_RUNTIME": "runc",
        "CKPT_AGENT_RUNC_ROOT": str(runc.root),
        "CKPT_AGENT_CRIU_BINARY": criu_binary,
        "CKPT_AGENT_STORE": str(tmp_path / "archives"),
        "CKPT_AGENT_WORK_DIR": str(tmp_path / "work"),
        "CKPT_AGENT_RESTORES_DIR": str(tmp_path / "restores"),
        "CKPT_AGENT_STATE_DIR": str(tmp_path / "state"),
        "CKPT_AGENT_KUBECONFIG": str(kube.kubeconfig),
        "CKPT_AGENT_ALLOWED_IDENTITIES": OPERATOR_IDENTITY,
        "CKPT_AGENT_MAX_CONCURRENT_JOBS": "1",
        "CKPT_AGENT_JOB_TIMEOUT_SECONDS": "300",
    }


@pytest.fixture
def make_agent(
    agent_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ManagedProcess]]:
    """Starts agents with settings overridden (`job_timeout_seconds="1"`); stops them after."""
    servers: list[ManagedProcess] = []

    def make(**overrides: str) -> ManagedProcess:
        env = {**agent_env, **{f"CKPT_AGENT_{k.upper()}": v for k, v in overrides.items()}}
        port = free_port()
        env |= {"CKPT_AGENT_HOST": "127.0.0.1", "CKPT_AGENT_PORT": str(port)}
        server = ManagedProcess(
            "agent",
            ["agent", "serve"],
            env=env,
            url=f"http://127.0.0.1:{port}",
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


@pytest.fixture
def client(agent: ManagedProcess, operator_token: str) -> Iterator[httpx.Client]:
    """An HTTP client of the agent, authenticated as the operator."""
    with httpx.Client(
        base_url=agent.url, headers={"Authorization": f"Bearer {operator_token}"}, timeout=30.0
    ) as http:
        yield http


JobWaiter = Callable[..., dict]


@pytest.fixture
def wait_job(client: httpx.Client) -> JobWaiter:
    """Follows a job until it ends, or until `until(job)` (a test of its state or phase)
    holds; returns its last answer. Each read is the agent's long poll: it answers when the
    phase changes or the job ends, so nothing here sleeps."""

    def wait(path: str, timeout: float = 120, until: Callable[[dict], bool] | None = None) -> dict:
        done = until or (lambda job: job["state"] != "running")
        deadline = time.monotonic() + timeout
        params: dict[str, str | float] = {}
        while True:
            response = client.get(path, params=params)
            assert response.status_code == 200, response.text
            job = response.json()
            if done(job):
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{path} still {job} after {timeout}s")
            # Below the client's 30 s read timeout.
            params = {"phase": job["phase"], "wait": min(left, 20)}

    return wait
