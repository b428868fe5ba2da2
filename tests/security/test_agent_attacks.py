"""Attacks on the node agent from inside the cluster (issue 13, findings 2, 5, 6, 10).

Each test names what the agent did before: the assertion that fails on that behaviour.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from harness.containers import Launcher
from harness.controlplane import Cluster
from harness.processes import ManagedProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _post_large_body(url: str, size: int, headers: dict[str, str]) -> tuple[int, bytes]:
    """POSTs `size` bytes of JSON-looking data on a raw socket, stopping as soon as the agent
    answers (it must not wait for the body); returns the status and the answer's bytes."""
    host, port = url.removeprefix("http://").split(":")
    head = [
        "POST /v1/checkpoints HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
        f"Content-Length: {size}", *(f"{k}: {v}" for k, v in headers.items()), "", "",
    ]
    chunk = b'{"a":"' + b"x" * (MiB - 8) + b'",'
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode())
        sock.setblocking(False)
        sent, answer = 0, b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            if b"\r\n\r\n" in answer:
                break
            if sent < size:
                try:
                    sent += sock.send(chunk[: min(len(chunk), size - sent)])
                except BlockingIOError:
                    time.sleep(0.01)  # the agent stopped reading: that is the point
                except (BrokenPipeError, ConnectionResetError):
                    continue
            else:
                time.sleep(0.01)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


def test_unauthenticated_100mb_body_is_refused_before_it_is_read(agent: ManagedProcess) -> None:
    # Before: FastAPI parsed the body, then the route's dependency answered 401; a 150 MB
    # body took the agent from 70 MB to 531 MB of RSS first.
    before = _rss_bytes(agent.pid)
    status, answer = _post_large_body(agent.url, 100 * MiB, {})
    after = _rss_bytes(agent.pid)
    assert status == 401, answer[:500]
    assert b'"code":"unauthenticated"' in answer
    assert after - before < 20 * MiB, f"RSS grew by {(after - before) / MiB:.0f} MiB"
    # And the agent still serves.
    assert httpx.get(f"{agent.url}/healthz").status_code == 200


def test_a_forged_token_with_a_large_body_gets_401_too(agent: ManagedProcess) -> None:
    before = _rss_bytes(agent.pid)
    status, _ = _post_large_body(agent.url, 100 * MiB, {"Authorization": "Bearer forged"})
    assert status == 401
    assert _rss_bytes(agent.pid) - before < 20 * MiB


def test_authenticated_oversized_body_is_413(agent: ManagedProcess, operator_token: str) -> None:
    # Before: no limit at all, for the operator's token as for anyone's.
    status, answer = _post_large_body(
        agent.url, 8 * MiB, {"Authorization": f"Bearer {operator_token}"}
    )
    assert status == 413, answer[:500]
    chunked = httpx.post(
        f"{agent.url}/v1/checkpoints",
        headers={"Authorization": f"Bearer {operator_token}",
                 "Content-Type": "application/json"},
        content=iter([b'{"x":"' + b"y" * MiB] * 3 + [b'"}']),  # no Content-Length: chunked
        timeout=30,
    )
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["code"] == "too_large"


