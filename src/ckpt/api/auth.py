"""Bearer authentication of every `/v2` and `/ckpt` request, and what the token's role
allows.

Done as ASGI middleware rather than a route dependency so that it runs before anything
reads the request: an anonymous caller learns nothing (not even whether its body or path
would have been valid) and always gets 401.

Roles (`ckpt.api.tables.Role`): a `tenant` token has the contract on its own tenant, a
`reader` token only its reads; both are refused (403) when they name a tenant in
TENANT_HEADER, so that no client believes it acts elsewhere while it acts on its own. An
`operator` token acts on `/v2` only for the namespace tenant that header names, and is the
only one allowed on `/ckpt` (its extensions: `ckpt.api.admin`).

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
from ckpt.api.tables import Role
from ckpt.api.tenants import NamespaceTenants, valid_namespace
from ckpt.api.tokens import Caller, TokenResolver
from ckpt.contract.checkpoints_api import TENANT_HEADER

PROTECTED_PREFIX = "/v2/"
# ckpt's own extensions, outside the contract's paths (and its OpenAPI document).
ADMIN_PREFIX = "/ckpt/"
_TENANT_HEADER = TENANT_HEADER.lower().encode("latin-1")
_READS = frozenset({"GET", "HEAD"})

# Declared in the OpenAPI document for every protected path (see `openapi.build`); the
# middleware does the real check.
bearer_scheme = HTTPBearer(scheme_name="bearerAuth", auto_error=False)


def _bearer_token(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _header(scope: Scope, wanted: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def _is_under(path: str, prefix: str) -> bool:
    return (path + "/").startswith(prefix)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str
) -> None:
    await error_response(status, message, code)(scope, receive, send)


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
        admin = _is_under(path, ADMIN_PREFIX)
        if scope["type"] != "http" or not (admin or _is_under(path, PROTECTED_PREFIX)):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        caller = None
        if token is not None:
            resolver: TokenResolver = scope["app"].state.resolver
            caller = resolver.cached(token)
            if caller is None:
                address = _client_address(scope)
                wait = self.failed_lookup_limit.retry_after(address)
                if wait > 0:
                    await _too_many(scope, receive, send, wait, "failed authentications")
                    return
                caller = await anyio.to_thread.run_sync(resolver.resolve, token)
                if caller is None:
                    self.failed_lookup_limit.take(address)
        if caller is None:
            error = unauthorized(
                "missing or malformed bearer token" if token is None else "invalid token"
            )
            response = error_response(401, error.message, error.code, headers=error.headers)
            await response(scope, receive, send)
            return
        # Keyed by the token's own tenant: the operator's requests for many namespaces share
        # one bucket, and a namespace's readers cannot drain the operator's.
        wait = self.tenant_limit.take(caller.tenant_id)
        if wait > 0:
            await _too_many(scope, receive, send, wait, "requests for this tenant")
            return
        acting = await self._acting_tenant(scope, receive, send, caller, admin)
        if acting is None:
            return
        state = scope.setdefault("state", {})
        state["tenant_id"] = acting
        state["caller"] = caller
        await self.app(scope, receive, send)

    async def _acting_tenant(
        self, scope: Scope, receive: Receive, send: Send, caller: Caller, admin: bool
    ) -> int | None:
        """The tenant this request acts for; None once a refusal has been sent."""
        named = _header(scope, _TENANT_HEADER)
        if caller.role is not Role.operator:
            if admin:
                await _refuse(scope, receive, send, 403, "not an operator token", "forbidden")
                return None
            if named is not None:
                await _refuse(
                    scope, receive, send, 403,
                    f"this token acts for its own tenant only; send no {TENANT_HEADER}",
                    "forbidden",
                )
                return None
            if caller.role is Role.reader and scope.get("method") not in _READS:
                await _refuse(scope, receive, send, 403, "a read-only token", "read_only")
                return None
            return caller.tenant_id
        if admin:
            return caller.tenant_id
        if named is None:
            await _refuse(
                scope, receive, send, 400,
                f"an operator token names the namespace it acts for in {TENANT_HEADER}",
                "tenant_required",
            )
            return None
        if not valid_namespace(named):
            await _refuse(
                scope, receive, send, 400,
                f"{TENANT_HEADER}: not a namespace name", "validation_error",
            )
            return None
        tenants: NamespaceTenants = scope["app"].state.namespaces
        found = tenants.cached(named)
        if found is None:
            found = await anyio.to_thread.run_sync(tenants.resolve, named)
        return found


def tenant_of(request: Request) -> int:
    """The tenant the request acts for, as the middleware decided it."""
    tenant_id = request.scope.get("state", {}).get("tenant_id")
    if tenant_id is None:
        # Only reachable if a protected route were mounted outside PROTECTED_PREFIX.
        raise unauthorized("missing or malformed bearer token")
    return int(tenant_id)


def caller_of(request: Request) -> Caller:
    """The token's own tenant and role, as the middleware authenticated them."""
    caller = request.scope.get("state", {}).get("caller")
    if not isinstance(caller, Caller):
        raise unauthorized("missing or malformed bearer token")
    return caller
