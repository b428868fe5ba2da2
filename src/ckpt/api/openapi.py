"""The OpenAPI document, adjusted where FastAPI's defaults would misdescribe the contract."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ckpt.api.auth import PROTECTED_PREFIX, bearer_scheme

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _is_fastapi_default_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def build(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    # Authentication is the middleware's, not a per-route dependency, so FastAPI does not see
    # it: declare the bearer scheme on every operation the middleware protects.
    scheme = bearer_scheme.scheme_name
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[scheme] = bearer_scheme.model.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            if (path + "/").startswith(PROTECTED_PREFIX):
                operation["security"] = [{scheme: []}]
            responses = operation.get("responses", {})
            # FastAPI adds a 422 with its own body to every operation with parameters; ours
            # answer 400 for bad parameters and 422 only for bodies, always as ApiError.
            if "422" in responses and _is_fastapi_default_422(responses["422"]):
                del responses["422"]
            # Error responses are always JSON, whatever the operation's success media type
            # (FastAPI would label them like the route's text/plain response class).
            for status, response in responses.items():
                if status[0] in "45" and "content" in response:
                    schemas = [c.get("schema") for c in response["content"].values()]
                    response["content"] = {"application/json": {"schema": schemas[0]}}
    schemas = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    app.openapi_schema = document
    return document
