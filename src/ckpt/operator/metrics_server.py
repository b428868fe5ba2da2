"""The operator's /metrics port: prometheus_client's exposition behind the scrapers' guard
(ckpt.contract.scrape_auth), over TLS when a certificate is configured.

prometheus_client's own `start_http_server` serves anyone, and with TLS it makes the
handshake on the accepting thread, where one silent client stalls every scrape. Here each
connection gets its own thread, which makes the handshake (bounded by a timeout), checks the
token, and only then renders the registry.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from ckpt.contract.scrape_auth import METRICS_PATH, ScrapeGuard

log = logging.getLogger(__name__)

# A connection that says nothing for this long (handshake or request) is dropped.
_CONNECTION_TIMEOUT_S = 30.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def guarded(app: WsgiApp, guard: ScrapeGuard | None) -> WsgiApp:
    """`app` (the exposition) for the scrapers `guard` admits; everything but /metrics
    answers 404 (prometheus_client serves its registry at any path)."""

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/") != METRICS_PATH:
            return _answer(start_response, 404, "not_found", "only /metrics is served here")
        if guard is not None:
            verdict = guard.check(environ.get("HTTP_AUTHORIZATION"))
            if not verdict.allowed:
                headers = []
                if verdict.status == 401:
                    headers.append(("WWW-Authenticate", 'Bearer realm="ckpt-operator metrics"'))
                if verdict.retry_after > 0:
                    headers.append(("Retry-After", str(max(1, math.ceil(verdict.retry_after)))))
                return _answer(start_response, verdict.status, verdict.code, verdict.message,
                               headers)
        return app(environ, start_response)

    return wsgi


_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            503: "Service Unavailable"}


def _answer(start_response: StartResponse, status: int, code: str, message: str,
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = json.dumps({"message": message, "code": code}, separators=(",", ":")).encode()
    start_response(f"{status} {_REASONS.get(status, 'Error')}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        *(headers or []),
    ])
    return [body]


class _Handler(WSGIRequestHandler):
    timeout = _CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the operator's log."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread: a slow or plain-text client stalls only itself.
        if self.tls is not None:
            request.settimeout(_CONNECTION_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("metrics: TLS handshake with %s failed: %s", client_address[0], exc)
                return
            try:
                super().finish_request(request, client_address)
            finally:
                request.close()
            return
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 or later
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def start_metrics_server(
    host: str,
    port: int,
    *,
    guard: ScrapeGuard | None,
    tls: ssl.SSLContext | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> WSGIServer:
    """Serves in a daemon thread until `shutdown()`; returns the server (its port when 0)."""
    server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    server.tls = tls
    server.set_app(guarded(make_wsgi_app(registry), guard))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
