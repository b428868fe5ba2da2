"""The five endpoints of the contract, plus health and metrics."""

from __future__ import annotations

import gzip
import re
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import TypeAdapter

from ckpt.api.auth import tenant_of
from ckpt.api.db import Database
from ckpt.api.errors import ApiException
from ckpt.api.service import CheckpointService
from ckpt.api.settings import LIST_LIMIT_CEILING
from ckpt.contract.checkpoints_api import (
    ApiError,
    Checkpoint,
    CheckpointInfo,
    StorableText,
    UploadedBody,
)

NEXT_CURSOR_HEADER = "X-Next-Cursor"
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
MAX_LIMIT = LIST_LIMIT_CEILING
# Cursors are the `seq` column, a signed 64-bit integer in PostgreSQL: a larger number
# overflowed the bind parameter and answered 500.
MAX_CURSOR = 2**63 - 1
# Above this, compression runs in a worker thread: level 1 gzips JSON at roughly 100 MB/s, so
# a 256 KiB list stays on the event loop for about 2.5 ms at most.
_GZIP_INLINE_BYTES = 256 * 1024

# The list is serialised straight to JSON bytes from the service's models: returning the
# models would make FastAPI validate them all again against `response_model` first.
_CHECKPOINTS = TypeAdapter(list[Checkpoint])


def _caller(request: Request) -> tuple[int, CheckpointService, Database]:
    # Plain calls rather than FastAPI dependencies: FastAPI resolves every dependency anew
    # on each request, which cost more CPU than this whole lookup.
    state = request.app.state
    return tenant_of(request), state.service, state.db


def _error(description: str) -> dict[str, Any]:
    return {"model": ApiError, "description": description}


_ID_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The checkpoint's id, a bare UUID.",
        "content": {"text/plain": {"schema": {"type": "string", "format": "uuid"}}},
    }
}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: _error("Missing, malformed or unknown bearer token."),
    429: {
        **_error("Too many requests from this tenant (or failed logins from this address)."),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before the next request.",
                "schema": {"type": "integer"},
            }
        },
    },
    500: _error("Internal error."),
}
_BY_ID: dict[int | str, dict[str, Any]] = {
    **_COMMON,
    400: _error("The id is not a valid UUID."),
    404: _error("No such checkpoint for this tenant."),
}
_TRANSITION: dict[int | str, dict[str, Any]] = {
    **_BY_ID,
    409: _error("The checkpoint's status does not allow this change."),
    413: _error("The body is larger than the limit, on the wire or once decoded."),
    415: _error("The body's Content-Encoding is not gzip, deflate or identity."),
    422: _error(
        "The body is missing a required field, has one of the wrong type, or nests deeper "
        "than the limit."
    ),
}

router = APIRouter(prefix="/v2/checkpoints", tags=["checkpoints"])


def _parse_ids(raw: str, max_ids: int) -> list[UUID]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if len(parts) > max_ids:
        raise ApiException(
            400,
            f"ids: at most {max_ids} ids per request",
            "validation_error",
            details=[{"field": "query.ids", "message": "too many ids"}],
        )
    ids = []
    for part in parts:
        # Only the canonical form: uuid.UUID() would also take braces, URNs and bare hex.
        if _CANONICAL_UUID.fullmatch(part) is None:
            raise ApiException(
                400,
                f"ids: {part!r} is not a valid UUID",
                "validation_error",
                details=[{"field": "query.ids", "message": "not a valid UUID", "value": part}],
            )
        ids.append(UUID(part))
    return ids


def _parse_cursor(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise ApiException(
            400,
            "cursor: not a cursor returned by this service",
            "validation_error",
            details=[{"field": "query.cursor", "message": "malformed cursor"}],
        )
    # Compared as text first so that a huge digit string is not converted at all.
    if len(raw.lstrip("0")) > len(str(MAX_CURSOR)) or int(raw) > MAX_CURSOR:
        raise ApiException(
            422,
            f"cursor: out of range (at most {MAX_CURSOR})",
            "validation_error",
            details=[{"field": "query.cursor", "message": "cursor out of range"}],
        )
    return int(raw)


def _accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) > 0
            except ValueError:
                return False
        return True
    return False


