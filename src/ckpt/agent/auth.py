"""Bearer authentication: the apiserver's TokenReview decides who the caller is.

The agent trusts no token by itself: each one is sent to the apiserver as a TokenReview made
with the agent's own credentials, and only the configured identities (the operator's
ServiceAccount) may call. Tokens are never logged nor kept: the cache is keyed by a hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ckpt.agent.errors import AgentError

log = logging.getLogger(__name__)

# An apiserver that does not answer within this is treated as unavailable (503), so a
# request never hangs on authentication.
_REVIEW_TIMEOUT_S = 10.0
_CACHE_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Review:
    authenticated: bool
    username: str = ""


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """The agent's own apiserver client: a kubeconfig when given, in-cluster credentials else."""
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class TokenReviewer:
    """Asks the apiserver who a token belongs to (authentication.k8s.io/v1 TokenReview)."""

    def __init__(self, api: client.ApiClient, audiences: list[str]) -> None:
        self._api = client.AuthenticationV1Api(api)
        self._audiences = audiences or None

    def _review_blocking(self, token: str) -> Review:
        body = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=self._audiences)
        )
        answer = self._api.create_token_review(body, _request_timeout=_REVIEW_TIMEOUT_S)
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return Review(authenticated=False)
        return Review(authenticated=True, username=status.user.username or "")

    async def review(self, token: str) -> Review:
        # The official client is synchronous; a thread keeps the event loop serving.
        return await asyncio.to_thread(self._review_blocking, token)


class Authenticator:
    """Turns an `Authorization` header into an allowed identity, or an error to answer with."""

    def __init__(
        self, reviewer: TokenReviewer, allowed: list[str], cache_seconds: float
    ) -> None:
        self._reviewer = reviewer
        self._allowed = frozenset(allowed)
        self._cache_seconds = cache_seconds
        # sha256(token) -> (username, expiry on the monotonic clock); authenticated only.
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> str:
        token = _bearer_token(authorization)
        username = await self._username(token)
        if username not in self._allowed:
            log.warning("refused caller %s: not an allowed identity", username)
            raise AgentError(
                403, "forbidden", f"identity {username!r} may not call the node agent"
            )
        return username

    async def _username(self, token: str) -> str:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            review = await self._reviewer.review(token)
        except ApiException as exc:
            # Typically the agent's own RBAC lacks `tokenreviews: create`; the caller is not
            # at fault, so this is not a 401.
            log.error("TokenReview refused by the apiserver: HTTP %s %s", exc.status, exc.reason)
            raise AgentError(
                503, "auth_unavailable", "cannot verify the token: the apiserver refused the review"
            ) from None
        except Exception as exc:
            log.error("TokenReview failed: %s", type(exc).__name__)
            raise AgentError(
                503, "auth_unavailable", "cannot verify the token: the apiserver is unreachable"
            ) from None
        if not review.authenticated:
            raise AgentError(401, "unauthenticated", "the bearer token is not valid")
        if self._cache_seconds > 0:
            self._remember(key, review.username, now + self._cache_seconds)
        return review.username

    def _remember(self, key: str, username: str, expiry: float) -> None:
        self._cache[key] = (username, expiry)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AgentError(401, "unauthenticated", "missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AgentError(401, "unauthenticated", "the Authorization header is not a Bearer token")
    return token
