"""The agent's HTTP surface against a real agent process and the real apiserver: bearer
authentication by TokenReview, error bodies, validation, info, health and metrics."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ckpt.contract.agent_client import AgentClient
from ckpt.errors import NotFound
from ckpt.operator.agents import AgentPod
from harness.controlplane import Cluster, free_port
from harness.identities import token_for
from harness.processes import ManagedProcess

# Needs a real agent process verifying tokens with the test apiserver.
pytestmark = pytest.mark.e2e

PROTECTED = [
    ("GET", "/v1/info"),
    ("GET", "/metrics"),
    ("GET", "/v1/checkpoints/any"),
    ("POST", "/v1/checkpoints"),
    ("POST", "/v1/restores"),
    ("GET", "/v1/restores/any"),
    ("DELETE", "/v1/checkpoints/any"),
]


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert "Traceback" not in response.text
    return str(body["message"])


def test_healthz_needs_no_token(agent: ManagedProcess) -> None:
    response = httpx.get(f"{agent.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_is_401(agent: ManagedProcess, method: str, path: str) -> None:
    response = httpx.request(method, f"{agent.url}{path}", json={})
    assert "Bearer" in _error(response, 401, "unauthenticated")


def test_invalid_or_malformed_token_is_401(agent: ManagedProcess, operator_token: str) -> None:
    for header in ("Bearer not-a-token", f"Basic {operator_token}", "Bearer"):
        response = httpx.get(f"{agent.url}/v1/info", headers={"Authorization": header})
        _error(response, 401, "unauthenticated")


def test_valid_token_of_another_identity_is_403(agent: ManagedProcess, other_token: str) -> None:
    for method, path in PROTECTED:
        response = httpx.request(
            method,
            f"{agent.url}{path}",
            json={},
            headers={"Authorization": f"Bearer {other_token}"},
        )
        message = _error(response, 403, "forbidden")
        assert "system:serviceaccount:default:not-the-operator" in message


def test_a_metrics_identity_reads_metrics_and_nothing_else(
    make_agent: Callable[..., ManagedProcess], other_token: str, operator_token: str
) -> None:
    # A scraper (Prometheus's ServiceAccount) is let in for /metrics only: an identity of the
    # allowed list could dump any pod of the node.
    agent = make_agent(metrics_identities="system:serviceaccount:default:not-the-operator")
    scraper = {"Authorization": f"Bearer {other_token}"}
    metrics = httpx.get(f"{agent.url}/metrics", headers=scraper)
    assert metrics.status_code == 200, metrics.text
    assert "ckpt_agent_jobs_finished_total" in metrics.text
    for method, path in PROTECTED:
        if path == "/metrics":
            continue
        response = httpx.request(method, f"{agent.url}{path}", json={}, headers=scraper)
        _error(response, 403, "forbidden")
    operator = httpx.get(f"{agent.url}/metrics",
                         headers={"Authorization": f"Bearer {operator_token}"})
    assert operator.status_code == 200


def test_cluster_admin_is_not_the_operator(agent: ManagedProcess, kube: Cluster) -> None:
    # Cluster-admin rights do not make a caller the operator: only listed identities pass.
    kube.service_account_token("default", "a-cluster-admin")  # creates the account
    token = token_for(kube, "default", "a-cluster-admin")  # the agents' audience
    kube.kubectl(
        "create",
        "clusterrolebinding",
        "a-cluster-admin",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:a-cluster-admin",
        check=False,
    )
    assert (
        kube.kubectl(
            "auth", "can-i", "*", "*", "--as=system:serviceaccount:default:a-cluster-admin"
        ).stdout.strip()
        == "yes"
    )
    response = httpx.get(f"{agent.url}/v1/info", headers={"Authorization": f"Bearer {token}"})
    _error(response, 403, "forbidden")


def test_token_is_never_logged(
    agent: ManagedProcess, operator_token: str, other_token: str
) -> None:
    for token in (operator_token, other_token, "Bearer not-a-token"):
        httpx.get(f"{agent.url}/v1/info", headers={"Authorization": f"Bearer {token}"})
    log = agent.log_tail(1_000_000)
    assert operator_token not in log
    assert other_token not in log


def test_info_describes_the_node(client: httpx.Client) -> None:
    response = client.get("/v1/info")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["node"] == "test-node"
    assert "runc" in info["runtimes"]
    assert int(info["criu_version"].split(".")[0]) >= 4
    assert info["platform"].startswith("linux/")
    if not info["cuda_checkpoint"]:
        assert info["gpus"] == [] or info["driver_version"] is not None


def test_validation_error_names_the_field(client: httpx.Client) -> None:
    body = {
        "checkpoint_id": "../escape",
        "namespace": "default",
        "pod": "p",
        "containers": [{"name": "app", "container_id": "abc"}],
    }
    message = _error(client.post("/v1/checkpoints", json=body), 422, "validation_error")
    assert "checkpoint_id" in message

    body = {"checkpoint_id": "ok", "namespace": "default", "pod": "p", "containers": []}
    message = _error(client.post("/v1/checkpoints", json=body), 422, "validation_error")
    assert "containers" in message

    body = {"restore_id": "r-1", "namespace": "default", "pod_name": "p",
            "source": "file:///var/lib/ckpt/archives/default/x.tar.zst", "checksum": "md5:00"}
    response = client.post("/v1/restores", json=body)
    assert "checksum" in _error(response, 422, "validation_error")
    details = response.json()["details"]
    assert details[0]["field"] == "checksum"

    response = client.post(
        "/v1/checkpoints", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(response, 422, "validation_error")


def test_unknown_jobs_and_routes_are_json_404(client: httpx.Client) -> None:
    assert "nope" in _error(client.get("/v1/checkpoints/nope"), 404, "not_found")
    _error(client.get("/v1/restores/nope"), 404, "not_found")
    _error(client.get("/v1/nothing-here"), 404, "not_found")


def test_gpu_required_is_refused_exactly_where_there_is_no_gpu(client: httpx.Client) -> None:
    body = {
        "checkpoint_id": "gpu-required",
        "namespace": "default",
        "pod": "p",
        "containers": [{"name": "app", "container_id": "abc"}],
        "gpu": "required",
    }
    response = client.post("/v1/checkpoints", json=body)
    if client.get("/v1/info").json()["cuda_checkpoint"]:
        # A GPU node takes the job (it then fails on the made-up container, not on the GPU).
        assert response.status_code == 202, response.text
        return
    assert "gpu: required" in _error(response, 422, "gpu_unavailable")
    # Refused up front: no job exists for it.
    _error(client.get("/v1/checkpoints/gpu-required"), 404, "not_found")


def test_metrics_exposes_job_counters(client: httpx.Client) -> None:
    body = {
        "checkpoint_id": "metrics-missing-container",
        "namespace": "default",
        "pod": "p",
        "containers": [{"name": "app", "container_id": "no-such-container"}],
    }
    assert client.post("/v1/checkpoints", json=body).status_code == 202
    job = _finished(client, "metrics-missing-container")
    assert job["state"] == "failed", job
    text = client.get("/metrics").text
    assert 'ckpt_agent_jobs{kind="checkpoint",state="failed"} 1.0' in text
    assert 'ckpt_agent_jobs_finished_total{kind="checkpoint",state="failed"} 1.0' in text
    assert "ckpt_agent_phase_duration_seconds_bucket" in text
    assert "ckpt_agent_archive_bytes_written_total" in text


def _finished(client: httpx.Client, checkpoint_id: str, within: float = 60.0) -> dict[str, Any]:
    """The job once it ended, following it with the agent's long poll (each GET returns as
    soon as the phase differs from the one we saw), so no sleeps or iteration counts."""
    deadline = time.monotonic() + within
    job: dict[str, Any] = client.get(f"/v1/checkpoints/{checkpoint_id}").json()
    while job["state"] == "running":
        assert time.monotonic() < deadline, f"job still running after {within} s: {job}"
        job = client.get(
            f"/v1/checkpoints/{checkpoint_id}",
            params={"wait": 10, "phase": job["phase"]},
            timeout=30,
        ).json()
    return job


def test_agent_over_tls_as_the_operator_calls_it(
    agent_env: dict[str, str], tmp_path: Path, operator_token: str
) -> None:
    # A self-signed certificate for the loopback address, as a cluster's CA would issue one.
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ckpt-agent",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    env = {
        **agent_env,
        "CKPT_AGENT_HOST": "127.0.0.1",
        "CKPT_AGENT_PORT": str(port),
        "CKPT_AGENT_TLS_CERT_FILE": str(cert),
        "CKPT_AGENT_TLS_KEY_FILE": str(key),
    }
    server = ManagedProcess(
        "agent",
        ["agent", "serve"],
        env=env,
        url=f"https://127.0.0.1:{port}",
        log_path=tmp_path / "agent-tls.log",
        verify=ssl.create_default_context(cafile=str(cert)),
    )
    token_file = tmp_path / "token"
    token_file.write_text(operator_token)
    with server:
        pod = AgentPod("agent", "ckpt-system", "test-node", "127.0.0.1", port, False, True)
        with pytest.raises(NotFound) as unknown:
            asyncio.run(_job_over_https(token_file, cert, pod))
        # Through TLS, authenticated as the operator: the agent itself answered.
        assert unknown.value.status == 404
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz")  # not trusted without the CA


async def _job_over_https(token_file: Path, ca: Path, pod: AgentPod) -> None:
    agents = AgentClient(token_file, scheme="https", ca_file=ca)
    try:
        await agents.checkpoint_job(pod, "no-such-job")
    finally:
        await agents.aclose()
