"""Wire schemas of the checkpoints API: the single source for the server, its OpenAPI
document and `ckpt.contract.checkpoints_client`. Only pydantic is imported here, so that
clients stay light."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# ckpt's extensions, outside Cedana's contract: an operator token names the namespace it acts
# for in this header; the operator keeps a read-only token of each namespace's tenant in a
# Secret of that namespace, which `ckpt list` reads when it is given no token.
TENANT_HEADER = "X-Ckpt-Tenant"
READ_TOKEN_SECRET = "ckpt-api-read-token"  # noqa: S105 - the name of a Secret, not a secret
READ_TOKEN_SECRET_TYPE = "ckpt.dev/api-read-token"  # noqa: S105 - a Secret type
READ_TOKEN_KEY = "token"  # noqa: S105 - a key of that Secret
READ_TOKEN_EXPIRES_ANNOTATION = "ckpt.dev/expires-at"  # noqa: S105 - an annotation


class CheckpointStatus(StrEnum):
    initializing = "initializing"
    updated_info = "updated_info"
    possibly_uploaded = "possibly_uploaded"
    ready = "ready"
    deprecated = "deprecated"


# The info document is stored as JSON text and echoed back; anything that cannot survive
# that round trip (NaN, lone surrogates) or would bloat every list response is refused.
MAX_INFO_BYTES = 64 * 1024


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL and neither database can encode lone surrogates;
    # refusing them here turns a would-be 500 into a 422 that names the field.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid UTF-8 text") from exc
    return value


def _storable_json(value: Any) -> Any:
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError("must be JSON without NaN/Infinity or invalid text") from exc
    if len(encoded) > MAX_INFO_BYTES:
        raise ValueError(f"must encode to at most {MAX_INFO_BYTES} bytes of JSON")
    return value


StorableText = Annotated[str, AfterValidator(_storable_text)]
InfoDocument = Annotated[Any, AfterValidator(_storable_json)]


class Checkpoint(BaseModel):
    """A checkpoint as the list endpoint returns it."""

    model_config = ConfigDict(extra="ignore")

    id: UUID
    status: CheckpointStatus
    gpu: str = Field(description='GPU model(s) of the state; "" until info is put, "none" for CPU')
    platform: str = Field(description='e.g. "linux/amd64"; "" until info is put')
    checksum: str | None = Field(default=None, description='e.g. "sha256:<hex>"')
    info: Any = Field(default=None, description="free-form details")
    name: str | None = None


class CheckpointInfo(BaseModel):
    """Body of `PUT /v2/checkpoints/info/{id}`."""

    gpu: Annotated[StorableText, Field(max_length=512)]
    platform: Annotated[StorableText, Field(max_length=128)]
    info: InfoDocument = None


class UploadedBody(BaseModel):
    """Body of `POST /v2/checkpoints/uploaded/{id}`; `checksum` is this service's extension.

    The seed marks `restore_path` "string · nullable · Optional": clients generated from it
    omit it when unset, so a missing one means null (-> `possibly_uploaded`).
    """

    restore_path: Annotated[StorableText, Field(max_length=4096)] | None = None
    checksum: Annotated[StorableText, Field(max_length=256)] | None = None


class ApiError(BaseModel):
    """Body of every error response. `code` is always a string: typed clients generated from
    the seed's OpenAPI parse it as a string only."""

    message: str
    code: str | None = None
    details: Any = None


class ReaderToken(BaseModel):
    """Answer of `POST /ckpt/v1/namespaces/{namespace}/reader-tokens` (operator tokens only):
    a new read-only token of that namespace's tenant, shown once."""

    token: str
    expires_at: datetime = Field(description="UTC")


class Adoption(BaseModel):
    """Answer of `POST /ckpt/v1/namespaces/adopt` (operator tokens only): how many records
    of the operator's own tenant moved to their namespace's tenant, and how many stay."""

    moved: int
    kept: int


__all__ = [
    "READ_TOKEN_EXPIRES_ANNOTATION",
    "READ_TOKEN_KEY",
    "READ_TOKEN_SECRET",
    "READ_TOKEN_SECRET_TYPE",
    "TENANT_HEADER",
    "Adoption",
    "ApiError",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStatus",
    "ReaderToken",
    "UploadedBody",
]
