"""ckpt's extensions for the operator, under `/ckpt/v1`: outside the paths and the OpenAPI
document of Cedana's contract, and refused to every token but an operator's (`ckpt.api.auth`).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request

from ckpt.api import tenants
from ckpt.api.auth import caller_of
from ckpt.api.errors import ApiException
from ckpt.contract.checkpoints_api import Adoption, ReaderToken

admin = APIRouter(prefix="/ckpt/v1", include_in_schema=False)

# A reader token's lifetime: the operator renews it at half-life, so someone who loses
# access to the namespace's Secret loses access to its records within one lifetime.
DEFAULT_READER_SECONDS = 24 * 3600
MAX_READER_SECONDS = 30 * 24 * 3600


@admin.post("/namespaces/adopt", response_model=Adoption)
async def adopt(request: Request) -> Adoption:
    """Move the records of the operator token's own tenant to their namespaces' tenants."""
    # In a worker thread rather than `Database.run`: rare calls with several transactions,
    # where waiting for SQLite's writer is harmless.
    moved = await anyio.to_thread.run_sync(
        tenants.adopt_namespace_records, request.app.state.db, caller_of(request).tenant_id
    )
    return Adoption(moved=moved.moved, kept=moved.kept)


@admin.post("/namespaces/{namespace}/reader-tokens", response_model=ReaderToken)
async def mint_reader(
    request: Request,
    namespace: Annotated[str, Path(max_length=63)],
    expires_in: Annotated[
        int, Query(ge=60, le=MAX_READER_SECONDS, description="Seconds the token works.")
    ] = DEFAULT_READER_SECONDS,
) -> ReaderToken:
    """A new read-only token of the namespace's tenant."""
    if not tenants.valid_namespace(namespace):
        raise ApiException(400, "not a namespace name", "validation_error")
    minted = await anyio.to_thread.run_sync(
        tenants.mint_reader, request.app.state.db, namespace, timedelta(seconds=expires_in)
    )
    # The database holds naive UTC; the wire says so.
    return ReaderToken(token=minted.token, expires_at=minted.expires_at.replace(tzinfo=UTC))
