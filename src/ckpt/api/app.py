"""The FastAPI application of the checkpoints API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from ckpt.api import errors, migrate, openapi
from ckpt.api.admin import admin
from ckpt.api.auth import BearerAuthMiddleware
from ckpt.api.body import BodyDecodingMiddleware, BodyGateMiddleware
from ckpt.api.cleanup import run_periodically, run_wal_checkpoints
from ckpt.api.db import Database, is_sqlite
from ckpt.api.metrics import ApiMetrics, MetricsMiddleware
from ckpt.api.ratelimit import RateLimiter
from ckpt.api.routes import ops, router
from ckpt.api.scrape import MetricsGuardMiddleware
from ckpt.api.service import CheckpointService
from ckpt.api.settings import ApiSettings
from ckpt.api.tenants import NamespaceTenants
from ckpt.api.tokens import TokenResolver
from ckpt.contract.scrape_auth import KubeReviewer, ScrapeGuard, kube_api_client

log = logging.getLogger(__name__)

# Often enough that the WAL stays a few MB under sustained writes; an idle checkpoint is a
# no-op.
WAL_CHECKPOINT_INTERVAL_SECONDS = 1.0


def create_app(
    settings: ApiSettings | None = None, scrape_guard: ScrapeGuard | None = None
) -> FastAPI:
    """`scrape_guard` decides who reads /metrics; by default the apiserver's reviews when
    `metrics_auth` is kubernetes (failing here, at start, without credentials for them)."""
    settings = settings or ApiSettings()
    metrics = ApiMetrics()
    if scrape_guard is None and settings.metrics_auth == "kubernetes":
        scrape_guard = ScrapeGuard(KubeReviewer(kube_api_client()))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, settings, background_wal_checkpoints=True)
        try:
            await anyio.to_thread.run_sync(migrate.upgrade, db.engine)
            app.state.db = db
            app.state.service = CheckpointService(db)
            app.state.resolver = TokenResolver(db, settings.token_cache_seconds)
            app.state.namespaces = NamespaceTenants(db)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(
                    run_periodically,
                    db,
                    settings.deprecated_grace_seconds,
                    settings.cleanup_interval_seconds,
                )
                if is_sqlite(db.engine):
                    tasks.start_soon(run_wal_checkpoints, db, WAL_CHECKPOINT_INTERVAL_SECONDS)
                yield
                tasks.cancel_scope.cancel()
        finally:
            db.dispose()

    app = FastAPI(
        title="ckpt checkpoints API",
        version="2",
        description="Records of pod checkpoints (Cedana-compatible v2 checkpoints API).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(router)
    app.include_router(ops)
    app.include_router(admin)
    # Starlette wraps in reverse order, so requests pass: metrics (sees every response) ->
    # the scrapers' guard (/metrics only) -> body gate (headers only: declared size, coding)
    # -> auth and rate limits -> body decoding (reads the body, decoded and bounded) ->
    # routes. No body byte is read before auth.
    app.add_middleware(
        BodyDecodingMiddleware,
        max_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(
        BearerAuthMiddleware,
        tenant_limit=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        failed_lookup_limit=RateLimiter(
            settings.unknown_token_lookups_per_second, settings.unknown_token_lookups_burst
        ),
    )
    app.add_middleware(BodyGateMiddleware, max_bytes=settings.max_body_bytes)
    # Inside the metrics middleware, so refused scrapes are counted too.
    app.add_middleware(MetricsGuardMiddleware, guard=scrape_guard)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, routes=[*router.routes, *ops.routes, *admin.routes]
    )
    app.openapi = lambda: openapi.build(app)  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory ckpt.api.app:app_from_env`."""
    return create_app(ApiSettings())
