"""The agent's AuthFirst middleware at the ASGI level (issue 13, finding 5). Pure logic.

Before: authentication was a route dependency, which FastAPI runs after it has read and
parsed the whole body; these tests count what the app read from the socket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI, Request

from ckpt.agent.auth import Authenticator, AuthFirst
from ckpt.agent.errors import AgentError

LIMIT = 64 * 1024


class FakeAuthenticator(Authenticator):
    """Accepts the one token "good" as the operator; refuses anything else like TokenReview."""

    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, authorization: str | None, path: str = "") -> str:
        self.calls += 1
        if authorization == "Bearer good":
            return "system:serviceaccount:ckpt-system:ckpt-operator"
        raise AgentError(401, "unauthenticated", "the bearer token is not valid")


def _app(auth: FakeAuthenticator) -> AuthFirst:
    inner = FastAPI()

    @inner.post("/v1/checkpoints")
    async def create(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"caller": request.scope["state"]["caller"], "size": len(body)}

    @inner.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return AuthFirst(inner, authenticator=lambda: auth, max_body_bytes=LIMIT)


def _call(
    app: AuthFirst, path: str, headers: dict[str, str], chunks: list[bytes], method: str = "POST"
) -> tuple[int, dict[str, Any], int]:
    """Runs one request; returns the status, the JSON answer and how many body chunks the
    app pulled from the (endless, were it a socket) body."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        index = pulled
        pulled += 1
        if index < len(chunks):
            return {"type": "http.request", "body": chunks[index],
                    "more_body": index + 1 < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8443),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


MB_CHUNKS = [b"x" * (1024 * 1024)] * 100  # 100 MB offered


@pytest.mark.parametrize("authorization", [None, "Bearer forged", "Basic Zm9vOmJhcg=="])
def test_unauthenticated_body_is_never_read(authorization: str | None) -> None:
    auth = FakeAuthenticator()
    headers = {"content-type": "application/json", "content-length": str(100 * 1024 * 1024)}
    if authorization:
        headers["authorization"] = authorization
    status, answer, pulled = _call(_app(auth), "/v1/checkpoints", headers, MB_CHUNKS)
    assert (status, answer["code"], pulled) == (401, "unauthenticated", 0)
    assert auth.calls == 1


def test_declared_oversized_body_is_413_unread() -> None:
    headers = {"authorization": "Bearer good", "content-length": str(LIMIT + 1)}
    status, answer, pulled = _call(_app(FakeAuthenticator()), "/v1/checkpoints", headers,
                                   MB_CHUNKS)
    assert (status, answer["code"], pulled) == (413, "too_large", 0)


def test_chunked_body_is_cut_off_at_the_limit() -> None:
    chunks = [b"y" * 16 * 1024] * 100  # no Content-Length; 1.6 MB offered
    status, _, pulled = _call(_app(FakeAuthenticator()), "/v1/checkpoints",
                              {"authorization": "Bearer good"}, chunks)
    assert status == 413
    assert pulled == LIMIT // (16 * 1024) + 1  # stopped at the first chunk over the limit


def test_authenticated_small_body_reaches_the_route_with_the_caller() -> None:
    status, answer, _ = _call(_app(FakeAuthenticator()), "/v1/checkpoints",
                              {"authorization": "Bearer good"}, [b"{}"])
    assert status == 200
    assert answer == {"caller": "system:serviceaccount:ckpt-system:ckpt-operator", "size": 2}


def test_healthz_needs_no_token_and_unknown_paths_need_one() -> None:
    auth = FakeAuthenticator()
    app = _app(auth)
    assert _call(app, "/healthz", {}, [], method="GET")[0] == 200
    assert auth.calls == 0
    # No route, document or 404 is served to a caller without a token.
    assert _call(app, "/v1/openapi.json", {}, [], method="GET")[0] == 401
    assert _call(app, "/nothing-here", {}, [], method="GET")[0] == 401
