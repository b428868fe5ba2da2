"""Helpers shared by the deploy/ tests: the kustomizations rendered by the real kubectl."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import kubectl_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
NAMESPACE = "ckpt-system"
# deploy/credentials: the StorageLocations' Secrets, the only ones the operator reads.
CREDENTIALS_NAMESPACE = "ckpt-credentials"

Manifest = dict[str, Any]

# What each ClusterRole of deploy/ grants, as (apiGroup, resource, verb): the manifest tests
# compare the rendered rules with these, the cluster tests what the apiserver answers.
OPERATOR_RULES = {
    *{("ckpt.dev", "checkpoints", v) for v in ("get", "list", "watch", "patch", "update")},
    *{("ckpt.dev", "checkpoints/status", v) for v in ("get", "patch", "update")},
    # Target pods by name, anywhere; list and watch only in its own namespace (Role below).
    ("", "pods", "get"),
    ("", "events", "create"),
    *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")},
    # get: a namespace's labels, for StorageLocations' spec.allowedNamespaces.
    *{("", "namespaces", v) for v in ("get", "list", "watch")},
    # Restores: reconciled like Checkpoints; the restored Pod is created; Nodes are read to
    # choose where.
    *{("ckpt.dev", "restores", v) for v in ("get", "list", "watch", "patch", "update")},
    *{("ckpt.dev", "restores/status", v) for v in ("get", "patch", "update")},
    ("", "pods", "create"),
    *{("", "nodes", v) for v in ("get", "list")},
    # StorageLocations: resolved for Checkpoints, checked periodically (status).
    *{("ckpt.dev", "storagelocations", v) for v in ("get", "list", "watch", "patch")},
    *{("ckpt.dev", "storagelocations/status", v) for v in ("get", "patch")},
    # CheckpointPolicies: one loop each, their status; the periodic Checkpoints created, those
    # beyond keepLast deleted.
    *{("ckpt.dev", "checkpointpolicies", v) for v in ("get", "list", "watch", "patch")},
    *{("ckpt.dev", "checkpointpolicies/status", v) for v in ("get", "patch")},
    *{("ckpt.dev", "checkpoints", v) for v in ("create", "delete")},
    # Each namespace's read-only API token, in its Secret ckpt-api-read-token: RBAC cannot
    # name the object of a create (admission holds the operator to that name); the update is
    # by name (OPERATOR_NAMED_RULES).
    ("", "secrets", "create"),
}
# Rules limited to named objects, as (apiGroup, resource, verb, name): the only ones deploy/
# has. The operator renews each namespace's token Secret; its users read it (ckpt-user).
OPERATOR_NAMED_RULES = {("", "secrets", "update", "ckpt-api-read-token")}
USER_NAMED_RULES = {("", "secrets", "get", "ckpt-api-read-token")}
# ClusterRole ckpt-operator-list-pods, bound by namespace admins where they enable
# CheckpointPolicies (deploy/ binds it nowhere): the pods a policy's selector picks.
OPERATOR_LIST_PODS_RULES = {("", "pods", "list")}
# The Role ckpt-operator-agents in the operator's namespace: the agent pod watch.
OPERATOR_NAMESPACE_RULES = {("", "pods", "list"), ("", "pods", "watch")}
# The Role ckpt-operator-storage in the credentials namespace: the locations' Secrets.
OPERATOR_STORAGE_RULES = {("", "secrets", "get")}
AGENT_RULES = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("", "nodes/checkpoint", "create"),
}
# ClusterRole ckpt-metrics-auth, bound to the API and the operator: who a scraper of /metrics
# is, and whether RBAC lets it get that URL.
METRICS_AUTH_RULES = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}
# ClusterRole ckpt-metrics-reader (non-resource URLs), bound by admins to their Prometheus.
METRICS_READER_URLS = {("/metrics", "get")}


def render(directory: Path) -> list[Manifest]:
    """`kubectl kustomize DIR`, parsed: exactly what `kubectl apply -k DIR` would send."""
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
