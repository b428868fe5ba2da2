"""Attacks on the operator's power to create Pods, on the local cluster with deploy/ applied
(its ValidatingAdmissionPolicies, deploy/admission): a namespace user claiming a staged
restore with the annotation the wrapper acts on, and a stolen operator identity creating Pods
more powerful than a restored one. Without the policies (deleted once by hand while writing
this test) every request below was admitted.

The user has what README tells admins to grant a namespace's users: Kubernetes' `edit` and
ckpt's `ckpt-user`, bound in their namespace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

OPERATOR = f"system:serviceaccount:{e2e.NAMESPACE}:ckpt-operator"
USER = "alice"
RESTORE = "ckpt.dev/restore"


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture
def tenant(kube: Cluster, cluster_namespace: str) -> str:
    for role in ("edit", "ckpt-user"):
        kube.kubectl("-n", cluster_namespace, "create", "rolebinding", f"alice-{role}",
                     f"--clusterrole={role}", f"--user={USER}")
    return cluster_namespace


def _pod(name: str, image: str, *, annotations: dict[str, str] | None = None,
         runtime_class: str | None = "ckpt", **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["sleep", "3600"], **spec.pop("container", {})}
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
    }
    if runtime_class:
        body["spec"]["runtimeClassName"] = runtime_class
    return body


def _create(kube: Cluster, namespace: str, body: dict[str, Any], who: str) -> str:
    """'' when admitted (and created with --dry-run=server: nothing runs), else the refusal."""
    proc = kube.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-",
                        input=json.dumps(body), check=False, impersonate=who)
    return "" if proc.returncode == 0 else proc.stderr


def test_a_namespace_user_cannot_claim_a_staged_restore(
    kube: Cluster, cluster_nodes: ClusterUnderTest, tenant: str
) -> None:
    image = cluster_nodes.busybox_image
    claim = {RESTORE: "7d9f0c1e-aaaa-bbbb-cccc-000011112222"}
    refused = _create(kube, tenant, _pod("claim", image, annotations=claim), USER)
    assert "only the ckpt operator may set the annotation ckpt.dev/restore" in refused
    # Nor by adding it to a Pod of theirs afterwards.
    kube.kubectl("-n", tenant, "create", "-f", "-", impersonate=USER,
                 input=json.dumps(_pod("plain", image, runtime_class=None)))
    patched = kube.kubectl("-n", tenant, "annotate", "pod", "plain", f"{RESTORE}=x",
                           check=False, impersonate=USER)
    assert patched.returncode != 0 and "ckpt.dev/restore" in patched.stderr, patched.stderr
    # Their own Pods are otherwise theirs to create and change.
    kube.kubectl("-n", tenant, "annotate", "pod", "plain", "note=fine", impersonate=USER)


@pytest.mark.parametrize(("case", "changes", "refusal"), [
    ("not a restored Pod", {"annotations": {}}, "creates only restored Pods"),
    ("another runtime class", {"runtime_class": None}, "creates only restored Pods"),
    ("in ckpt-system", {"namespace": e2e.NAMESPACE}, "no Pods in ckpt-system"),
    ("the node's network", {"hostNetwork": True}, "may not share the node's namespaces"),
    ("the node's pids", {"hostPID": True}, "may not share the node's namespaces"),
    ("a hostPath volume", {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
     "may not mount hostPath volumes"),
    ("a privileged container", {"container": {"securityContext": {"privileged": True}}},
     "may not run privileged containers"),
])
def test_the_operators_identity_creates_nothing_but_restored_pods(
    kube: Cluster, cluster_nodes: ClusterUnderTest, tenant: str, case: str,
    changes: dict[str, Any], refusal: str,
) -> None:
    image = cluster_nodes.busybox_image
    changes = dict(changes)
    namespace = changes.pop("namespace", tenant)
    annotations = changes.pop("annotations", {RESTORE: "7d9f0c1e-aaaa-bbbb-cccc-000011112222"})
    runtime_class = changes.pop("runtime_class", "ckpt")
    body = _pod("restored", image, annotations=annotations, runtime_class=runtime_class,
                **changes)
    assert refusal in _create(kube, namespace, body, OPERATOR), case


def test_the_operator_still_creates_a_restored_pod(
    kube: Cluster, cluster_nodes: ClusterUnderTest, tenant: str
) -> None:
    body = _pod("restored", cluster_nodes.busybox_image,
                annotations={RESTORE: "7d9f0c1e-aaaa-bbbb-cccc-000011112222"})
    assert _create(kube, tenant, body, OPERATOR) == ""


def _read_token_secret(**changes: Any) -> dict[str, Any]:
    """The Secret the operator writes into each namespace (ckpt.operator.read_tokens), with
    `changes` to its top-level fields, its `name` or its `annotations`."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Secret", "type": "ckpt.dev/api-read-token",
        "metadata": {"name": changes.pop("name", "ckpt-api-read-token"),
                     "annotations": changes.pop("annotations", {})},
        "data": {"token": "Y2twdF94"},
    }
    return body | changes


@pytest.mark.parametrize(("case", "changes", "refusal"), [
    ("another name", {"name": "db-password"}, "only Secrets named ckpt-api-read-token"),
    # A token of the namespace's default ServiceAccount, minted by the token controller.
    ("a ServiceAccount token", {"type": "kubernetes.io/service-account-token",
                                "annotations": {"kubernetes.io/service-account.name": "default"}},
     "only Secrets of type ckpt.dev/api-read-token"),
    ("an opaque one", {"type": "Opaque"}, "only Secrets of type ckpt.dev/api-read-token"),
    ("another key", {"data": {"token": "Y2twdF94", "extra": "eA=="}}, "the one key token"),
    ("in ckpt-system", {"namespace": e2e.NAMESPACE}, "no Secrets in ckpt-system"),
])
def test_the_operators_identity_writes_no_secret_but_the_namespace_read_token(
    kube: Cluster, tenant: str, case: str, changes: dict[str, Any], refusal: str
) -> None:
    """RBAC grants the operator `create` on Secrets in every namespace (a create cannot be
    limited to a name): a stolen operator identity would write any Secret anywhere, a
    ServiceAccount token Secret included. ValidatingAdmissionPolicy
    ckpt-operator-writes-only-read-token-secrets holds it to the namespace's read token."""
    changes = dict(changes)
    namespace = changes.pop("namespace", tenant)
    assert refusal in _create(kube, namespace, _read_token_secret(**changes), OPERATOR), case


def test_the_operator_still_writes_the_namespace_read_token(kube: Cluster, tenant: str) -> None:
    assert _create(kube, tenant, _read_token_secret(), OPERATOR) == ""
    # Nobody else is bound by the policy: the namespace's own users manage their Secrets.
    assert _create(kube, tenant, _read_token_secret(name="db-password", type="Opaque"),
                   USER) == ""
