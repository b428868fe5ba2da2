"""deploy/ against the real kube-apiserver: server-side dry run, and RBAC applied for real.

The RBAC checks run twice over: `kubectl auth can-i --as=<ServiceAccount>` for what each part
must and must not do, and a SelfSubjectRulesReview made with each ServiceAccount's own token,
which must list nothing beyond the ClusterRole in deploy/ (compared with a ServiceAccount that
has no binding at all, so the permissions every authenticated user has are left out).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from deploy_render import (
    AGENT_RULES,
    CREDENTIALS_NAMESPACE,
    DEPLOY,
    METRICS_AUTH_RULES,
    NAMESPACE,
    OPERATOR_NAMED_RULES,
    OPERATOR_NAMESPACE_RULES,
    OPERATOR_RULES,
    OPERATOR_STORAGE_RULES,
    Manifest,
    render,
)
from kubernetes import client

from harness.controlplane import Cluster

# Needs the test apiserver.
pytestmark = pytest.mark.e2e

OPERATOR = f"system:serviceaccount:{NAMESPACE}:ckpt-operator"
AGENT = f"system:serviceaccount:{NAMESPACE}:ckpt-agent"
API = f"system:serviceaccount:{NAMESPACE}:ckpt-api"

# kubectl says this when the namespace was created by `kubectl create` (e.g. by another test's
# fixture) before `kubectl apply` first touched it; harmless, and not about deploy/.
LAST_APPLIED_WARNING = "is missing the kubectl.kubernetes.io/last-applied-configuration"


def apply(kube: Cluster, objects: list[Manifest]) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def unexpected_warnings(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("Warning:") and LAST_APPLIED_WARNING not in line
    ]


@pytest.mark.parametrize("kustomization", ["deploy", "deploy/postgresql"])
def test_server_side_dry_run_accepts_every_object(kube: Cluster, kustomization: str) -> None:
    directory = DEPLOY.parent / kustomization
    objects = render(directory)
    # A server-side dry run does not persist the Namespace it "creates", so every namespaced
    # object after it would be refused with `namespaces "ckpt-system" not found`. Create the
    # Namespace for real first (from deploy/ itself); everything else is only dry-run.
    apply(kube, [m for m in objects if m["kind"] == "Namespace"])

    proc = kube.kubectl("apply", "--dry-run=server", "-k", str(directory), check=False)
    assert proc.returncode == 0, proc.stderr
    # Deprecated APIs, Pod Security violations and the like come back as warnings.
    assert unexpected_warnings(proc.stderr) == []
    reported = [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(reported) == len(objects), proc.stdout


@pytest.fixture(scope="module")
def rbac(kube: Cluster) -> Iterator[Cluster]:
    """The CRD, Namespace, ServiceAccounts, (Cluster)Roles and bindings of deploy/, for real.

    The CRD too: `kubectl auth can-i` resolves `checkpoints.ckpt.dev` through discovery, and
    without the CRD it asks about the wrong resource (and answers "no"). They are left in
    place: applying them is idempotent, and the operator's integration tests run with the very
    same CRD, ServiceAccount and ClusterRole.
    """
    kinds = {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    apply(kube, [m for m in render(DEPLOY) if m["kind"] in kinds])
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "customresourcedefinition/checkpoints.ckpt.dev",
    )
    yield kube


def can_i(kube: Cluster, who: str, verb: str, resource: str, *flags: str) -> bool:
    proc = kube.kubectl("auth", "can-i", verb, resource, *flags, check=False, impersonate=who)
    assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


# (verb, resource, flags): flags pick the namespace (-A: every namespace) or a subresource.
OPERATOR_MAY = [
    ("watch", "checkpoints.ckpt.dev", "-A"),
    ("list", "checkpoints.ckpt.dev", "-A"),
    ("get", "checkpoints.ckpt.dev", "-n", "default"),
    # kopf's progress annotations and finalizer.
    ("patch", "checkpoints.ckpt.dev", "-n", "default"),
    ("patch", "checkpoints.ckpt.dev", "--subresource=status", "-n", "default"),
    ("update", "checkpoints.ckpt.dev", "--subresource=status", "-n", "team-a"),
    # A Checkpoint's target pod, by name; the agent pods of its own namespace, watched.
    ("get", "pods", "-n", "default"),
    ("list", "pods", "-n", NAMESPACE),
    ("watch", "pods", "-n", NAMESPACE),
    ("create", "events", "-n", "default"),
    # Restores: the restored Pod, and Nodes to choose where; storage credentials of the
    # credentials namespace only (Role ckpt-operator-storage).
    ("create", "pods", "-n", "default"),
    ("get", "nodes"),
    ("get", "secrets", "-n", "ckpt-credentials"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
    # A namespace's labels, for StorageLocations' spec.allowedNamespaces.
    ("get", "namespaces"),
    # CheckpointPolicies: the periodic Checkpoints created, and deleted beyond keepLast; the
    # policy's status. (Listing the pods a policy selects needs ckpt-operator-list-pods,
    # bound in the policy's namespace: nothing here binds it.)
    ("watch", "checkpointpolicies.ckpt.dev", "-A"),
    ("patch", "checkpointpolicies.ckpt.dev", "--subresource=status", "-n", "team-a"),
    ("create", "checkpoints.ckpt.dev", "-n", "default"),
    ("delete", "checkpoints.ckpt.dev", "-n", "default"),
    # Each namespace's read-only API token: its Secret written, by name where RBAC can name it
    # (deploy/admission holds the create to that name).
    ("create", "secrets", "-n", "team-a"),
    ("update", "secrets/ckpt-api-read-token", "-n", "team-a"),
    # Who scrapes its /metrics, and whether RBAC lets them (ClusterRole ckpt-metrics-auth).
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
]
OPERATOR_MAY_NOT = [
    # Before: list and watch of every pod in the cluster, and Events patched anywhere.
    ("list", "pods", "-A"),
    ("watch", "pods", "-A"),
    ("list", "pods", "-n", "default"),
    ("watch", "pods", "-n", "team-a"),
    ("patch", "events", "-n", "team-a"),
    ("get", "secrets", "-n", "default"),
    ("get", "secrets/ckpt-api-read-token", "-n", "default"),
    ("update", "secrets", "-n", "default"),
    ("patch", "secrets/ckpt-api-read-token", "-n", "default"),
    ("delete", "secrets/ckpt-api-read-token", "-n", "default"),
    ("list", "secrets", "-n", NAMESPACE),
    # ckpt-system's own Secrets (servers' TLS keys, the API's database URL) are not its.
    ("get", "secrets", "-n", NAMESPACE),
    ("list", "secrets", "-n", "ckpt-credentials"),
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("delete", "pods", "-n", "default"),
    ("patch", "pods", "-n", "default"),
    ("create", "pods", "--subresource=exec", "-n", "default"),
    ("update", "checkpointpolicies.ckpt.dev", "-n", "default"),
    ("delete", "checkpointpolicies.ckpt.dev", "-n", "default"),
    ("get", "configmaps", "-n", NAMESPACE),
    ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE),
    ("create", "nodes", "--subresource=checkpoint"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "namespaces"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts", "-n", NAMESPACE),
    ("*", "*", "-A"),
]
AGENT_MAY = [
    ("create", "tokenreviews.authentication.k8s.io"),
    # The kubelet authorizes POST /checkpoint/... as `create` on nodes/checkpoint.
    ("create", "nodes", "--subresource=checkpoint"),
]
AGENT_MAY_NOT = [
    ("get", "secrets", "-n", NAMESPACE),
    ("list", "secrets", "-A"),
    ("list", "pods", "-A"),
    ("delete", "pods", "-n", "default"),
    ("create", "pods", "--subresource=exec", "-n", "default"),
    ("get", "nodes"),
    # nodes/proxy would open every other kubelet endpoint (exec, logs, ...).
    ("create", "nodes", "--subresource=proxy"),
    ("get", "nodes", "--subresource=proxy"),
    ("list", "checkpoints.ckpt.dev", "-A"),
    ("create", "events", "-n", "default"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE),
    ("*", "*", "-A"),
]
# The API service calls Kubernetes only to review the scrapers of its /metrics.
API_MAY = [
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
]
API_MAY_NOT = [
    ("get", "secrets", "-n", NAMESPACE),
    ("list", "pods", "-A"),
    ("get", "pods", "-n", NAMESPACE),
    ("list", "checkpoints.ckpt.dev", "-A"),
    ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE),
    ("get", "/metrics"),
    ("*", "*", "-A"),
]


def _ids(cases: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(case) for case in cases]


@pytest.mark.parametrize("case", OPERATOR_MAY, ids=_ids(OPERATOR_MAY))
def test_operator_may(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert can_i(rbac, OPERATOR, *case)


@pytest.mark.parametrize("case", OPERATOR_MAY_NOT, ids=_ids(OPERATOR_MAY_NOT))
def test_operator_may_not(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert not can_i(rbac, OPERATOR, *case)


@pytest.mark.parametrize("case", AGENT_MAY, ids=_ids(AGENT_MAY))
def test_agent_may(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert can_i(rbac, AGENT, *case)


@pytest.mark.parametrize("case", AGENT_MAY_NOT, ids=_ids(AGENT_MAY_NOT))
def test_agent_may_not(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert not can_i(rbac, AGENT, *case)


@pytest.mark.parametrize("case", API_MAY, ids=_ids(API_MAY))
def test_api_may(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert can_i(rbac, API, *case)


@pytest.mark.parametrize("case", API_MAY_NOT, ids=_ids(API_MAY_NOT))
def test_api_may_not(rbac: Cluster, case: tuple[str, ...]) -> None:
    assert not can_i(rbac, API, *case)


def test_only_a_scraper_bound_to_the_reader_role_may_get_metrics(rbac: Cluster) -> None:
    """What the API and the operator ask (SubjectAccessReview of get /metrics): yes for a
    ServiceAccount bound to ckpt-metrics-reader as deploy/README.md says, no for ckpt's own
    ServiceAccounts and an unbound one."""
    scraper = "ckpt-deploy-test-scraper"
    rbac.service_account_token(NAMESPACE, scraper, expiration_seconds=600)
    binding = f"{scraper}-metrics"
    rbac.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")
    try:
        assert not can_i(rbac, f"system:serviceaccount:{NAMESPACE}:{scraper}", "get", "/metrics")
        rbac.kubectl("create", "clusterrolebinding", binding, "--clusterrole=ckpt-metrics-reader",
                     f"--serviceaccount={NAMESPACE}:{scraper}")
        assert can_i(rbac, f"system:serviceaccount:{NAMESPACE}:{scraper}", "get", "/metrics")
        for who in (OPERATOR, AGENT, API):
            assert not can_i(rbac, who, "get", "/metrics"), who
    finally:
        rbac.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


def rules_of(kube: Cluster, service_account: str, namespace: str) -> tuple[set, set]:
    """What the ServiceAccount may do in `namespace`, asked with its own token."""
    token = kube.service_account_token(NAMESPACE, service_account, expiration_seconds=600)
    review = client.V1SelfSubjectRulesReview(
        spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)
    )
    with kube.api_client(token=token) as api:
        answer = client.AuthorizationV1Api(api).create_self_subject_rules_review(review)
        # The wire form (camelCase keys): the client's attribute names vary between releases.
        status = api.sanitize_for_serialization(answer)["status"]
    assert not status.get("incomplete"), status.get("evaluationError")
    resource_rules = {
        (group, resource, verb, name)
        for rule in status.get("resourceRules", [])
        for group in rule.get("apiGroups") or [""]
        for resource in rule.get("resources") or []
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }
    non_resource_rules = {
        (url, verb)
        for rule in status.get("nonResourceRules", [])
        for url in rule["nonResourceURLs"]
        for verb in rule["verbs"]
    }
    return resource_rules, non_resource_rules


@pytest.mark.parametrize(
    ("service_account", "expected"),
    [("ckpt-operator", OPERATOR_RULES | METRICS_AUTH_RULES), ("ckpt-agent", AGENT_RULES),
     ("ckpt-api", METRICS_AUTH_RULES)],
)
@pytest.mark.parametrize("namespace", [NAMESPACE, CREDENTIALS_NAMESPACE, "default"])
def test_service_account_can_do_nothing_beyond_its_role(
    rbac: Cluster, service_account: str, expected: set, namespace: str
) -> None:
    # A ServiceAccount of deploy/'s namespace with no binding: what anyone authenticated, and
    # any ServiceAccount of ckpt-system, may do anyway (discovery, self reviews).
    baseline_resources, baseline_urls = rules_of(rbac, "ckpt-deploy-test-baseline", namespace)
    resources, urls = rules_of(rbac, service_account, namespace)
    granted = {(g, r, v) for g, r, v, name in resources - baseline_resources if name == "*"}
    if service_account == "ckpt-operator" and namespace == NAMESPACE:
        # Its Role here: the agent pod watch; no Secret of this namespace.
        expected = expected | OPERATOR_NAMESPACE_RULES
    if service_account == "ckpt-operator" and namespace == CREDENTIALS_NAMESPACE:
        # The storage credentials, and nothing else, here only.
        expected = expected | OPERATOR_STORAGE_RULES
    assert granted == expected
    named = OPERATOR_NAMED_RULES if service_account == "ckpt-operator" else set()
    assert {rule for rule in resources - baseline_resources if rule[3] != "*"} == named
    assert urls == baseline_urls
