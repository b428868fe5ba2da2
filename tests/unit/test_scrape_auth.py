"""Who may read /metrics (ckpt.contract.scrape_auth): the decision from fake TokenReview and
SubjectAccessReview answers, its cache and its limit on reviews; the review bodies sent to
the apiserver; the operator's metrics port (ckpt.operator.metrics_server) over TLS on
loopback with a throwaway certificate."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter

from ckpt.contract.scrape_auth import Identity, KubeReviewer, ScrapeGuard
from ckpt.operator.metrics_server import start_metrics_server, tls_context
from harness.cluster.pki import KeyPair, LocalPki

PROMETHEUS = Identity(
    "system:serviceaccount:monitoring:prometheus-k8s", uid="u-1",
    groups=("system:serviceaccounts", "system:serviceaccounts:monitoring"),
    extra={"authentication.kubernetes.io/pod-name": ("prometheus-0",)},
)
TENANT = Identity("system:serviceaccount:team-a:default", uid="u-2")


@dataclass
class FakeReviewer:
    """Answers as the apiserver would: tokens it knows, and who may get which URL."""

    tokens: dict[str, Identity] = field(default_factory=lambda: {
        "prometheus-token": PROMETHEUS, "tenant-token": TENANT})
    allowed: set[str] = field(default_factory=lambda: {PROMETHEUS.username})
    failing: Exception | None = None
    reviews: list[str] = field(default_factory=list)
    access: list[tuple[str, str]] = field(default_factory=list)

    def authenticate(self, token: str) -> Identity | None:
        self.reviews.append(token)
        if self.failing is not None:
            raise self.failing
        return self.tokens.get(token)

    def may_get(self, identity: Identity, path: str) -> bool:
        self.access.append((identity.username, path))
        return identity.username in self.allowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guard(reviewer: FakeReviewer, clock: Clock | None = None, **kwargs: Any) -> ScrapeGuard:
    return ScrapeGuard(reviewer, clock=clock or Clock(), **kwargs)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==",
                                    "prometheus-token"])
def test_no_bearer_token_is_401_without_asking_the_apiserver(header: str | None) -> None:
    reviewer = FakeReviewer()
    verdict = _guard(reviewer).check(header)
    assert (verdict.status, verdict.code) == (401, "unauthorized")
    assert reviewer.reviews == []


def test_only_an_identity_rbac_allows_to_get_metrics_reads_them() -> None:
    reviewer = FakeReviewer()
    guard = _guard(reviewer)
    assert guard.check("Bearer made-up").status == 401
    refused = guard.check("Bearer tenant-token")
    assert (refused.status, refused.code, refused.username) == (403, "forbidden", TENANT.username)
    assert "nonResourceURLs" in refused.message
    allowed = guard.check("bearer prometheus-token")  # the scheme is case-insensitive
    assert allowed.allowed and allowed.username == PROMETHEUS.username
    # The access review asks about the path served, for the identity the token belongs to.
    assert reviewer.access == [(TENANT.username, "/metrics"), (PROMETHEUS.username, "/metrics")]


def test_answers_are_cached_briefly_refusals_for_less() -> None:
    reviewer, clock = FakeReviewer(), Clock()
    guard = _guard(reviewer, clock, allowed_cache_seconds=30, refused_cache_seconds=5)
    for _ in range(3):
        assert guard.check("Bearer prometheus-token").allowed
        assert guard.check("Bearer tenant-token").status == 403
    assert reviewer.reviews == ["prometheus-token", "tenant-token"]
    clock.now += 6
    assert guard.check("Bearer tenant-token").status == 403
    assert guard.check("Bearer prometheus-token").allowed
    assert reviewer.reviews == ["prometheus-token", "tenant-token", "tenant-token"]
    # A binding removed since: refused once the allowed answer has expired.
    reviewer.allowed.clear()
    clock.now += 25
    assert guard.check("Bearer prometheus-token").status == 403


def test_an_unreachable_or_refusing_apiserver_is_503_and_not_cached() -> None:
    reviewer = FakeReviewer(failing=client.ApiException(status=403, reason="Forbidden"))
    guard = _guard(reviewer)
    for _ in range(2):
        verdict = guard.check("Bearer prometheus-token")
        assert (verdict.status, verdict.code) == (503, "auth_unavailable")
    reviewer.failing = TimeoutError()
    assert guard.check("Bearer prometheus-token").status == 503
    reviewer.failing = None
    assert guard.check("Bearer prometheus-token").allowed
    assert len(reviewer.reviews) == 4


def test_made_up_tokens_cannot_flood_the_apiserver_and_cached_scrapers_go_on() -> None:
    reviewer, clock = FakeReviewer(), Clock()
    guard = _guard(reviewer, clock, reviews_per_second=2, review_burst=3)
    assert guard.check("Bearer prometheus-token").allowed
    answers = [guard.check(f"Bearer guess-{i}") for i in range(10)]
    assert [a.status for a in answers] == [401, 401] + [429] * 8
    assert answers[-1].retry_after == pytest.approx(0.5)
    assert len(reviewer.reviews) == 3
    # Prometheus's answer is cached: a flood does not shut it out.
    assert guard.check("Bearer prometheus-token").allowed
    clock.now += 1
    assert guard.check("Bearer guess-x").status == 401


def test_tokens_are_kept_only_as_hashes() -> None:
    guard = _guard(FakeReviewer())
    guard.check("Bearer prometheus-token")
    assert "prometheus-token" not in repr(guard._cache)
    assert len(guard._cache) == 1


class _Recorder:
    def __init__(self, answer: Any) -> None:
        self.answer, self.bodies = answer, []  # type: ignore[var-annotated]

    def __call__(self, body: Any, **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"] > 0
        self.bodies.append(body)
        return self.answer


def test_the_apiserver_is_asked_with_the_default_audience_and_the_whole_identity() -> None:
    reviewer = KubeReviewer(client.ApiClient(client.Configuration()))
    user = client.V1UserInfo(username=PROMETHEUS.username, uid="u-1",
                             groups=list(PROMETHEUS.groups),
                             extra={"authentication.kubernetes.io/pod-name": ["prometheus-0"]})
    token_review = _Recorder(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token="t"),
        status=client.V1TokenReviewStatus(authenticated=True, user=user)))
    access_review = _Recorder(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user="u"),
        status=client.V1SubjectAccessReviewStatus(allowed=True)))
    reviewer._authn.create_token_review = token_review  # type: ignore[method-assign]
    reviewer._authz.create_subject_access_review = access_review  # type: ignore[method-assign]

    identity = reviewer.authenticate("prometheus-token")
    assert identity == PROMETHEUS
    [asked] = token_review.bodies
    # No audiences: the scraper's own ServiceAccount token, as its pod mounts it.
    assert asked.spec.token == "prometheus-token" and not asked.spec.audiences
    assert reviewer.may_get(identity, "/metrics")
    [spec] = [b.spec for b in access_review.bodies]
    assert (spec.user, spec.uid, spec.groups) == (
        PROMETHEUS.username, "u-1", list(PROMETHEUS.groups))
    assert spec.extra == {"authentication.kubernetes.io/pod-name": ["prometheus-0"]}
    assert (spec.non_resource_attributes.path, spec.non_resource_attributes.verb) == (
        "/metrics", "get")
    assert spec.resource_attributes is None

    token_review.answer = client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token="t"),
        status=client.V1TokenReviewStatus(authenticated=False, error="invalid"))
    assert reviewer.authenticate("other") is None
    access_review.answer = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user="u"),
        status=client.V1SubjectAccessReviewStatus(allowed=False, reason="no binding"))
    assert not reviewer.may_get(TENANT, "/metrics")


# The operator's metrics port, as deploy/ serves it: TLS with its own certificate.

SERVER_NAME = "ckpt-operator.ckpt-system.svc"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalPki, KeyPair, LocalPki]:
    """A throwaway CA with a serving certificate for the operator's name (no IP: clients
    check the name), and another CA that never signed it."""
    pki = LocalPki(tmp_path_factory.mktemp("pki"), days=1)
    serving = pki.issue("operator", "ckpt-operator", dns_names=[SERVER_NAME], server=True)
    return pki, serving, LocalPki(tmp_path_factory.mktemp("other-pki"), days=1)


@pytest.fixture
def operator_metrics(
    certificates: tuple[LocalPki, KeyPair, LocalPki],
) -> Iterator[tuple[str, FakeReviewer]]:
    _, serving, _ = certificates
    registry = CollectorRegistry()
    Counter("ckpt_operator_test_things", "Things.", registry=registry).inc()
    reviewer = FakeReviewer()
    server = start_metrics_server("127.0.0.1", 0, guard=ScrapeGuard(reviewer),
                                  tls=tls_context(serving.cert, serving.key), registry=registry)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", reviewer
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str, ca: Path, token: str | None = None, path: str = "/metrics",
         server_name: str = SERVER_NAME) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as http:
        return http.get(url + path, headers=headers, extensions={"sni_hostname": server_name})


def test_operator_metrics_answer_only_authorized_scrapers_over_verified_tls(
    operator_metrics: tuple[str, FakeReviewer], certificates: tuple[LocalPki, KeyPair, LocalPki],
) -> None:
    url, reviewer = operator_metrics
    pki, _, _ = certificates
    ca = pki.ca.cert
    anonymous = _get(url, ca)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["code"] == "unauthorized"
    assert "ckpt_operator_test_things" not in anonymous.text
    assert _get(url, ca, "made-up").status_code == 401
    assert _get(url, ca, "tenant-token").status_code == 403
    allowed = _get(url, ca, "prometheus-token")
    assert allowed.status_code == 200
    assert "ckpt_operator_test_things_total 1.0" in allowed.text
    # Only /metrics is served (prometheus_client alone serves its registry at any path).
    assert _get(url, ca, "prometheus-token", path="/").status_code == 404
    assert _get(url, ca, "prometheus-token", path="/debug").status_code == 404
    assert reviewer.reviews == ["made-up", "tenant-token", "prometheus-token"]


def test_operator_metrics_refuse_plain_http_and_clients_that_do_not_trust_them(
    operator_metrics: tuple[str, FakeReviewer], certificates: tuple[LocalPki, KeyPair, LocalPki],
) -> None:
    url, reviewer = operator_metrics
    pki, _, other = certificates
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/metrics", timeout=10,
                  headers={"Authorization": "Bearer prometheus-token"})
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url, other.ensure_ca().cert, "prometheus-token")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url, pki.ca.cert, "prometheus-token", server_name="ckpt-api.ckpt-system.svc")
    # None of them got as far as showing a token.
    assert reviewer.reviews == []
    # The server goes on serving after the failed handshakes.
    assert _get(url, pki.ca.cert, "prometheus-token").status_code == 200


def test_a_silent_connection_stalls_no_other_scrape(
    operator_metrics: tuple[str, FakeReviewer], certificates: tuple[LocalPki, KeyPair, LocalPki],
) -> None:
    url, _ = operator_metrics
    pki, _, _ = certificates
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)):  # never says a word
        assert _get(url, pki.ca.cert, "prometheus-token").status_code == 200


def test_without_a_guard_metrics_are_open_as_configured(
    certificates: tuple[LocalPki, KeyPair, LocalPki],
) -> None:
    registry = CollectorRegistry()
    Counter("ckpt_operator_open_things", "Things.", registry=registry).inc()
    server = start_metrics_server("127.0.0.1", 0, guard=None, registry=registry)
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200 and "ckpt_operator_open_things_total" in answer.text
