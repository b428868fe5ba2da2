"""The agent's error type and its JSON body, shared by the routes, auth and the job manager."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error answer: the same shape as the checkpoints API's `ApiError`."""

    message: str
    code: str
    details: Any = None


class AgentError(Exception):
    """An error with the HTTP status and stable code it answers with."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> ErrorBody:
        return ErrorBody(message=self.message, code=self.code, details=self.details)
