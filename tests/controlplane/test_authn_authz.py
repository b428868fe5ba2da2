"""RBAC and ServiceAccount token authentication on the real kube-apiserver."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from harness.controlplane import Cluster

# Needs the test apiserver.
pytestmark = pytest.mark.e2e


def _list_pods(kube: Cluster, token: str, namespace: str) -> int:
    with kube.api_client(token=token) as api:
        try:
            client.CoreV1Api(api).list_namespaced_pod(namespace)
        except client.ApiException as exc:
            return int(exc.status)
    return 200


def test_service_account_without_a_role_is_forbidden_and_with_one_allowed(kube: Cluster) -> None:
    namespace = f"rbac-{uuid.uuid4().hex[:6]}"
    token = kube.service_account_token(namespace, "reader")
    assert _list_pods(kube, token, namespace) == 403

    kube.kubectl("-n", namespace, "create", "role", "pod-reader",
                 "--verb=get,list,watch", "--resource=pods")
    kube.kubectl("-n", namespace, "create", "rolebinding", "reader-binding",
                 "--role=pod-reader", f"--serviceaccount={namespace}:reader")
    assert _list_pods(kube, token, namespace) == 200
    # The Role is namespaced: another namespace stays closed.
    assert _list_pods(kube, token, "default") == 403


def test_a_garbage_token_is_unauthorized(kube: Cluster) -> None:
    assert _list_pods(kube, "not-a-token", "default") == 401


def _review(kube: Cluster, token: str) -> client.V1TokenReviewStatus:
    with kube.api_client() as api:
        review = client.AuthenticationV1Api(api).create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        )
    return review.status


def test_token_review_accepts_a_service_account_token(kube: Cluster) -> None:
    token = kube.service_account_token("default", "reviewed")
    status = _review(kube, token)
    assert status.authenticated is True
    assert status.user.username == "system:serviceaccount:default:reviewed"
    assert "system:serviceaccounts:default" in status.user.groups


@pytest.mark.parametrize("mangle", ["signature", "payload"])
def test_token_review_rejects_a_forged_token(kube: Cluster, mangle: str) -> None:
    token = kube.service_account_token("default", "forged")
    header, payload, signature = token.split(".")
    if mangle == "signature":
        tail = "AAAA" if signature[-4:] != "AAAA" else "BBBB"
        forged = ".".join([header, payload, signature[:-4] + tail])
    else:
        # Same signature, but claims to be someone else: the signature no longer matches.
        import base64
        import json

        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "system:serviceaccount:kube-system:admin"
        forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        forged = ".".join([header, forged_payload, signature])
    status = _review(kube, forged)
    assert not status.authenticated
    assert status.user is None or not status.user.username