async def _maybe_gzip(request: Request, payload: bytes, headers: dict[str, str]) -> bytes:
    # Small lists go out as they are: below about one TCP segment compression saves no round
    # trip and only costs CPU.
    headers["Vary"] = "Accept-Encoding"
    if len(payload) < request.app.state.settings.gzip_min_bytes or not _accepts_gzip(
        request.headers.get("accept-encoding")
    ):
        return payload
    headers["Content-Encoding"] = "gzip"
    if len(payload) <= _GZIP_INLINE_BYTES:
        return gzip.compress(payload, compresslevel=1, mtime=0)
    return await anyio.to_thread.run_sync(lambda: gzip.compress(payload, 1, mtime=0))


@router.get(
    "",
    response_model=list[Checkpoint],
    summary="List checkpoints",
    responses={
        200: {
            "description": "The caller's checkpoints, oldest first, one page of them: "
            "without `limit` the server's default page size (100 unless configured), and "
            "never more than its maximum (1000 unless configured lower). Gzip-compressed "
            "when the client accepts it and the list is large.",
            "headers": {
                NEXT_CURSOR_HEADER: {
                    "description": "Present when the page cut the list: pass it as `cursor`.",
                    "schema": {"type": "string"},
                }
            },
        },
        400: _error("A malformed UUID in `ids`, or a bad `limit`/`cursor`."),
        422: _error("A `cursor` out of range."),
        **_COMMON,
    },
)
async def list_checkpoints(
    request: Request,
    ids: Annotated[
        str | None,
        Query(description="Comma-separated checkpoint UUIDs; absent or empty: all."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description="Extension: page size; default and cap are the server's "
            "(100 and 1000 unless configured).",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="Extension: the previous page's X-Next-Cursor."),
    ] = None,
) -> Response:
    settings = request.app.state.settings
    parsed_ids = _parse_ids(ids, settings.list_max_ids) if ids else None
    after = _parse_cursor(cursor) if cursor else None
    if parsed_ids == []:
        parsed_ids = None
    page = min(limit or settings.list_default_limit, settings.list_max_limit)
    tenant, service, db = _caller(request)
    items, next_cursor = await db.run(service.list, tenant, parsed_ids, page, after)
    headers: dict[str, str] = {}
    if next_cursor is not None:
        headers[NEXT_CURSOR_HEADER] = str(next_cursor)
    payload = await _maybe_gzip(request, _CHECKPOINTS.dump_json(items), headers)
    return Response(payload, media_type="application/json", headers=headers)


@router.post(
    "",
    response_class=PlainTextResponse,
    summary="Create a checkpoint",
    responses={
        **_ID_RESPONSE,
        400: _error("A malformed `name` or `Idempotency-Key`."),
        **_COMMON,
    },
)
async def create_checkpoint(
    request: Request,
    name: Annotated[
        StorableText | None,
        Query(max_length=253, description="Extension: a human name."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Extension: the same key from the same tenant returns the same id.",
        ),
    ] = None,
) -> PlainTextResponse:
    tenant, service, db = _caller(request)
    return PlainTextResponse(str(await db.run(service.create, tenant, idempotency_key, name)))


@router.patch(
    "/deprecate/{id}",
    response_class=PlainTextResponse,
    summary="Deprecate a checkpoint",
    responses={**_ID_RESPONSE, **_BY_ID},
)
async def deprecate_checkpoint(request: Request, id: UUID) -> PlainTextResponse:
    tenant, service, db = _caller(request)
    await db.run(service.deprecate, tenant, id)
    return PlainTextResponse(str(id))


@router.put(
    "/info/{id}",
    response_class=PlainTextResponse,
    summary="Put a checkpoint's info",
    responses={**_ID_RESPONSE, **_TRANSITION},
)
async def put_info(
    request: Request,
    id: UUID,
    body: Annotated[CheckpointInfo, Body()],
) -> PlainTextResponse:
    tenant, service, db = _caller(request)
    await db.run(service.put_info, tenant, id, body)
    return PlainTextResponse(str(id))


@router.post(
    "/uploaded/{id}",
    response_class=PlainTextResponse,
    summary="Mark a checkpoint uploaded",
    responses={**_ID_RESPONSE, **_TRANSITION},
)
async def mark_uploaded(
    request: Request,
    id: UUID,
    body: Annotated[UploadedBody, Body()],
) -> PlainTextResponse:
    tenant, service, db = _caller(request)
    await db.run(service.uploaded, tenant, id, body)
    return PlainTextResponse(str(id))


ops = APIRouter()


@ops.get("/healthz", response_class=PlainTextResponse, summary="Liveness")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@ops.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    payload, content_type = request.app.state.metrics.render()
    return Response(payload, media_type=content_type)
