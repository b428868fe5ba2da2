"""Who may read a service's Prometheus metrics: the contract between ckpt's servers and the
scrapers of a cluster's monitoring.

A scraper presents a bearer token (a Prometheus ServiceAccount's own); the apiserver says whose
it is (TokenReview) and whether that identity may `get` the non-resource URL `/metrics`
(SubjectAccessReview), the way kube-rbac-proxy and controller-runtime's metrics filter decide.
So an admin grants scraping with RBAC alone (ClusterRole `ckpt-metrics-reader`, or any role
with `nonResourceURLs: [/metrics]`, which kube-prometheus already gives its Prometheus), and
revokes it the same way; no ckpt setting names a scraper.

Answers are cached by the token's hash for a short while, since Prometheus scrapes every few
seconds with the same token; reviews of uncached tokens are rate limited so that a flood of
made-up tokens cannot turn into a flood of reviews on the apiserver. Tokens are never logged
nor kept.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kubernetes import client, config

__all__ = [
    "METRICS_PATH",
    "Identity",
    "KubeReviewer",
    "Reviewer",
    "ScrapeGuard",
    "Verdict",
    "kube_api_client",
]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# A revoked binding or token stops working within this; short against a scrape interval of
# 15 to 60 s, so a steady scraper costs about one review pair per half minute.
ALLOWED_CACHE_SECONDS = 30.0
# Refusals are remembered for less: a scraper whose RBAC was just fixed waits only this long.
REFUSED_CACHE_SECONDS = 5.0
# Uncached reviews allowed per second on average, and at once; beyond them 429.
REVIEWS_PER_SECOND = 10.0
REVIEW_BURST = 20
_CACHE_MAX_ENTRIES = 1024
# An apiserver that does not answer within this counts as unavailable (503), so a scrape
# never hangs on authentication.
_REVIEW_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Identity:
    """The user a TokenReview found, as a SubjectAccessReview must name it."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The answer to one scrape: 200 to serve it, else the status, code and message to send."""

    status: int
    code: str = ""
    message: str = ""
    username: str = ""
    # Seconds a 429 asks the scraper to wait.
    retry_after: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.status == 200


class Reviewer(Protocol):
    """The apiserver's two reviews; blocking calls (the guard runs them in a thread)."""

    def authenticate(self, token: str) -> Identity | None: ...

    def may_get(self, identity: Identity, path: str) -> bool: ...


def kube_api_client() -> client.ApiClient:
    """In-cluster credentials in a pod, else the kubeconfig ($KUBECONFIG): the service's own
    identity, which needs `create` on tokenreviews and subjectaccessreviews."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise RuntimeError(
                "metrics authentication needs the apiserver (in-cluster credentials or a "
                f"kubeconfig) to review scrapers' tokens: {exc}"
            ) from exc
    return client.ApiClient(configuration)


class KubeReviewer:
    """TokenReview (the apiserver's default audience: the scraper's ServiceAccount token as
    mounted in its pod) and SubjectAccessReview (`get` on a non-resource URL)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    def authenticate(self, token: str) -> Identity | None:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        answer = self._authn.create_token_review(body, _request_timeout=_REVIEW_TIMEOUT_S)
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Identity(
            username=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra={k: tuple(v or ()) for k, v in (user.extra or {}).items()},
        )

    def may_get(self, identity: Identity, path: str) -> bool:
        body = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=identity.username,
                uid=identity.uid or None,
                groups=list(identity.groups) or None,
                extra={k: list(v) for k, v in identity.extra.items()} or None,
                non_resource_attributes=client.V1NonResourceAttributes(path=path, verb="get"),
            )
        )
        answer = self._authz.create_subject_access_review(
            body, _request_timeout=_REVIEW_TIMEOUT_S
        )
        return bool(answer.status is not None and answer.status.allowed)


class ScrapeGuard:
    """Decides one scrape from its `Authorization` header. Thread-safe; `check` blocks on
    the apiserver for uncached tokens, so async servers call it in a worker thread."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        path: str = METRICS_PATH,
        allowed_cache_seconds: float = ALLOWED_CACHE_SECONDS,
        refused_cache_seconds: float = REFUSED_CACHE_SECONDS,
        reviews_per_second: float = REVIEWS_PER_SECOND,
        review_burst: int = REVIEW_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviewer = reviewer
        self._path = path
        self._ttl = {True: allowed_cache_seconds, False: refused_cache_seconds}
        self._rate = reviews_per_second
        self._burst = float(review_burst)
        self._tokens = float(review_burst)
        self._clock = clock
        self._refilled = clock()
        self._lock = threading.Lock()
        # sha256(token) -> (verdict, expiry on `clock`)
        self._cache: OrderedDict[str, tuple[Verdict, float]] = OrderedDict()

    def check(self, authorization: str | None) -> Verdict:
        token = _bearer_token(authorization)
        if token is None:
            return _unauthenticated("a bearer token is required to read metrics")
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
            wait = self._take(now)
        if wait > 0:
            return Verdict(429, "rate_limited", "too many token reviews; retry later",
                           retry_after=wait)
        verdict = self._review(token)
        if verdict.status in (200, 401, 403):
            with self._lock:
                self._remember(key, verdict, self._clock() + self._ttl[verdict.allowed])
        return verdict

    def _review(self, token: str) -> Verdict:
        try:
            identity = self._reviewer.authenticate(token)
            if identity is None:
                return _unauthenticated("the bearer token is not valid")
            if not self._reviewer.may_get(identity, self._path):
                log.warning("refused a scrape of %s by %s", self._path, identity.username)
                return Verdict(
                    403, "forbidden",
                    f"{identity.username!r} may not get {self._path} (RBAC: nonResourceURLs)",
                    identity.username,
                )
            return Verdict(200, username=identity.username)
        except client.ApiException as exc:
            # Typically the service's own RBAC lacks the review rights; not the scraper's fault.
            log.error("token or access review refused: HTTP %s %s", exc.status, exc.reason)
            return Verdict(503, "auth_unavailable", "cannot verify the token: review refused")
        except Exception as exc:
            log.error("token or access review failed: %s", type(exc).__name__)
            return Verdict(
                503, "auth_unavailable", "cannot verify the token: apiserver unreachable"
            )

    def _take(self, now: float) -> float:
        """Takes one review from the bucket: 0, or the seconds until one is there."""
        if self._rate <= 0:
            return 0.0
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    def _remember(self, key: str, verdict: Verdict, expiry: float) -> None:
        self._cache[key] = (verdict, expiry)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)


def _unauthenticated(message: str) -> Verdict:
    return Verdict(401, "unauthorized", message)


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
