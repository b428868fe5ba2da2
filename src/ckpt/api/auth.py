"""Bearer authentication of every `/v2` request.

Done as ASGI middleware rather than a route dependency so that it runs before anything
reads the request: an anonymous caller learns nothing (not even whether its body or path
would have been valid) and always gets 401.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response, unauthorized
from .tokens import TokenResolver

PROTECTED_PREFIX = "/v2/"

# Declared in the OpenAPI document for every protected path (see `openapi.build`); the
# middleware does the real check.
bearer_scheme = HTTPBearer(scheme_name="bearerAuth", auto_error=False)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
                tenant_id = await anyio.to_thread.run_sync(resolver.resolve, token)
        if tenant_id is None:
            error = unauthorized(
                "missing or malformed bearer token" if token is None else "invalid token"
            )
            response = error_response(401, error.message, error.code, headers=error.headers)
            await response(scope, receive, send)
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
