"""`kubectl ckpt` in-process and through the real kubectl binary, without a cluster: the
kubeconfig files are real (the namespace comes from their contexts, as kubectl takes it),
the resource clients are small fakes answering with the camelCase bodies the apiserver
returns, as in test_user_cli. What is checked: argument handling, the namespace each verb
works in, the shape of every -o format, the exit statuses, the completion answers and
scripts, and that kubectl finds the plugin on PATH."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from ckpt.user import completion, resources, restore
from ckpt.user.kubectl import app
from ckpt.user.resources import UserError
from harness.describe_text import sections

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
CREATED = "2026-01-01T00:00:00Z"
READY = {
    "phase": "Ready",
    "message": "archived",
    "checkpointId": "5a4c3f2e-0000-4000-8000-000000000001",
    "nodeName": "node-a",
    "agent": "agent-x",
    "gpu": "none",
    "platform": "amd64",
    "size": "1.5 MiB",
    "sizeBytes": 1572864,
    "checksum": "sha256:abc123",
    "restorePath": "s3://archives/team-a/7f0c.tar.zst",
    "storageLocation": "s3-archives",
    "apiStatus": "possibly_uploaded",
    "startedAt": "2026-01-01T00:00:01Z",
    "completedAt": "2026-01-01T00:00:04Z",
    "timings": {"freeze": 1, "gpu": 0, "dump": 20, "store": 5, "total": 26},
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "AgentFound",
         "lastTransitionTime": "2026-01-01T00:00:01Z"},
        {"type": "Dumped", "status": "True", "reason": "Dumped", "message": "2 containers",
         "lastTransitionTime": "2026-01-01T00:00:03Z"},
    ],
}
RUNNING = {
    "phase": "Running", "podName": "web-again", "nodeName": "node-b", "agent": "agent-y",
    "checkpointId": READY["checkpointId"], "staged": False,
    "timings": {"fetch": 3, "verify": 1, "extract": 2, "restore": 9, "total": 15},
}
KINDS = {"checkpoints": "Checkpoint", "restores": "Restore"}


class FakeCluster:
    """Checkpoints, Restores and Events by namespace and name. A resource whose statuses
    are scripted moves to the next one at each read, as the operator would move it."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.scripts: dict[tuple[str, str, str], Iterator[dict[str, Any]]] = {}
        self.events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.namespaces_listed: list[str | None] = []
        self.deleted_pods: list[str] = []
        self.pods: set[tuple[str, str]] = set()
        self.events_forbidden = False

    def add(self, plural: str, namespace: str, name: str, spec: dict[str, Any],
            status: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "ckpt.dev/v1alpha1",
            "kind": KINDS[plural],
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "creationTimestamp": CREATED},
            "spec": spec,
        }
        if status is not None:
            body["status"] = status
        self.objects[(plural, namespace, name)] = body
        return body

    def script(self, plural: str, namespace: str, name: str,
               statuses: list[dict[str, Any]]) -> None:
        self.scripts[(plural, namespace, name)] = iter(statuses)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        key = (plural, namespace, name)
        if key not in self.objects:
            raise UserError(
                f"could not read {KINDS[plural].lower()} {namespace}/{name}: not found "
                "(not found; is ckpt installed (kubectl apply -k deploy/) and the name right?)"
            )
        following = next(self.scripts.get(key, iter(())), None)
        if following is not None:
            self.objects[key]["status"] = following
        return self.objects[key]

    def list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return [body for (kind, ns, _), body in sorted(self.objects.items())
                if kind == plural and namespace in (None, ns)]


class FakeCheckpoints:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def create(self, namespace: str, name: str, spec: Any) -> dict[str, Any]:
        return self.cluster.add("checkpoints", namespace, name,
                                spec.model_dump(mode="json", by_alias=True, exclude_none=True))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.cluster.get("checkpoints", namespace, name)

    def status(self, namespace: str, name: str) -> Any:
        return resources.checkpoint_status(self.get(namespace, name))

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        self.cluster.namespaces_listed.append(namespace)
        return self.cluster.list("checkpoints", namespace)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.cluster.pods:
            raise UserError(f"could not read pod {namespace}/{name}: pods {name!r} not found")
        return {"metadata": {"name": name, "namespace": namespace}}


