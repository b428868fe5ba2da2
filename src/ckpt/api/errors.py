"""Every error leaves the service as an `ApiError` JSON body: never HTML, never a trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ckpt import errors as ckpt_errors

log = logging.getLogger(__name__)


class ApiException(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.headers = dict(headers or {})


def not_found(checkpoint_id: object) -> ApiException:
    return ApiException(404, f"checkpoint {checkpoint_id} not found", "not_found")


def unauthorized(message: str) -> ApiException:
    return ApiException(401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


# One builder of error bodies for the API and the agent (same `ErrorBody` shape as `ApiError`).
error_response = ckpt_errors.error_response


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
}


def _field(loc: Sequence[Any]) -> str:
    # ("body", "gpu") -> "body.gpu"; a missing body is just "body".
    return ".".join(str(part) for part in loc)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # ctx and input can hold arbitrary objects (exceptions, raw bytes); keep what is JSON-safe.
    return [
        {
            "field": _field(err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]


async def _on_api_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiException)
    return error_response(exc.status, exc.message, exc.code, exc.details, exc.headers)


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(
        exc.status_code,
        message,
        _HTTP_CODES.get(exc.status_code, "http_error"),
        headers=exc.headers,
    )


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    # The contract answers 400 for malformed path/query/header values (e.g. an invalid UUID)
    # and 422 for a body that is missing a field or has one of the wrong type.
    in_body = any(d["field"].split(".", 1)[0] == "body" for d in details)
    status = 422 if in_body else 400
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(status, message, "validation_error", details)


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal server error", "internal")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiException, _on_api_exception)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
