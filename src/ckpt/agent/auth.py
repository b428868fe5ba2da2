"""Bearer authentication: the apiserver's TokenReview decides who the caller is.

The agent trusts no token by itself: each one is sent to the apiserver as a TokenReview made
with the agent's own credentials, and only the configured identities (the operator's
ServiceAccount) may call. Tokens are never logged nor kept: the cache is keyed by a hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from starlette.exceptions import HTTPException

from ckpt.agent.errors import AgentError

log = logging.getLogger(__name__)
METRICS_PATH = "/metrics"

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
        api: client.ApiClient = config.new_client_from_config(
            config_file=str(kubeconfig), persist_config=False
        )
        return api
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class TokenReviewer:
    """Asks the apiserver who a token belongs to (authentication.k8s.io/v1 TokenReview)."""

    def __init__(self, api: client.ApiClient, audiences: list[str]) -> None:
        if not audiences:
            # Without audiences the apiserver checks tokens against its own (default)
            # audience, so every token of the operator's ServiceAccount (the one in any of
            # its pods, usable against the apiserver too) would be accepted.
            raise ValueError("the agent needs at least one token audience")
        self._api = client.AuthenticationV1Api(api)
        self._audiences = list(audiences)

    def _review_blocking(self, token: str) -> Review:
        body = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=self._audiences)
        )
        answer = self._api.create_token_review(body, _request_timeout=_REVIEW_TIMEOUT_S)
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return Review(authenticated=False)
        # The apiserver answers with the audiences the token is valid for among those asked;
        # an authenticator that ignores audiences answers none, and that is no proof.
        if not set(status.audiences or ()) & set(self._audiences):
            log.warning("refused a token without the agent's audience")
            return Review(authenticated=False)
        return Review(authenticated=True, username=status.user.username or "")

    async def review(self, token: str) -> Review:
        # The official client is synchronous; a thread keeps the event loop serving.
        return await asyncio.to_thread(self._review_blocking, token)


class Authenticator:
    """Turns an `Authorization` header into an allowed identity, or an error to answer with."""

    def __init__(
        self,
        reviewer: TokenReviewer,
        allowed: list[str],
        cache_seconds: float,
        metrics_only: list[str] | None = None,
    ) -> None:
        self._reviewer = reviewer
        self._allowed = frozenset(allowed)
        # Scrapers: /metrics and nothing else (an allowed identity could dump any pod here).
        self._metrics_only = frozenset(metrics_only or ()) - self._allowed
        self._cache_seconds = cache_seconds
        # sha256(token) -> (username, expiry on the monotonic clock); authenticated only.
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def authenticate(self, authorization: str | None, path: str = "") -> str:
        token = _bearer_token(authorization)
        username = await self._username(token)
        if username in self._metrics_only and path == METRICS_PATH:
            return username
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


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthFirst:
    """ASGI middleware: the bearer token is checked before one byte of the body is read, and
    the body is then read with a size limit.

    FastAPI parses a JSON body before a route's dependencies run, so a dependency cannot keep
    an unauthenticated caller from making the agent buffer (and parse) any amount of data: a
    150 MB body grew the agent from 70 MB to 531 MB before its 401. Here the answer to a
    caller without a valid token is sent without reading the body; uvicorn stops reading the
    socket once its small buffer is full and closes the connection after the answer.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Callable[[], Authenticator],
        max_body_bytes: int,
        open_paths: frozenset[str] = frozenset({"/healthz"}),
    ) -> None:
        self._app = app
        self._authenticator = authenticator
        self._max = max_body_bytes
        self._open = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        authorization = headers.get("authorization")
        try:
            caller = await self._authenticator().authenticate(
                authorization.decode("latin-1") if authorization else None, scope["path"]
            )
        except AgentError as exc:
            await _answer(send, exc.status, exc.code, exc.message, close=True)
            return
        scope.setdefault("state", {})["caller"] = caller
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max):
            await _answer(send, 413, "too_large",
                          f"request body over the limit of {self._max} bytes", close=True)
            return
        received = 0

        async def limited_receive() -> Message:
            # A chunked body (no Content-Length) is counted as it arrives. An HTTPException
            # is what FastAPI lets through from reading a body (it turns others into 400).
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise HTTPException(413, f"request body over the limit of {self._max} bytes")
            return message

        await self._app(scope, limited_receive, send)


async def _answer(send: Send, status: int, code: str, message: str, *, close: bool) -> None:
    body = json.dumps({"message": message, "code": code}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        # The body was not read: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="ckpt-agent"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
