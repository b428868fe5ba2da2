"""Wire schemas of the checkpoints API: the single source for the server, its OpenAPI
document and `ckpt.contract.checkpoints_client`. Only pydantic is imported here, so that
clients stay light."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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


__all__ = [
    "ApiError",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStatus",
    "UploadedBody",
]
