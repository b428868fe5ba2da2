"""Fixtures of the node agent's service tests: a real agent process, real runc containers
under a private state root, real CRIU, and the real apiserver of the test control plane."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ckpt.devenv.containers import BusyboxContainer, Runc
from ckpt.devenv.controlplane import Cluster, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "ckpt-system"
OPERATOR_SA = "ckpt-operator"
OPERATOR_IDENTITY = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


class AgentProcess:
    """One agent server; `restart()` keeps its directories, so job records carry over."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        # Kept across restarts, so clients keep their base URL.
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, **self._env, "CKPT_AGENT_HOST": "127.0.0.1",
               "CKPT_AGENT_PORT": str(self.port)}
        log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from ckpt.cli import main; main()", "agent", "serve"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self._proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"agent not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the agent and every process it started (runc, CRIU), as when its
        container is killed: nothing gets a chance to clean up."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def stop(self, grace: float = 60.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.kill(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, chars: int = 6000) -> str:
        return self._log_path.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def criu_binary() -> str:
    """CRIU >= 4 from tools/criu/install.sh (cached after its first run)."""
    if shutil.which("runc") is None and not Path("/usr/sbin/runc").exists():
        pytest.skip("runc is not installed (tools/criu/install.sh installs it)")
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "criu" / "install.sh")],
        capture_output=True, text=True, check=False, timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"tools/criu/install.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def operator_token(kube: Cluster) -> str:
    return kube.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SA)


@pytest.fixture(scope="session")
def other_token(kube: Cluster) -> str:
    """A valid token of an identity the agent must refuse."""
    return kube.service_account_token("default", "not-the-operator")


@pytest.fixture
def runc(tmp_path: Path, criu_binary: str) -> Runc:
    return Runc(root=tmp_path / "runc", criu=criu_binary)


@pytest.fixture
def launch(tmp_path: Path, runc: Runc) -> Iterator[Callable[..., BusyboxContainer]]:
    """Starts counter containers; every container started under the test's runc root
    (restored ones included) is deleted afterwards."""
    started: list[BusyboxContainer] = []

    def start(ballast_mib: int = 0) -> BusyboxContainer:
        c = BusyboxContainer.create(tmp_path / "bundles", runc, ballast_mib=ballast_mib)
        started.append(c)
        c.start()
        c.wait_ready()
        return c

    yield start
    for cid in runc.list_ids():
        runc.run("delete", "--force", cid, check=False)
    for c in started:
        c.close()


@pytest.fixture
def agent_env(tmp_path: Path, kube: Cluster, runc: Runc, criu_binary: str) -> dict[str, str]:
    return {
        "CKPT_AGENT_NODE_NAME": "test-node",
        "CKPT_AGENT_RUNTIME": "runc",
        "CKPT_AGENT_RUNC_ROOT": str(runc.root),
        "CKPT_AGENT_CRIU_BINARY": criu_binary,
        "CKPT_AGENT_STORE": str(tmp_path / "archives"),
        "CKPT_AGENT_WORK_DIR": str(tmp_path / "work"),
        "CKPT_AGENT_STATE_DIR": str(tmp_path / "state"),
        "CKPT_AGENT_KUBECONFIG": str(kube.kubeconfig),
        "CKPT_AGENT_ALLOWED_IDENTITIES": OPERATOR_IDENTITY,
        "CKPT_AGENT_MAX_CONCURRENT_JOBS": "1",
        "CKPT_AGENT_JOB_TIMEOUT_SECONDS": "300",
    }


@pytest.fixture
def make_agent(
    agent_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    """Starts agents with settings overridden (`job_timeout_seconds="1"`); stops them after."""
    servers: list[AgentProcess] = []

    def make(**overrides: str) -> AgentProcess:
        env = {**agent_env, **{f"CKPT_AGENT_{k.upper()}": v for k, v in overrides.items()}}
        server = AgentProcess(env, tmp_path / f"agent-{len(servers)}.log")
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def agent(make_agent: Callable[..., AgentProcess]) -> AgentProcess:
    return make_agent()


@pytest.fixture
def client(agent: AgentProcess, operator_token: str) -> Iterator[httpx.Client]:
    """An HTTP client of the agent, authenticated as the operator."""
    with httpx.Client(
        base_url=agent.url, headers={"Authorization": f"Bearer {operator_token}"}, timeout=30.0
    ) as http:
        yield http


JobWaiter = Callable[..., dict]


@pytest.fixture
def wait_job(client: httpx.Client) -> JobWaiter:
    """Polls a job until it ends, or until `until(job)` holds; returns its last answer."""

    def wait(path: str, timeout: float = 120, until: Callable[[dict], bool] | None = None) -> dict:
        done = until or (lambda job: job["state"] != "running")
        deadline = time.monotonic() + timeout
        while True:
            response = client.get(path)
            assert response.status_code == 200, response.text
            job = response.json()
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} still {job} after {timeout}s")
            time.sleep(0.05)

    return wait
