"""The agent's error type, shared by the routes, auth and the job manager.

Its JSON body is `ckpt.errors.ErrorBody`, the same shape (and the same builder) as the
checkpoints API's.
"""

from __future__ import annotations

from typing import Any

from ckpt.errors import ErrorBody

__all__ = ["AgentError", "ErrorBody"]


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
