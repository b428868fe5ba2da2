"""The error handlers in isolation: even an unexpected failure answers an ApiError."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from ckpt.api import errors


async def test_unexpected_exception_is_a_500_api_error_without_a_trace() -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /var/lib/db")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "message": "internal server error",
        "code": "internal",
        "details": None,
    }
    assert "secret" not in response.text and "Traceback" not in response.text
