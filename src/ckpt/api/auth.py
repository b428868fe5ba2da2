"""Bearer authentication of every `/v2` request.

Done as ASGI middleware rather than a route dependency so that it runs before anything
reads the request: an anonymous caller learns nothing (not even whether its body or path
would have been valid) and always gets 401.

Rate limits live here too, since this is where the caller becomes known: each tenant gets a
token bucket (429 + Retry-After past it), and each client address a bucket of failed token
lookups, so that guessing tokens cannot turn into unbounded database queries: once an
address's bucket is empty its uncached tokens get 429 without a lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio.to_thread
from fastapi import Request
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from ckpt.api.errors import error_response, unauthorized
from ckpt.api.ratelimit import RateLimiter, retry_after_header
from ckpt.api.tokens import TokenResolver

PROTECTED_PREFIX = "/v2/"

# Declared in the OpenAPI document for every protected path (see `openapi.build`); the
# middleware does the real check.
bearer_scheme = HTTPBearer(scheme_name="bearerAuth", auto_error=False)


def _bearer_token(scope: Scope) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _too_many(scope: Scope, receive: Receive, send: Send, wait: float, what: str) -> None:
    response = error_response(
        429,
        f"too many {what}; retry later",
        "rate_limited",
        headers={"Retry-After": retry_after_header(wait)},
    )
    await response(scope, receive, send)


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        tenant_limit: RateLimiter | None = None,
        failed_lookup_limit: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.tenant_limit = tenant_limit or RateLimiter(0, 1)
        self.failed_lookup_limit = failed_lookup_limit or RateLimiter(0, 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path + "/").startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        tenant_id = None
        if token is not None:
            resolver: TokenResolver = scope["app"].state.resolver
            tenant_id = resolver.cached(token)
            if tenant_id is None:
                address = _client_address(scope)
                wait = self.failed_lookup_limit.retry_after(address)
                if wait > 0:
                    await _too_many(scope, receive, send, wait, "failed authentications")
                    return
                tenant_id = await anyio.to_thread.run_sync(resolver.resolve, token)
                if tenant_id is None:
                    self.failed_lookup_limit.take(address)
        if tenant_id is None:
            error = unauthorized(
                "missing or malformed bearer token" if token is None else "invalid token"
            )
            response = error_response(401, error.message, error.code, headers=error.headers)
            await response(scope, receive, send)
            return
        wait = self.tenant_limit.take(tenant_id)
        if wait > 0:
            await _too_many(scope, receive, send, wait, "requests for this tenant")
            return
        scope.setdefault("state", {})["tenant_id"] = tenant_id
        await self.app(scope, receive, send)


def tenant_of(request: Request) -> int:
    """The caller's tenant, as the middleware authenticated it."""
    tenant_id = request.scope.get("state", {}).get("tenant_id")
    if tenant_id is None:
        # Only reachable if a protected route were mounted outside PROTECTED_PREFIX.
        raise unauthorized("missing or malformed bearer token")
    return int(tenant_id)
