"""The user verbs of `ckpt` in-process, against fakes of the resource clients that answer
with the camelCase bodies the apiserver returns: the statuses go through the operator's
status models, so what the commands print and decide comes from typed fields."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ckpt.apis.restore import RestoreSpec, RestoreStatus
from ckpt.cli import app
from ckpt.user import resources, restore
from ckpt.user.resources import UserError, checkpoint_status, read_status

CREATED = "2026-01-01T00:00:00Z"
READY = {
    "phase": "Ready",
    "message": "archived",
    "checkpointId": "7f0c",
    "nodeName": "node-a",
    "agent": "agent-x",
    "gpu": "none",
    "platform": "amd64",
    "size": "1.5 MiB",
    "sizeBytes": 1572864,
    "checksum": "sha256:abc123",
    "restorePath": "local://default/7f0c.tar",
    "apiStatus": "ready",
    "timings": {"freeze": 1, "gpu": 0, "dump": 20, "store": 5, "total": 26},
    "conditions": [
        {"type": "Dumped", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"}
    ],
}


class FakeCheckpoints:
    """Serves one Checkpoint whose status moves through `statuses`, one per read."""

    def __init__(self, statuses: list[dict[str, Any] | None], items: list[Any]) -> None:
        self.statuses = iter(statuses)
        self.last: dict[str, Any] | None = None
        self.items = items
        self.created: list[tuple[str, str, Any]] = []

    def create(self, namespace: str, name: str, spec: Any) -> dict[str, Any]:
        self.created.append((namespace, name, spec))
        return {}

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.last = next(self.statuses, self.last)
        body: dict[str, Any] = {"metadata": {"namespace": namespace, "name": name}}
        if self.last is not None:
            body["status"] = self.last
        return body

    def status(self, namespace: str, name: str) -> Any:
        return checkpoint_status(self.get(namespace, name))

    def list(self, namespace: str | None) -> list[Any]:
        return self.items

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}}


class FakeRestores:
    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = iter(statuses)
        self.created: list[RestoreSpec] = []
        self.deleted_pods: list[str] = []

    def create(self, namespace: str, name: str, spec: RestoreSpec) -> dict[str, Any]:
        self.created.append(spec)
        return {}

    def status(self, namespace: str, name: str) -> RestoreStatus:
        body = {"metadata": {"namespace": namespace, "name": name}, "status": next(self.statuses)}
        return read_status(RestoreStatus, body, "restore")

    def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted_pods.append(name)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The commands import their clients when they run, so patching the modules is enough."""
    made: dict[str, Any] = {}
    monkeypatch.setattr(resources, "api_client", lambda *a: object())
    monkeypatch.setattr(resources, "Checkpoints", lambda api: made["checkpoints"])
    monkeypatch.setattr(restore, "Restores", lambda api: made["restores"])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("CKPT_API_URL", raising=False)
    yield made


def _item(name: str, status: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": name, "creationTimestamp": CREATED},
        "spec": {"podName": "web"},
    }
    if status is not None:
        item["status"] = status
    return item


def test_checkpoint_follows_the_typed_status_to_ready_and_prints_its_fields(
    fakes: dict[str, Any],
) -> None:
    fakes["checkpoints"] = FakeCheckpoints([None, {"phase": "Checkpointing"}, READY], [])
    result = CliRunner().invoke(app, ["checkpoint", "web", "--name", "c1"])
    assert result.exit_code == 0, result.output
    assert "checkpoint.ckpt.dev/c1 created" in result.stderr
    for shown in ("Ready", "7f0c", "node-a / agent-x", "1.5 MiB (1572864 bytes)",
                  "sha256:abc123", "freeze 1  gpu 0  dump 20  store 5  total 26"):
        assert shown in result.stdout
    assert "reason" not in result.stdout


def test_checkpoint_that_fails_exits_1_with_the_status_message(fakes: dict[str, Any]) -> None:
    fakes["checkpoints"] = FakeCheckpoints([{"phase": "Failed", "message": "CRIU said no"}], [])
    result = CliRunner().invoke(app, ["checkpoint", "web", "--name", "c2"])
    assert result.exit_code == 1
    assert "reason" in result.stdout and "CRIU said no" in result.stdout
    assert "checkpoint did not become Ready: CRIU said no" in result.stderr


def test_a_status_the_model_refuses_is_a_user_error_not_a_traceback(
    fakes: dict[str, Any],
) -> None:
    fakes["checkpoints"] = FakeCheckpoints([{"phase": "Exploded"}], [])
    result = CliRunner().invoke(app, ["checkpoint", "web", "--name", "c3"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot read the status of checkpoint default/c3" in result.stderr
    with pytest.raises(UserError, match="same version"):
        checkpoint_status({"status": {"sizeBytes": "many"}})


def test_list_reads_each_status_and_leaves_the_phase_empty_before_the_operator_wrote_one(
    fakes: dict[str, Any],
) -> None:
    fakes["checkpoints"] = FakeCheckpoints([], [_item("fresh", None), _item("done", READY)])
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["done"][2:8] == ["Ready", "web", "node-a", "none", "1.5", "MiB"]
    assert rows["done"][8] == "ready"  # the status's apiStatus when the API is not joined
    assert rows["fresh"][2] == "web"  # no phase, node, gpu, size or API status yet


def test_restore_and_migrate_decide_on_the_restore_status(fakes: dict[str, Any]) -> None:
    running = {"phase": "Running", "podName": "web-moved", "nodeName": "node-b",
               "timings": {"fetch": 3, "verify": 1, "extract": 2, "restore": 9, "total": 15}}
    fakes["checkpoints"] = FakeCheckpoints([READY], [])
    fakes["restores"] = FakeRestores([{"phase": "Staging"}, running])
    result = CliRunner().invoke(app, ["migrate", "web", "--to", "node-b"])
    assert result.exit_code == 0, result.output
    assert "moved default/web to node node-b as pod web-moved" in result.stdout
    assert "fetch 3  verify 1  extract 2  restore 9  total 15" in result.stdout
    assert fakes["restores"].deleted_pods == ["web"]
    assert fakes["restores"].created[0].node_name == "node-b"

    fakes["restores"] = FakeRestores([{"phase": "Failed", "message": "no such node"}])
    result = CliRunner().invoke(app, ["restore", "c1", "--node", "node-z"])
    assert result.exit_code == 1
    assert "restore did not reach Running: no such node" in result.stderr
    assert "describe restore" in result.stderr


@pytest.mark.slow
def test_an_unreachable_cluster_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # A port nothing listens on: every user verb ends with what to check, exit status 1.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
    }))
    for verb in (["list"], ["policy", "status"], ["checkpoint", "web"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ckpt", *verb], capture_output=True, text=True, timeout=120,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=False,
        )
        assert proc.returncode == 1, (verb, proc.stderr)
        assert proc.stderr.startswith("error: cannot reach the cluster"), (verb, proc.stderr)
        assert "Traceback" not in proc.stderr
