"""`/metrics` for authorized scrapers only (ckpt.contract.scrape_auth).

Middleware, like the tenants' bearer authentication, so that the answer is decided before the
route runs; the tenants' tokens play no part here: a scraper is a Kubernetes identity, not a
tenant.
"""

from __future__ import annotations

import math

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from ckpt.api.errors import error_response
from ckpt.contract.scrape_auth import METRICS_PATH, ScrapeGuard


class MetricsGuardMiddleware:
    def __init__(self, app: ASGIApp, guard: ScrapeGuard | None) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "/metrics/" only redirects to /metrics, but nothing under the path passes unchecked.
        path = str(scope.get("path", "")).rstrip("/")
        if self.guard is None or scope["type"] != "http" or path != METRICS_PATH:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        verdict = await anyio.to_thread.run_sync(self.guard.check, authorization)
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        headers = {}
        if verdict.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="ckpt-api metrics"'
        if verdict.retry_after > 0:
            headers["Retry-After"] = str(max(1, math.ceil(verdict.retry_after)))
        response = error_response(verdict.status, verdict.message, verdict.code, headers=headers)
        await response(scope, receive, send)
