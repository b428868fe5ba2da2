"""`kubectl ckpt policy status` (and `ckpt policy status`) in-process, without a cluster: the
kubeconfig is real (the namespace comes from its context, as kubectl takes it) and the
apiserver's answers come from a fake of the Kubernetes client's custom-objects calls, with
the camelCase bodies the operator writes: a policy's status and the Checkpoints it made,
labelled with the policy and the lineage, owned by the policy. What is checked: the story of
one policy and of all, each -o format, a missing policy's exit status and message, and the
completion of policy names."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from ckpt.user import completion, policies
from ckpt.user.kubectl import app
from harness.describe_text import sections

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
EVERY = 15 * 60
POLICY_UID = "uid-policy-train"


def _at(minutes_ago: float) -> str:
    when = NOW - dt.timedelta(minutes=minutes_ago)
    return when.isoformat().replace("+00:00", "Z")


class FakeApiserver:
    """The custom objects by (plural, namespace, name); label selectors as the apiserver
    reads the two forms the plugin sends (KEY and KEY=VALUE)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.asked: list[tuple[str, str | None, str | None]] = []

    def add(self, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.objects[(plural, meta["namespace"], meta["name"])] = body

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.asked.append((plural, namespace, name))
        if (plural, namespace, name) not in self.objects:
            exc = client.ApiException(status=404, reason="Not Found")
            exc.body = json.dumps({"kind": "Status", "reason": "NotFound",
                                   "message": f'{plural}.ckpt.dev "{name}" not found'})
            raise exc
        return self.objects[(plural, namespace, name)]

    def list(self, plural: str, namespace: str | None, selector: str | None) -> dict[str, Any]:
        self.asked.append((plural, namespace, selector))
        key, _, value = (selector or "").partition("=")
        items = [
            body for (kind, ns, _), body in sorted(self.objects.items())
            if kind == plural and namespace in (None, ns)
            and (not key or (key in (body["metadata"].get("labels") or {})
                             and (not value or body["metadata"]["labels"][key] == value)))
        ]
        return {"apiVersion": "ckpt.dev/v1alpha1", "kind": "List", "items": items}


def _policy(namespace: str, name: str, spec: dict[str, Any],
            status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ckpt.dev/v1alpha1", "kind": "CheckpointPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-policy-{name}",
                     "generation": 1, "creationTimestamp": _at(3 * 24 * 60)},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def _checkpoint(namespace: str, name: str, pod: str, minutes_ago: float, *,
                policy: str = "train", lineage: str, workload: str,
                status: dict[str, Any] | None, owner: str = POLICY_UID,
                deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": f"uid-{name}",
        "creationTimestamp": _at(minutes_ago),
        "labels": {"ckpt.dev/policy": policy, "ckpt.dev/lineage": lineage},
        "annotations": {"ckpt.dev/workload": workload},
        "ownerReferences": [{"apiVersion": "ckpt.dev/v1alpha1", "kind": "CheckpointPolicy",
                             "name": policy, "uid": owner, "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = _at(0)
    body: dict[str, Any] = {
        "apiVersion": "ckpt.dev/v1alpha1", "kind": "Checkpoint", "metadata": meta,
        "spec": {"podName": pod, "leaveRunning": True, "retainPolicy": "Delete"},
    }
    if status is not None:
        body["status"] = status
    return body


def _ready(size: str = "1.5 MiB") -> dict[str, Any]:
    return {"phase": "Ready", "message": "archived", "nodeName": "node-a", "size": size,
            "sizeBytes": 1572864}


JOB0, JOB1, OLD = "job-train-0-1a2b3c4d5e", "job-train-1-2b3c4d5e6f", "job-train-9f8e7d6c5b"


def _train(api: FakeApiserver) -> None:
    """Policy train over an Indexed Job of two pods: index 0 keeps three Ready checkpoints;
    index 1's latest failed and another is in flight; a lineage whose Job is gone keeps its
    last one. Besides: a Checkpoint with the label copied but not owned, one being pruned."""
    api.add("checkpointpolicies", _policy("team-a", "train", {
        "selector": {"matchLabels": {"app": "train"},
                     "matchExpressions": [{"key": "tier", "operator": "In",
                                           "values": ["gpu", "cpu"]}]},
        "every": "15m", "keepLast": 3, "storage": "s3-archives",
        "checkpointOnEviction": True, "evictionDeadlineSeconds": 120,
        "resumeReplacements": False,
    }, {
        "podsCovered": 2, "lastCheckpoint": "train-0-c", "lastCheckpointAt": _at(5),
        "lineageCount": 3,
        "message": "2 pods covered; checkpointed every 15m, keeping 3 per lineage",
        "lineages": [
            {"lineage": JOB0, "workload": "Job/train/0", "pods": ["train-0-x"], "ready": 3,
             "latestReady": "train-0-c", "latestReadyAt": _at(5)},
            {"lineage": JOB1, "workload": "Job/train/1", "pods": ["train-1-y"], "ready": 1,
             "latestReady": "train-1-a", "latestReadyAt": _at(21)},
            {"lineage": OLD, "workload": "Job/old-run/0", "pods": [], "ready": 1,
             "latestReady": "old-run-0-a", "latestReadyAt": _at(2 * 24 * 60)},
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Reconciled",
             "lastTransitionTime": _at(60)},
            {"type": "CheckpointsFailing", "status": "True", "reason": "CheckpointFailed",
             "message": "train-1-y: train-1-b failed: CRIU said no",
             "lastTransitionTime": _at(6)},
        ],
        "observedGeneration": 1,
    }))
    job0 = {"lineage": JOB0, "workload": "Job/train/0", "status": _ready()}
    for name, minutes in (("train-0-a", 35), ("train-0-b", 20), ("train-0-c", 5)):
        api.add("checkpoints", _checkpoint("team-a", name, "train-0-x", minutes, **job0))
    api.add("checkpoints", _checkpoint("team-a", "train-0-pruned", "train-0-x", 50,
                                       deleting=True, **job0))
    job1: dict[str, Any] = {"lineage": JOB1, "workload": "Job/train/1"}
    api.add("checkpoints", _checkpoint("team-a", "train-1-a", "train-1-y", 21,
                                       status=_ready("2 MiB"), **job1))
    api.add("checkpoints", _checkpoint("team-a", "train-1-b", "train-1-y", 6, **job1,
                                       status={"phase": "Failed", "message": "CRIU said no"}))
    api.add("checkpoints", _checkpoint("team-a", "train-1-c", "train-1-y", 1, **job1,
                                       status={"phase": "Checkpointing"}))
    api.add("checkpoints", _checkpoint("team-a", "old-run-0-a", "old-run-0-z", 2 * 24 * 60,
                                       lineage=OLD, workload="Job/old-run/0",
                                       status=_ready("900 KiB")))
    api.add("checkpoints", _checkpoint("team-a", "copied-label", "train-0-x", 2, **job0,
                                       owner="uid-someone-else"))


def _others(api: FakeApiserver) -> None:
    """Policy nightly in team-a, without `every`, not yet handled by the operator; policy
    web in team-b, with a pod but no checkpoint yet."""
    api.add("checkpointpolicies", _policy("team-a", "nightly",
                                          {"selector": {"matchLabels": {"app": "db"}}}))
    api.add("checkpointpolicies", _policy("team-b", "web", {
        "selector": {"matchLabels": {"app": "web"}}, "every": "1h",
    }, {
        "podsCovered": 1, "lineageCount": 1, "message": "1 pod covered",
        "lineages": [{"lineage": "pod-web-0123456789", "workload": "Pod/web",
                      "pods": ["web"], "ready": 0}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}],
        "observedGeneration": 1,
    }))


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Contexts pointing at a port nothing listens on: loading them is real, and any request
    not answered by the fake fails at once."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "someone", "user": {"token": "t"}}],
        "contexts": [
            {"name": "team", "context": {"cluster": "nowhere", "user": "someone",
                                         "namespace": "team-a"}},
            {"name": "bare", "context": {"cluster": "nowhere", "user": "someone"}},
        ],
        "current-context": "team",
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def apiserver(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiserver:
    fake = FakeApiserver()

    def get(self: Any, group: str, version: str, namespace: str, plural: str, name: str,
            **kwargs: Any) -> dict[str, Any]:
        return fake.get(plural, namespace, name)

    def list_namespaced(self: Any, group: str, version: str, namespace: str, plural: str,
                        label_selector: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return fake.list(plural, namespace, label_selector)

    def list_cluster(self: Any, group: str, version: str, plural: str,
                     label_selector: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return fake.list(plural, None, label_selector)

    monkeypatch.setattr(client.CustomObjectsApi, "get_namespaced_custom_object", get)
    monkeypatch.setattr(client.CustomObjectsApi, "list_namespaced_custom_object",
                        list_namespaced)
    monkeypatch.setattr(client.CustomObjectsApi, "list_cluster_custom_object", list_cluster)
    monkeypatch.setattr(policies, "utcnow", lambda: NOW)
    monkeypatch.setenv("COLUMNS", "200")
    return fake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of a section's table, cells split where kubectl pads (3 spaces or more)."""
    import re

    block = text.split(f"\n{heading}:\n")[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        lines.append(re.split(r"\s{3,}", line.strip()))
    return lines


# One policy.


def test_the_story_of_one_policy(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    result = run("policy", "status", "train")
    assert result.exit_code == 0, result.output
    text = result.stdout
    headings = [line.split(":")[0] for line in text.splitlines()
                if line and not line.startswith(" ")]
    assert headings == ["Name", "Namespace", "Kind", "Created", "Spec", "Status", "Lineages",
                        "Failed Checkpoints", "Conditions"]
    story = sections(text)
    assert story[""]["Namespace"] == "team-a"  # the context's
    assert story[""]["Created"].endswith("(3d ago)")
    assert story["Spec"] == {
        "Selector": "app=train,tier in (gpu,cpu)",
        "Every": "15m",
        "Keep Last": "3 Ready checkpoints per lineage",
        "Storage": "s3-archives",
        "Checkpoint On Eviction": "true, deadline 120s (stored, not acted on yet)",
        "Resume Replacements": "false (stored, not acted on yet)",
    }
    assert story["Status"]["Pods Covered"] == "2"
    assert story["Status"]["Lineages"] == "3"
    assert story["Status"]["Last Checkpoint"] == "train-0-c (5m ago)"
    # Index 0's latest (5m ago) plus 15m; index 1's latest is the one in flight (1m ago).
    assert story["Status"]["Next Checkpoint"] == "in 10m (2026-03-01T12:10:00Z, pod train-0-x)"
    assert "Observed Generation" not in story["Status"]

    lineages = _table(text, "Lineages")
    assert lineages[0] == ["Workload", "Pods", "Latest-Ready", "Age", "Size", "Kept",
                           "In-Flight", "Failed", "Next-Due"]
    # Newest Ready first. The label copied onto someone else's Checkpoint and the one being
    # pruned are not the policy's.
    assert lineages[1:] == [
        ["Job/train/0", "train-0-x", "train-0-c", "5m", "1.5MiB", "3/3", "0", "0", "in 10m"],
        ["Job/train/1", "train-1-y", "train-1-a", "21m", "2MiB", "1/3", "1", "1", "in 14m"],
        ["Job/old-run/0", "<none>", "old-run-0-a", "2d", "900KiB", "1/3", "0", "0",
         "<none>"],
    ]
    failed = _table(text, "Failed Checkpoints")
    assert failed[1:] == [["train-1-b", "train-1-y", "Job/train/1", "6m", "CRIU said no"]]
    conditions = _table(text, "Conditions")
    assert conditions[2] == ["CheckpointsFailing", "True", "CheckpointFailed", "6m",
                             "train-1-y: train-1-b failed: CRIU said no"]
    assert apiserver.asked == [("checkpointpolicies", "team-a", "train"),
                               ("checkpoints", "team-a", "ckpt.dev/policy=train")]


def test_wide_adds_the_lineage_labels_and_every_checkpoint(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    text = run("policy", "status", "train", "-o", "wide").stdout
    lineages = _table(text, "Lineages")
    assert lineages[0][:2] == ["Workload", "Lineage"]
    assert [row[1] for row in lineages[1:]] == [JOB0, JOB1, OLD]
    checkpoints = _table(text, "Checkpoints")
    assert checkpoints[0] == ["Name", "Phase", "Pod", "Workload", "Node", "Size", "Age"]
    assert [row[0] for row in checkpoints[1:]] == [
        "train-1-c", "train-0-c", "train-1-b", "train-0-b", "train-1-a", "train-0-a",
        "old-run-0-a",
    ]
    assert checkpoints[1][:3] == ["train-1-c", "Checkpointing", "train-1-y"]


def test_json_and_yaml_are_the_report(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    result = run("policy", "status", "train", "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "CheckpointPolicyReport"
    assert (report["namespace"], report["name"], report["handled"]) == ("team-a", "train", True)
    assert report["spec"]["every"] == "15m" and report["spec"]["keepLast"] == 3
    assert report["spec"]["selector"]["matchLabels"] == {"app": "train"}
    assert report["podsCovered"] == 2 and report["lineageCount"] == 3
    assert report["lastCheckpoint"]["name"] == "train-0-c"
    assert report["nextDue"] == {"at": "2026-03-01T12:10:00Z", "pod": "train-0-x",
                                 "workload": "Job/train/0"}
    job0, job1, old = report["lineages"]
    assert (job0["lineage"], job0["ready"], job0["keep"], job0["inFlight"], job0["failed"]) == (
        JOB0, 3, 3, 0, 0)
    assert job0["latestReady"] == {
        "name": "train-0-c", "pod": "train-0-x", "phase": "Ready",
        "createdAt": "2026-03-01T11:55:00Z", "nodeName": "node-a", "size": "1.5 MiB",
        "sizeBytes": 1572864, "message": "archived",
    }
    assert [c["name"] for c in job1["checkpoints"]] == ["train-1-c", "train-1-b", "train-1-a"]
    assert (job1["inFlight"], job1["failed"]) == (1, 1)
    assert job1["nextDue"]["at"] == "2026-03-01T12:14:00Z"
    assert old["pods"] == [] and old["nextDue"] is None
    assert [c["type"] for c in report["conditions"]] == ["Ready", "CheckpointsFailing"]
    # The model reads its own output back.
    assert policies.PolicyReport.model_validate(report).lineages[1].failed == 1

    assert yaml.safe_load(run("policy", "status", "train", "-o", "yaml").stdout) == report
    assert run("policy", "status", "train", "-o", "name").stdout == (
        "checkpointpolicy.ckpt.dev/train\n")


# All policies.


def test_every_policy_of_the_namespace_and_of_all(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    _others(apiserver)
    here = run("policy", "status")
    assert here.exit_code == 0, here.output
    # Apart by a blank line, as kubectl describe prints several.
    stories = here.stdout.split("\n\n")
    assert len(stories) == 2  # nightly and train; web is in team-b
    nightly = sections(stories[0])
    assert nightly[""]["Name"] == "nightly"
    assert nightly[""]["Status"] == "not yet handled by the operator (is it running?)"
    assert nightly["Spec"]["Every"] == "not set: no periodic checkpoints"
    assert nightly["Spec"]["Storage"] == "the default location"
    assert nightly[""]["Lineages"] == "<none>"
    assert sections(stories[1])[""]["Name"] == "train"
    # One list of the policies' Checkpoints for all of them.
    assert apiserver.asked == [("checkpointpolicies", "team-a", None),
                               ("checkpoints", "team-a", "ckpt.dev/policy")]

    everywhere = run("policy", "status", "-A", "-o", "json")
    document = json.loads(everywhere.stdout)
    assert document["kind"] == "List"
    assert [(r["namespace"], r["name"]) for r in document["items"]] == [
        ("team-a", "nightly"), ("team-a", "train"), ("team-b", "web")]
    web = document["items"][2]
    assert web["nextDue"] is None and web["lineages"][0]["pods"] == ["web"]
    web_story = sections(run("policy", "status", "-n", "team-b").stdout)
    assert web_story["Status"]["Next Checkpoint"] == (
        "not known until a covered pod's first checkpoint")
    assert web_story["Status"]["Last Checkpoint"] == "none Ready yet"

    names = run("policy", "status", "-A", "-o", "name")
    assert names.stdout.splitlines() == [
        "checkpointpolicy.ckpt.dev/nightly", "checkpointpolicy.ckpt.dev/train",
        "checkpointpolicy.ckpt.dev/web"]


def test_no_policies_is_not_an_error(apiserver: FakeApiserver) -> None:
    empty = run("policy", "status")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "No checkpoint policies found in the team-a namespace." in empty.stderr
    assert json.loads(run("policy", "status", "-o", "json").stdout)["items"] == []
    assert "in any namespace" in run("policy", "status", "-A").stderr
    assert run("policy", "status", "--context", "bare").stderr.startswith(
        "No checkpoint policies found in the default namespace.")


def test_a_stale_status_says_so(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    apiserver.objects[("checkpointpolicies", "team-a", "train")]["metadata"]["generation"] = 2
    status = sections(run("policy", "status", "train").stdout)["Status"]
    assert status["Observed Generation"] == (
        "1; the spec is at 2: the operator has not acted on the last edit yet")


# Errors.


def test_a_missing_policy_exits_1_saying_so(apiserver: FakeApiserver) -> None:
    result = run("policy", "status", "nope", "-n", "team-b")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        'error: could not read checkpointpolicy team-b/nope: checkpointpolicies.ckpt.dev '
        '"nope" not found (not found; ')
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["policy", "status", "train", "-A"], "a policy cannot be named across all namespaces"),
    (["policy", "status", "-o", "xml"], "Invalid value for '--output' / '-o'"),
    (["policy", "stat"], "No such command 'stat'"),
    (["policy", "status", "a", "b"], "unexpected extra argument(s) (b)"),
])
def test_usage_errors_exit_1(apiserver: FakeApiserver, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_an_unreachable_cluster_is_an_error_not_a_traceback(kubeconfig: Path) -> None:
    result = run("policy", "status", "train")
    assert result.exit_code == 1
    assert "error: cannot reach the cluster" in result.stderr


def test_help_has_examples_and_kubectl_options(apiserver: FakeApiserver) -> None:
    group = run("policy")
    assert group.exit_code == 0 and "  status  " in group.stdout
    assert "  policy  " in run().stdout
    helped = run("policy", "status", "-h")
    assert helped.exit_code == 0
    assert "kubectl ckpt policy status" in helped.stdout.split("Examples:")[1]
    for option in ("--kubeconfig", "--context", "-n, --namespace", "-A, --all-namespaces",
                   "-o, --output"):
        assert option in helped.stdout


# Completion.


def _complete(*words: str) -> list[str]:
    from typer.main import get_command

    return completion.complete(get_command(app), list(words)).splitlines()


def test_completion_of_the_verb_and_of_policy_names(apiserver: FakeApiserver) -> None:
    _train(apiserver)
    _others(apiserver)
    assert "policy" in [line.split("\t")[0] for line in _complete("")]
    assert [line.split("\t")[0] for line in _complete("policy", "")] == ["status", ":4"]
    assert _complete("policy", "status", "-o", "") == ["json", "yaml", "wide", "name", ":4"]
    assert _complete("policy", "status", "") == ["nightly", "train", ":4"]
    assert _complete("policy", "status", "t") == ["train", ":4"]
    assert _complete("policy", "status", "-n", "team-b", "") == ["web", ":4"]
    assert apiserver.asked[-1] == ("checkpointpolicies", "team-b", None)


def test_completion_through_the_installed_program(kubeconfig: Path) -> None:
    """kubectl_complete-ckpt as kubectl runs it: no cluster answers, so no names, at once."""
    import subprocess
    import sys

    done = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl_complete-ckpt"), "policy", "status", ""],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)}, capture_output=True, text=True,
        timeout=60, check=True,
    )
    assert done.stdout.splitlines() == [":4"]


# The same verb in `ckpt`.


def test_ckpt_policy_status(apiserver: FakeApiserver) -> None:
    from ckpt.cli import app as ckpt_app

    _train(apiserver)
    story = CliRunner().invoke(ckpt_app, ["policy", "status", "train", "-n", "team-a"])
    assert story.exit_code == 0, story.output
    assert sections(story.stdout)["Status"]["Last Checkpoint"] == "train-0-c (5m ago)"
    as_json = CliRunner().invoke(ckpt_app, ["policy", "status", "-A", "-o", "json"])
    assert [r["name"] for r in json.loads(as_json.stdout)["items"]] == ["train"]
    missing = CliRunner().invoke(ckpt_app, ["policy", "status", "nope"])
    assert missing.exit_code == 1
    assert "could not read checkpointpolicy default/nope" in missing.output
