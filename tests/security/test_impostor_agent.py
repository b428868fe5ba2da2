"""An impostor agent next to the real one (issue 13, findings 1 and 6), on the local stack:
the real operator, agent and API processes with deploy/'s RBAC.

Before: the operator indexed pods cluster-wide by label, preferred names in order (a pod
named `aaa-...` won; `agent-kind: gpu` won GPU work) and sent its ServiceAccount token (the
apiserver's audience) over plain HTTP to whichever pod it picked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ckpt.operator.models import GROUP, PLURAL, VERSION
from harness.containers import Launcher, Runc
from harness.controlplane import Cluster
from harness.stack import AGENT_LABELS, SYSTEM_NAMESPACE, LocalStack
from harness.tools import criu_binary

pytestmark = pytest.mark.e2e


class Recorder(ThreadingHTTPServer):
    """Answers every request 200 and keeps what it was sent (method, path, headers), and
    counts connections: a TLS client never gets as far as a request to a plain server."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    def _record(self) -> None:
        assert isinstance(self.server, Recorder)
        self.server.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers)}
        )
        body = b'{"checkpoint_id":"x","state":"running","phase":"dumping"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _record

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stack(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("impostor-stack")
    runc = Runc(root=workdir / "runc", criu=criu_binary())
    with LocalStack(kube, workdir, runc) as running:
        yield running
        for cid in runc.list_ids():
            runc.run("delete", "--force", cid, check=False)


@pytest.fixture
def impostor() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _impostor_pod(
    kube: Cluster, namespace: str, name: str, node: str, port: int, *,
    owner: dict[str, Any] | None = None, service_account: str | None = None,
) -> None:
    kube.ensure_namespace(namespace)
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**AGENT_LABELS, "ckpt.dev/agent-kind": "gpu"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "agent", "image": "ghcr.io/ckpt-dev/ckpt-agent:0.1.0",
            "ports": [{"name": "agent", "containerPort": port}],
        }]},
    }
    if owner:
        pod["metadata"]["ownerReferences"] = [owner]
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    kube.kubectl(
        "-n", namespace, "patch", "pod", name, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {"phase": "Running", "podIP": "127.0.0.1",
                               "podIPs": [{"ip": "127.0.0.1"}],
                               "conditions": [{"type": "Ready", "status": "True"}]}}),
    )


def _wait_phase(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        status = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        ).get("status") or {}
        if status.get("phase") in {"Ready", "Failed"}:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


def test_impostor_agents_get_no_request_and_no_token(
    stack: LocalStack, kube: Cluster, impostor: Recorder, tmp_path: Path
) -> None:
    port = impostor.server_address[1]
    namespace = "tenant-impostor"
    # The label in a tenant's namespace, and lookalikes in the operator's own namespace:
    # owned by a DaemonSet of another name, and owned by the real one but not running as
    # the agent ServiceAccount. All on the node, Ready, sorting before the real agent.
    _impostor_pod(kube, namespace, "aaa-agent", stack.node, port,
                  owner={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ckpt-agent",
                         "uid": "0000", "controller": True},
                  service_account="ckpt-agent")
    real = json.loads(kube.kubectl(
        "-n", SYSTEM_NAMESPACE, "get", "daemonset", "ckpt-agent-gpu", "-o", "json",
        check=False,
    ).stdout or "{}").get("metadata", {})
    _impostor_pod(kube, SYSTEM_NAMESPACE, "aaa-lookalike", stack.node, port,
                  owner={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ckpt-agnet",
                         "uid": "0001", "controller": True},
                  service_account="ckpt-agent")
    _impostor_pod(kube, SYSTEM_NAMESPACE, "aaa-wrong-account", stack.node, port,
                  owner={"apiVersion": "apps/v1", "kind": "DaemonSet",
                         "name": "ckpt-agent-gpu", "uid": real.get("uid", "0002"),
                         "controller": True},
                  service_account="default")
    try:
        with Launcher(tmp_path / "bundles", stack.runc) as launcher:
            box = launcher.start()
            stack.register_pod("default", "victim-web", {"app": box})
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Checkpoint",
                    "metadata": {"name": "victim-web-1"}, "spec": {"podName": "victim-web"}}
            with kube.api_client() as api:
                custom = client.CustomObjectsApi(api)
                custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
                status = _wait_phase(custom, "default", "victim-web-1")
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, "default", PLURAL, "victim-web-1"
                )
        assert status["phase"] == "Ready", status
        assert status["agent"] == f"{SYSTEM_NAMESPACE}/ckpt-agent-{stack.node}"
        assert impostor.seen == [], impostor.seen
        assert impostor.connections == 0
    finally:
        for ns, name in ((namespace, "aaa-agent"), (SYSTEM_NAMESPACE, "aaa-lookalike"),
                         (SYSTEM_NAMESPACE, "aaa-wrong-account")):
            kube.kubectl("-n", ns, "delete", "pod", name, "--ignore-not-found",
                         "--grace-period=0", "--force")