def test_token_of_the_default_audience_is_refused(agent: ManagedProcess, kube: Cluster) -> None:
    # The operator's ServiceAccount token as every pod of the account holds it, valid for
    # the apiserver. Before: the agent reviewed tokens without an audience and obeyed it.
    token = kube.service_account_token("ckpt-system", "ckpt-operator")
    response = httpx.get(f"{agent.url}/v1/info", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"


def test_token_of_the_agent_audience_is_accepted(
    agent: ManagedProcess, operator_token: str
) -> None:
    response = httpx.get(
        f"{agent.url}/v1/info", headers={"Authorization": f"Bearer {operator_token}"}
    )
    assert response.status_code == 200, response.text


def _job(agent: ManagedProcess, token: str, checkpoint_id: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(
            f"{agent.url}/v1/checkpoints/{checkpoint_id}", headers=headers, timeout=30
        ).json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_forged_container_id_is_refused(
    agent: ManagedProcess, operator_token: str, launcher: Launcher, tmp_path: Path
) -> None:
    # A container of pod victims/db; the request names pod default/attacker and the
    # victim's container id. Before: runc resolved the id alone and dumped the victim.
    victim = launcher.start()
    victim.record_pod("victims", "db", "uid-of-db", "postgres")
    body = {
        "checkpoint_id": "forged", "namespace": "default", "pod": "attacker",
        "pod_uid": "uid-of-attacker",
        "containers": [{"name": "app", "container_id": victim.id}],
    }
    headers = {"Authorization": f"Bearer {operator_token}"}
    assert httpx.post(f"{agent.url}/v1/checkpoints", json=body, headers=headers).status_code \
        == 202
    job = _job(agent, operator_token, "forged")
    assert job["state"] == "failed", job
    assert "is not container 'app' of pod default/attacker" in job["error"]
    # Nothing about the victim's pod leaks into the answer, nothing was written, and the
    # victim never stopped.
    assert "victims" not in job["error"] and "uid-of-db" not in job["error"]
    archives = tmp_path / "archives"
    assert not archives.exists() or not any(archives.rglob("*.tar*"))
    assert victim.status() == "running"
    # The right pod, uid and container name pass the same check.
    body |= {"checkpoint_id": "genuine", "namespace": "victims", "pod": "db",
             "pod_uid": "uid-of-db",
             "containers": [{"name": "postgres", "container_id": victim.id}]}
    assert httpx.post(f"{agent.url}/v1/checkpoints", json=body, headers=headers).status_code \
        == 202
    assert _job(agent, operator_token, "genuine")["state"] == "succeeded"


def test_request_without_the_pods_uid_is_refused(
    agent: ManagedProcess, operator_token: str, launcher: Launcher
) -> None:
    # The uid tells a pod from a later pod of the same name; a request must carry it.
    victim = launcher.start()
    victim.record_pod("victims", "db", "uid-of-db", "postgres")
    body = {
        "checkpoint_id": "no-uid", "namespace": "victims", "pod": "db",
        "containers": [{"name": "postgres", "container_id": victim.id}],
    }
    headers = {"Authorization": f"Bearer {operator_token}"}
    httpx.post(f"{agent.url}/v1/checkpoints", json=body, headers=headers)
    assert _job(agent, operator_token, "no-uid")["state"] == "failed"


def test_restore_of_a_host_path_is_refused(
    agent: ManagedProcess, operator_token: str, tmp_path: Path
) -> None:
    # Before: `restore_path` was any host file and the failed job's error carried the
    # file's sha256 (and /dev/zero was hashed until the job timed out); `bundle` was any
    # folder holding a caller-written config.json.
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"root:$6$not-for-you\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    headers = {"Authorization": f"Bearer {operator_token}"}
    answers: list[str] = []
    for source in (str(secret), secret.as_uri(), "/dev/zero"):
        body = {
            "restore_id": f"r-{len(answers)}", "namespace": "default", "pod_name": "p",
            "source": source, "checksum": "sha256:" + "0" * 64,
        }
        response = httpx.post(f"{agent.url}/v1/restores", json=body, headers=headers,
                              timeout=30)
        answers.append(response.text)
        if response.status_code == 202:
            job_url = f"{agent.url}/v1/restores/{body['restore_id']}"
            deadline = time.monotonic() + 30
            job = response.json()
            while job["state"] == "running":
                assert time.monotonic() < deadline, f"{source} still being read: {job}"
                time.sleep(0.1)
                job = httpx.get(job_url, headers=headers).json()
            answers.append(json.dumps(job))
            assert job["state"] == "failed", job
        else:
            assert 400 <= response.status_code < 500, response.text
    assert not any(digest in a for a in answers), answers
    # The bare-container restore that took these is gone: its body is not a staging request.
    legacy = {"restore_path": str(secret), "checksum": "sha256:" + "0" * 64,
              "container_id": "x", "bundle": str(tmp_path)}
    response = httpx.post(f"{agent.url}/v1/restores", json=legacy, headers=headers)
    assert response.status_code == 422, response.text


def test_job_errors_reveal_no_host_paths(
    agent: ManagedProcess, operator_token: str, runc_root: Path
) -> None:
    # Before: "no runc container X under <state root>", runc's stderr and the tail of CRIU's
    # log went into the job's error, and from there into the Checkpoint's status and Events
    # that the namespace reads.
    headers = {"Authorization": f"Bearer {operator_token}"}
    body = {"checkpoint_id": "ghost", "namespace": "default", "pod": "counter",
            "pod_uid": "u-1", "containers": [{"name": "app", "container_id": "no-such-id"}]}
    httpx.post(f"{agent.url}/v1/checkpoints", json=body, headers=headers)
    job = _job(agent, operator_token, "ghost")
    assert job["state"] == "failed", job
    assert "no container no-such-id on this node" in job["error"]
    assert str(runc_root) not in job["error"], job["error"]
