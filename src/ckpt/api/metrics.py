"""Prometheus metrics: requests by route template and status, and a latency histogram."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Requests that match no route share one label so that scanners cannot explode cardinality.
UNMATCHED = "<unmatched>"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """One registry per app, so several apps in a process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ckpt_api_requests",
            "HTTP requests handled, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ckpt_api_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Unlabelled: the route is only known once routing is done, and a stuck request (a
        # write waiting on the database lock) shows here while it is stuck.
        self.in_flight = Gauge(
            "ckpt_api_requests_in_flight",
            "HTTP requests being answered now (this one included, when it is a scrape).",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # `labels()` validates and hashes its arguments on every call; the label sets
            # are few (bounded by routes x methods x statuses), so keep their children.
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    route = scope.get("route")
    if route is not None and hasattr(route, "path_format"):
        return str(route.path_format)
    # Requests answered before routing (401 from the auth middleware) never set the route,
    # so match the known routes here to still label them with their template.
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match is not Match.NONE and hasattr(candidate, "path_format"):
            return str(candidate.path_format)
    return UNMATCHED


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        self.metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = _route_template(scope, self.routes)
            method = scope.get("method", "")
            method = method if method in _METHODS else "OTHER"
            self.metrics.observe(method, route, status, time.perf_counter() - start)