class FakeRestores:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def create(self, namespace: str, name: str, spec: Any) -> dict[str, Any]:
        return self.cluster.add("restores", namespace, name,
                                spec.model_dump(mode="json", by_alias=True, exclude_none=True))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.cluster.get("restores", namespace, name)

    def status(self, namespace: str, name: str) -> Any:
        from ckpt.apis.restore import RestoreStatus

        return resources.read_status(RestoreStatus, self.get(namespace, name), "restore")

    def list(self, namespace: str) -> list[dict[str, Any]]:
        return self.cluster.list("restores", namespace)

    def delete_pod(self, namespace: str, name: str) -> None:
        self.cluster.deleted_pods.append(name)


class FakeEvents:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def about(self, resource: dict[str, Any]) -> list[dict[str, Any]]:
        if self.cluster.events_forbidden:
            raise UserError("could not list the events of team-a/c1: events is forbidden "
                            "(your user lacks permission; ask a cluster admin)")
        return self.cluster.events.get((resource["kind"], resource["metadata"]["name"]), [])


def _kubeconfig(path: Path, contexts: dict[str, str | None], current: str | None) -> Path:
    """A kubeconfig whose contexts (name: namespace) point at a port nothing listens on:
    loading it is real, and any request fails at once."""
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "someone", "user": {"token": "t"}}],
        "contexts": [
            {"name": name, "context": {"cluster": "nowhere", "user": "someone",
                                       **({"namespace": ns} if ns else {})}}
            for name, ns in contexts.items()
        ],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _kubeconfig(tmp_path / "config", {"team": "team-a", "bare": None}, "team")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def cluster(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The commands import their clients when they run, so patching the modules is enough;
    the kubeconfig is loaded for real."""
    fake = FakeCluster()
    monkeypatch.setattr(resources, "Checkpoints", lambda api: FakeCheckpoints(fake))
    monkeypatch.setattr(resources, "Events", lambda api: FakeEvents(fake))
    monkeypatch.setattr(restore, "Restores", lambda api: FakeRestores(fake))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("CKPT_API_URL", raising=False)
    monkeypatch.delenv("CKPT_API_TOKEN", raising=False)
    return fake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _path_with_venv() -> dict[str, str]:
    """The environment kubectl finds the plugin in: this venv's bin first on PATH, as after
    `pip install ckpt` into it."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# Namespace, kubeconfig and context, as kubectl resolves them.


def test_the_namespace_is_the_flag_else_the_contexts_else_default(cluster: FakeCluster) -> None:
    assert run("ls").exit_code == 0
    assert run("ls", "--context", "bare").exit_code == 0
    assert run("ls", "-n", "other").exit_code == 0
    assert run("ls", "--context", "bare", "--namespace", "x").exit_code == 0
    assert run("ls", "-A", "-n", "ignored").exit_code == 0
    assert cluster.namespaces_listed == ["team-a", "default", "other", "x", None]


def test_kubeconfig_flag_and_a_merged_kubeconfig_list(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _kubeconfig(tmp_path / "other", {"elsewhere": "team-b"}, "elsewhere")
    assert run("ls", "--kubeconfig", str(other)).exit_code == 0
    # KUBECONFIG as kubectl reads it: files merged, a context from any of them.
    first = _kubeconfig(tmp_path / "first", {"team": "team-a"}, "team")
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{other}")
    assert run("ls", "--context", "elsewhere").exit_code == 0
    assert cluster.namespaces_listed == ["team-b", "team-b"]


def test_kubeconfig_problems_say_what_to_do(
    cluster: FakeCluster, tmp_path: Path, kubeconfig: Path
) -> None:
    missing = run("ls", "--context", "nope")
    assert missing.exit_code == 1
    assert f"error: context 'nope' is not in the kubeconfig {kubeconfig}" in missing.stderr
    assert "kubectl config get-contexts" in missing.stderr

    absent = run("describe", "checkpoint", "c1", "--kubeconfig", str(tmp_path / "absent"))
    assert absent.exit_code == 1
    assert "no kubeconfig at" in absent.stderr and "--kubeconfig" in absent.stderr

    no_current = _kubeconfig(tmp_path / "no-current", {"team": "team-a"}, None)
    result = run("checkpoint", "web", "--kubeconfig", str(no_current))
    assert result.exit_code == 1
    assert "no current context; pass --context" in result.stderr
    assert run("checkpoint", "web", "--kubeconfig", str(no_current), "--context", "team",
               "--name", "c1").exit_code == 0
    assert ("checkpoints", "team-a", "c1") in cluster.objects
    assert cluster.namespaces_listed == []  # nothing was listed on the way


def test_an_unreachable_cluster_is_an_error_not_a_traceback(kubeconfig: Path) -> None:
    """The real clients against a port nothing listens on."""
    result = run("ls")
    assert result.exit_code == 1
    assert "error: cannot reach the cluster" in result.stderr
    assert "kubectl cluster-info" in result.stderr
    assert isinstance(result.exception, SystemExit)


# Usage and exit statuses.


@pytest.mark.parametrize("args", [
    ["ls", "--bogus"],
    ["frobnicate"],
    ["checkpoint"],
    ["ls", "-o", "xml"],
    ["checkpoint", "web", "-o", "wide"],  # a created resource is json, yaml or name
    ["completion", "fish"],
])
def test_usage_errors_exit_1_the_kubectl_way(cluster: FakeCluster, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    assert "' --help' for usage." not in result.stderr
    assert "See 'kubectl ckpt" in result.stderr and "--help' for usage." in result.stderr
    assert result.stdout == ""


def test_help_lists_the_verbs_and_each_verb_has_examples(cluster: FakeCluster) -> None:
    alone = run()
    assert alone.exit_code == 0  # as `kubectl` alone: help, not an error
    for verb in ("checkpoint", "restore", "migrate", "ls", "describe", "completion"):
        assert f"  {verb}  " in alone.stdout
        for flag in ("--help", "-h"):
            helped = run(verb, flag)
            assert helped.exit_code == 0
            examples = helped.stdout.split("Examples:")[1]
            assert "  # " in examples and "kubectl ckpt " in examples
    options = run("ls", "-h").stdout
    for option in ("--kubeconfig", "--context", "-n, --namespace", "-A, --all-namespaces",
                   "-o, --output"):
        assert option in options


def test_the_readme_uses_verbs_and_options_that_exist(cluster: FakeCluster) -> None:
    readme = (ROOT / "README.md").read_text()
    lines = re.findall(r"^kubectl ckpt (.*)$", readme, re.MULTILINE)
    assert len(lines) >= 5
    groups = get_command(app).commands
    for line in lines:
        verb, *words = shlex.split(line.split("#")[0])
        # A group's verb (policy status) has the options.
        command = [verb]
        if hasattr(groups[verb], "commands") and words:
            command.append(words.pop(0))
        helped = run(*command, "--help")
        assert helped.exit_code == 0, line
        for option in (word.split("=")[0] for word in words if word.startswith("-")):
            assert re.search(rf"(^|[ ,]){re.escape(option)}\b", helped.stdout, re.MULTILINE), (
                option, line
            )


# -o and the tables.


def _listed(cluster: FakeCluster) -> None:
    cluster.add("checkpoints", "team-a", "done", {"podName": "web"}, READY)
    cluster.add("checkpoints", "team-a", "fresh", {"podName": "web"})
    cluster.add("checkpoints", "team-b", "theirs", {"podName": "db"},
                {**READY, "message": "archived twice"})


def _rows(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    header, *lines = stdout.splitlines()
    rows = {}
    for line in lines:
        cells = line.split()
        rows[cells[header.split().index("NAME")]] = cells
    return header.split(), rows


def test_ls_table_and_wide(cluster: FakeCluster) -> None:
    _listed(cluster)
    result = run("ls")
    assert result.exit_code == 0, result.output
    header, rows = _rows(result.stdout)
    assert header == ["NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE"]
    assert set(rows) == {"done", "fresh"}
    assert rows["done"][:7] == ["done", "Ready", "web", "node-a", "none", "1.5MiB",
                                "possibly_uploaded"]
    # Before the operator writes a status: <none>, so the columns stay where they are.
    assert rows["fresh"][:7] == ["fresh", "<none>", "web", "<none>", "<none>", "<none>",
                                 "<none>"]
    assert rows["fresh"][7].endswith("d")  # AGE: days since CREATED

    wide = run("ls", "-A", "-o", "wide")
    header, rows = _rows(wide.stdout)
    assert header == ["NAMESPACE", "NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE",
                      "PLATFORM", "CHECKPOINT-ID", "ARCHIVE", "MESSAGE"]
    assert set(rows) == {"done", "fresh", "theirs"}
    assert rows["theirs"][0] == "team-b"
    assert rows["theirs"][9:] == ["amd64", READY["checkpointId"], READY["restorePath"],
                                  "archived", "twice"]


def test_ls_json_yaml_and_name(cluster: FakeCluster) -> None:
    _listed(cluster)
    document = json.loads(run("ls", "-o", "json").stdout)
    assert document["kind"] == "List" and document["apiVersion"] == "v1"
    assert [item["metadata"]["name"] for item in document["items"]] == ["done", "fresh"]
    assert all(item["kind"] == "Checkpoint" and item["apiVersion"] == "ckpt.dev/v1alpha1"
               for item in document["items"])
    assert document["items"][0]["status"] == READY
    assert "checkpointsApi" not in document["items"][0]  # no API given: nothing joined

    assert yaml.safe_load(run("ls", "-o", "yaml").stdout) == document
    # Two items sharing parts (here their timings) are each written in full: no YAML aliases.
    assert "&id" not in run("ls", "-A", "-o", "yaml").stdout
    names = run("ls", "-A", "-o", "name")
    assert names.stdout.splitlines() == [
        "checkpoint.ckpt.dev/done", "checkpoint.ckpt.dev/fresh", "checkpoint.ckpt.dev/theirs"
    ]


def test_ls_with_nothing_to_list(cluster: FakeCluster) -> None:
    empty = run("ls")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "No checkpoints found in the team-a namespace." in empty.stderr
    assert json.loads(run("ls", "-o", "json").stdout)["items"] == []
    assert "in any namespace" in run("ls", "-A").stderr


def test_ls_joins_the_checkpoints_api_where_a_token_is_given(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckpt.contract import checkpoints_client as api_client
    from ckpt.contract.checkpoints_api import Checkpoint

    asked: list[tuple[str, str, list[str]]] = []

    class FakeApi:
        def __init__(self, url: str, token: str, **tls: object) -> None:
            self.url, self.token = url, token

        def __enter__(self) -> FakeApi:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def list(self, ids: list[str]) -> list[Checkpoint]:
            asked.append((self.url, self.token, ids))
            return [Checkpoint(id=ids[0], status="ready", gpu="none", platform="linux/amd64",
                               checksum="sha256:abc123", name="team-a/done")]

    monkeypatch.setattr(api_client, "SyncCheckpointsClient", FakeApi)
    _listed(cluster)
    monkeypatch.setenv("CKPT_API_URL", "https://api.example")
    monkeypatch.setenv("CKPT_API_TOKEN", "secret")
    _, rows = _rows(run("ls").stdout)
    assert rows["done"][6] == "ready"  # the API's status, not the operator's last write
    document = json.loads(run("ls", "-o", "json").stdout)
    assert document["items"][0]["checkpointsApi"]["status"] == "ready"
    assert document["items"][0]["checkpointsApi"]["id"] == READY["checkpointId"]
    assert "checkpointsApi" not in document["items"][1]  # no id yet: not in the API
    assert asked[0] == ("https://api.example", "secret", [READY["checkpointId"]])


# The verbs that create resources.


def test_checkpoint_returns_at_once_unless_asked_to_wait(cluster: FakeCluster) -> None:
    result = run("checkpoint", "web", "--name", "c1", "-c", "app", "--stop")
    assert result.exit_code == 0, result.output
    assert result.stdout == "checkpoint.ckpt.dev/c1 created\n"
    created = cluster.objects[("checkpoints", "team-a", "c1")]
    assert created["spec"]["podName"] == "web" and created["spec"]["containers"] == ["app"]
    assert created["spec"]["leaveRunning"] is False

    generated = run("checkpoint", "web", "-n", "other", "-o", "name")
    (name,) = generated.stdout.splitlines()
    assert name.startswith("checkpoint.ckpt.dev/web-")
    assert ("checkpoints", "other", name.split("/")[1]) in cluster.objects
    assert "created" in generated.stderr  # with -o, stdout holds only the resource


def test_checkpoint_wait_follows_to_ready_and_prints_the_resource(cluster: FakeCluster) -> None:
    cluster.script("checkpoints", "team-a", "c1", [{"phase": "Checkpointing"}, READY])
    result = run("checkpoint", "web", "--name", "c1", "--wait")
    assert result.exit_code == 0, result.output
    assert "checkpoint.ckpt.dev/c1 created" in result.stdout
    for shown in ("Ready", "node-a / agent-x", "sha256:abc123", "dump 20"):
        assert shown in result.stdout

    cluster.script("checkpoints", "team-a", "c2", [{"phase": "Uploading"}, READY])
    as_json = run("checkpoint", "web", "--name", "c2", "--wait", "-o", "json")
    assert as_json.exit_code == 0
    resource = json.loads(as_json.stdout)
    assert resource["kind"] == "Checkpoint" and resource["status"]["phase"] == "Ready"

    cluster.script("checkpoints", "team-a", "c3", [READY])
    as_yaml = yaml.safe_load(run("checkpoint", "web", "--name", "c3", "--wait", "-o",
                                 "yaml").stdout)
    assert as_yaml["metadata"]["name"] == "c3" and as_yaml["status"]["checksum"]


def test_checkpoint_that_fails_exits_1_naming_the_next_step(cluster: FakeCluster) -> None:
    cluster.script("checkpoints", "team-a", "c2",
                   [{"phase": "Failed", "message": "CRIU said no"}])
    result = run("checkpoint", "web", "--name", "c2", "--wait", "-o", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"]["phase"] == "Failed"
    assert ("error: checkpoint did not become Ready: CRIU said no; see "
            "`kubectl ckpt describe checkpoint c2 -n team-a`") in result.stderr
    assert "Traceback" not in result.output


def test_restore_reads_the_checkpoint_first_and_waits_when_asked(cluster: FakeCluster) -> None:
    missing = run("restore", "nope")
    assert missing.exit_code == 1
    assert "error: could not read checkpoint team-a/nope: not found" in missing.stderr
    assert not [key for key in cluster.objects if key[0] == "restores"]

    cluster.add("checkpoints", "team-a", "c1", {"podName": "web"}, READY)
    started = run("restore", "c1", "--name", "back", "--node", "node-b", "-o", "yaml")
    assert started.exit_code == 0
    assert yaml.safe_load(started.stdout)["spec"] == {"checkpointName": "c1",
                                                      "nodeName": "node-b"}

    cluster.script("restores", "team-a", "again", [{"phase": "Staging"}, RUNNING])
    waited = run("restore", "c1", "--name", "again", "--pod-name", "web-again", "--wait")
    assert waited.exit_code == 0, waited.output
    assert "team-a/web-again" in waited.stdout and "fetch 3" in waited.stdout

    cluster.script("restores", "team-a", "lost", [{"phase": "Failed", "message": "no node"}])
    failed = run("restore", "c1", "--name", "lost", "--wait")
    assert failed.exit_code == 1
    assert ("restore did not reach Running: no node; see "
            "`kubectl ckpt describe restore lost -n team-a`") in failed.stderr


def test_migrate_moves_the_pod_or_keeps_it(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckpt.user import verbs

    monkeypatch.setattr(verbs.secrets, "token_hex", lambda n: "abc123")
    cluster.pods.add(("team-a", "web"))
    cluster.script("checkpoints", "team-a", "web-move-abc123", [READY])
    cluster.script("restores", "team-a", "web-move-abc123",
                   [{**RUNNING, "podName": "web-moved"}])
    moved = run("migrate", "web", "--to", "node-b")
    assert moved.exit_code == 0, moved.output
    assert "moved team-a/web to node node-b as pod web-moved" in moved.stdout
    assert cluster.deleted_pods == ["web"]
    spec = cluster.objects[("restores", "team-a", "web-move-abc123")]["spec"]
    assert spec == {"checkpointName": "web-move-abc123", "podName": "web-moved",
                    "nodeName": "node-b"}

    cluster.pods.add(("other", "db"))
    cluster.script("checkpoints", "other", "db-move-abc123",
                   [{"phase": "Failed", "message": "CRIU said no"}])
    kept = run("migrate", "db", "--to", "node-b", "-n", "other")
    assert kept.exit_code == 1
    assert "pod other/db is kept" in kept.stderr
    assert "kubectl ckpt describe checkpoint db-move-abc123 -n other" in kept.stderr
    assert cluster.deleted_pods == ["web"]

    ghost = run("migrate", "ghost", "--to", "node-b")
    assert ghost.exit_code == 1 and "pods 'ghost' not found" in ghost.stderr


# describe.


def _story(cluster: FakeCluster) -> None:
    cluster.add("checkpoints", "team-a", "c1",
                {"podName": "web", "gpu": "auto", "leaveRunning": True, "timeoutSeconds": 900,
                 "retainPolicy": "Delete"}, READY)
    cluster.add("restores", "team-a", "back", {"checkpointName": "c1", "podName": "web-again"},
                RUNNING)
    cluster.add("restores", "team-a", "unrelated", {"checkpointName": "c9"})
    cluster.events[("Checkpoint", "c1")] = [
        {"type": "Normal", "reason": "Uploaded", "message": "1.5 MiB stored",
         "lastTimestamp": "2026-01-01T00:00:04Z", "count": 1,
         "source": {"component": "kopf"}},
        {"type": "Warning", "reason": "AgentBusy", "message": "retrying",
         "firstTimestamp": "2026-01-01T00:00:01Z", "lastTimestamp": "2026-01-01T00:00:02Z",
         "count": 3, "source": {"component": "kopf"}},
    ]


def test_describe_checkpoint_tells_its_story(cluster: FakeCluster) -> None:
    _story(cluster)
    result = run("describe", "checkpoint", "c1")
    assert result.exit_code == 0, result.output
    text = result.stdout
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert [line.split(":")[0] for line in headings] == [
        "Name", "Namespace", "Kind", "Created", "Spec", "Status", "Timings", "Archive",
        "Conditions", "Restores", "Events",
    ]
    story = sections(text)
    assert story[""]["Kind"] == "Checkpoint" and story[""]["Namespace"] == "team-a"
    assert story["Spec"]["Retain Policy"] == "Delete" and story["Spec"]["Pod"] == "web"
    assert story["Status"]["Phase"] == "Ready"
    assert story["Status"]["Completed"] == "2026-01-01T00:00:04Z (took 3.0s)"
    assert story["Timings"] == {"Freeze": "1 ms", "GPU": "0 ms", "Dump": "20 ms",
                                "Store": "5 ms", "Total": "26 ms"}
    assert story["Archive"] == {
        "Location": "s3-archives", "Path": "s3://archives/team-a/7f0c.tar.zst",
        "Size": "1.5 MiB (1572864 bytes)", "Checksum": "sha256:abc123",
    }
    # The values line up, as in kubectl describe.
    spec = text.split("Spec:\n")[1].split("Status:")[0].splitlines()
    assert len({line.index(value) for line, value in zip(spec, story["Spec"].values(),
                                                          strict=True)}) == 1
    conditions = text.split("Conditions:\n")[1].split("Restores:")[0].splitlines()
    assert conditions[0].split() == ["Type", "Status", "Reason", "Age", "Message"]
    assert conditions[2].split()[:3] == ["Dumped", "True", "Dumped"]
    assert conditions[2].endswith("2 containers")
    restores = text.split("Restores:\n")[1].split("Events:")[0].splitlines()
    assert [row.split()[:4] for row in restores[1:]] == [["back", "Running", "web-again",
                                                          "node-b"]]
    events = text.split("Events:\n")[1].splitlines()
    assert events[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert events[1].split() == ["----", "------", "---", "----", "-------"]
    # Oldest first; a repeated Event says how often and over how long.
    assert events[2].split()[:2] == ["Warning", "AgentBusy"] and "(x3 over" in events[2]
    assert events[3].split()[:2] == ["Normal", "Uploaded"]
    assert events[3].endswith("kopf   1.5 MiB stored")

    same = run("describe", "ckpt/c1")
    assert same.exit_code == 0 and same.stdout.split("Created:")[0] == text.split("Created:")[0]


def test_describe_restore_and_a_checkpoint_not_handled_yet(cluster: FakeCluster) -> None:
    _story(cluster)
    story = sections(run("describe", "rst", "back").stdout)
    assert story[""]["Kind"] == "Restore" and story[""]["Events"] == "<none>"
    assert story["Spec"] == {"Checkpoint": "c1", "Pod Name": "web-again",
                             "Node": "the operator's choice"}
    assert story["Status"]["Node"] == "node-b" and story["Status"]["Staged"] == "false"
    assert story["Timings"]["Fetch"] == "3 ms"
    # The archive it restores: its Checkpoint's.
    assert story["Archive"]["Checkpoint"] == "c1 (Ready)"
    assert story["Archive"]["Checksum"] == "sha256:abc123"

    orphan = sections(run("describe", "restore/unrelated").stdout)
    assert orphan["Archive"] == {"checkpoint c9 not found": ""}
    assert orphan["Status"]["Phase"] == "not yet handled by the operator"

    # A user allowed ckpt's resources but not Events still gets the rest of the story.
    cluster.events_forbidden = True
    unlisted = run("describe", "restore", "back")
    assert unlisted.exit_code == 0
    assert sections(unlisted.stdout)[""]["Events"].startswith("<unavailable: could not list")
    assert sections(unlisted.stdout)["Status"]["Phase"] == "Running"

    cluster.add("checkpoints", "team-a", "new", {"podName": "web"})
    fresh = run("describe", "checkpoints.ckpt.dev", "new").stdout
    assert "Archive:\n  none yet\n" in fresh and "Conditions:  <none>" in fresh


@pytest.mark.parametrize(("args", "message"), [
    (["describe", "pods", "web"], "unknown type 'pods'"),
    (["describe", "checkpoint"], "name one checkpoint"),
    (["describe", "ckpt/c1", "c1"], "name one checkpoint"),
    (["describe", "restore", "nope"], "could not read restore team-a/nope: not found"),
])
def test_describe_errors(cluster: FakeCluster, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr


# Completion.


def _complete(*words: str) -> list[str]:
    from typer.main import get_command

    return completion.complete(get_command(app), list(words)).splitlines()


def test_completion_answers_as_cobra(kubeconfig: Path) -> None:
    verbs = _complete("")
    assert verbs[-1] == ":4"  # no file names
    assert [line.split("\t")[0] for line in verbs[:-1]] == [
        "checkpoint", "restore", "migrate", "ls", "describe", "completion", "policy"
    ]
    assert all("\t" in line for line in verbs[:-1])  # each with its description
    assert _complete("ls", "-o", "") == ["json", "yaml", "wide", "name", ":4"]
    assert _complete("checkpoint", "web", "--gpu", "r") == ["required", ":4"]
    assert _complete("completion", "") == ["bash", "zsh", ":4"]
    assert _complete("describe", "re") == ["restore", ":4"]
    assert _complete("ls", "--kubeconfig", "") == [":0"]  # the shell completes file names
    assert "--all-namespaces" in [line.split("\t")[0] for line in _complete("ls", "--all")]
    # Names come from the cluster: none when it does not answer, and no hanging.
    started = time.monotonic()
    assert _complete("restore", "") == [":4"]
    assert _complete("describe", "ckpt/") == [":4"]
    assert time.monotonic() - started < 10


def test_completion_names_come_from_the_namespace_on_the_command_line(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    asked: list[tuple[str, str]] = []

    def listed(self: Any, group: str, version: str, namespace: str, plural: str,
               **kwargs: Any) -> dict[str, Any]:
        asked.append((namespace, plural))
        assert kwargs["_request_timeout"] == completion.QUICK_SECONDS
        return {"items": [{"metadata": {"name": n}} for n in ("web-2", "web-1", "db-1")]}

    monkeypatch.setattr(client.CustomObjectsApi, "list_namespaced_custom_object", listed)
    assert _complete("restore", "web") == ["web-1", "web-2", ":4"]
    assert _complete("describe", "rst/", "-n", "") == [":4"]  # a namespace: not listed
    assert _complete("describe", "-n", "x", "rst/d") == ["rst/db-1", ":4"]
    assert _complete("describe", "--context", "bare", "checkpoint", "") == [
        "db-1", "web-1", "web-2", ":4"
    ]
    assert asked == [("team-a", "checkpoints"), ("x", "restores"), ("default", "checkpoints")]


def test_completion_scripts(cluster: FakeCluster) -> None:
    bash = run("completion", "bash")
    assert bash.exit_code == 0
    assert "complete -F _kubectl_ckpt kubectl-ckpt" in bash.stdout
    zsh = run("completion", "zsh").stdout
    assert "compdef _kubectl_ckpt kubectl-ckpt" in zsh and "_describe" in zsh
    assert "kubectl_complete-ckpt" in zsh

    # The bash script, loaded in bash, completing `kubectl-ckpt ls -o ` and `kubectl-ckpt de`.
    script = (
        'source <(kubectl-ckpt completion bash)\n'
        'COMP_WORDS=(kubectl-ckpt ls -o ""); COMP_CWORD=3; _kubectl_ckpt\n'
        'echo "${COMPREPLY[*]}"\n'
        'COMP_WORDS=(kubectl-ckpt de); COMP_CWORD=1; _kubectl_ckpt\n'
        'echo "${COMPREPLY[*]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], env=_path_with_venv(), capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["json yaml wide name", "describe"]


# Through the real kubectl binary: plugin discovery on PATH, its completion, exit statuses.


def _kubectl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from harness.controlplane import kubectl_binary

    return subprocess.run([kubectl_binary(), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_kubectl_finds_the_plugin_and_its_completion_on_path(kubeconfig: Path) -> None:
    env = {**_path_with_venv(), "KUBECONFIG": str(kubeconfig)}
    plugins = _kubectl("plugin", "list", env=env)
    assert str(BIN / "kubectl-ckpt") in plugins.stdout

    helped = _kubectl("ckpt", "--help", env=env)
    assert helped.returncode == 0 and "Examples:" in helped.stdout

    completed = _kubectl("__complete", "ckpt", "ls", "-o", "", env=env)
    assert completed.stdout.splitlines() == ["json", "yaml", "wide", "name", ":4"]

    failed = _kubectl("ckpt", "ls", "--bogus", env=env)
    assert failed.returncode == 1 and failed.stderr.startswith("error: No such option")
    unreachable = _kubectl("ckpt", "describe", "checkpoint", "c1", env=env)
    assert unreachable.returncode == 1
    assert "error: cannot reach the cluster" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
