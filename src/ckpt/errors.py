"""Errors shared by every ckpt service and client: one body shape, four typed failures.

Servers (the checkpoints API and the node agent) answer every error with `ErrorBody`, built by
`error_response`. Clients (`ckpt.contract.checkpoints_client`, `ckpt.contract.agent_client`)
turn an error answer back into one of the `ServiceError` classes below, so callers branch on
the type instead of comparing status numbers:

- `NotFound` (404): the thing is not there (or no longer);
- `Conflict` (409): it exists in another state, or with another request under the same key;
- `Rejected` (any other 4xx): the request itself is wrong or not allowed; repeating it is useless;
- `Unavailable` (5xx, or no answer at all): the service may answer later; retrying is safe for
  every call of both services (their writes are idempotent by key).

Only pydantic and starlette are imported here, so the clients stay light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

__all__ = [
    "Conflict",
    "ErrorBody",
    "NotFound",
    "Rejected",
    "ServiceError",
    "Unavailable",
    "error_for",
    "error_response",
]


class ErrorBody(BaseModel):
    """Body of every error answer of the API and the agent."""

    message: str
    code: str | int | None = None
    details: Any = None


def error_response(
    status: int,
    message: str,
    code: str | int | None,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one place an error answer is built, for both services."""
    body = ErrorBody(message=message, code=code, details=details).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class ServiceError(Exception):
    """A call to a ckpt service failed. `status` is None when no answer came back at all."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | int | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        return isinstance(self, Unavailable)


class NotFound(ServiceError):
    """404: the job, record or archive is not there."""


class Conflict(ServiceError):
    """409: the thing exists in a state (or with a request) that does not allow the call."""


class Rejected(ServiceError):
    """Any other 4xx: the request is invalid or not allowed; repeating it cannot help."""


class Unavailable(ServiceError):
    """5xx or a transport failure: the service may answer later."""


def error_for(
    status: int | None,
    message: str,
    *,
    code: str | int | None = None,
    details: Any = None,
) -> ServiceError:
    """The typed error for an HTTP status (None: the request got no answer)."""
    kind: type[ServiceError]
    if status is None or status >= 500:
        kind = Unavailable
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    else:
        kind = Rejected
    return kind(message, status=status, code=code, details=details)
