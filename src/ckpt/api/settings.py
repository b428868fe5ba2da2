"""Configuration of the API service, read from `CKPT_API_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./ckpt-api.db"
# The largest page the OpenAPI document declares; `list_max_limit` may only lower it.
LIST_LIMIT_CEILING = 1000
# pydantic-core refuses to serialise JSON nested deeper than about 255 levels: a stored info
# document past that made every list that included it answer 500. The setting stays far below.
JSON_DEPTH_CEILING = 128


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_API_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLite file (sqlite:///PATH) or PostgreSQL (postgresql://...).",
    )
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port.")
    tls_cert_file: Path | None = Field(
        default=None,
        description="Serve https with this certificate (PEM; deploy/: Secret ckpt-api-tls); "
        "unset: plain http.",
    )
    tls_key_file: Path | None = Field(default=None, description="Key of tls_cert_file.")
    # Secure by default: a deployment that forgets the setting keeps its metrics closed, and a
    # server run outside a cluster says at start that it needs `none`.
    metrics_auth: Literal["kubernetes", "none"] = Field(
        default="kubernetes",
        description="Who may read /metrics: kubernetes (a bearer token that the apiserver "
        "authenticates and authorizes for get on the non-resource URL /metrics) or none "
        "(anyone; development only).",
    )
    # Deprecated checkpoints stay visible this long before cleanup removes them, so that a
    # reader that raced the deprecation still sees a consistent state.
    deprecated_grace_seconds: float = Field(
        default=24 * 3600, ge=0, description="Deprecated checkpoints are removed after this."
    )
    cleanup_interval_seconds: float = Field(
        default=60, gt=0, description="Seconds between runs of the internal state cleanup."
    )
    # A revoked token keeps working in a running server for at most this long.
    token_cache_seconds: float = Field(
        default=30,
        ge=0,
        description="How long a verified token's tenant is cached (a revocation takes effect "
        "within this time).",
    )
    pool_size: int = Field(default=10, ge=1, description="Database connections kept open.")
    max_overflow: int = Field(default=30, ge=0, description="Extra connections allowed under load.")
    list_max_ids: int = Field(default=1000, ge=1, description="Most ids one list request may name.")
    # The largest legal body is an info document of 64 KiB of JSON plus two short strings;
    # 1 MiB leaves room for escapes and whitespace and still bounds what a request can cost.
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body, counted after Content-Encoding is decoded (and on "
        "the wire); larger answers 413.",
    )
    max_json_depth: int = Field(
        default=32,
        ge=2,
        le=JSON_DEPTH_CEILING,
        description="Deepest nesting of arrays/objects in a JSON body; deeper answers 422.",
    )
    list_default_limit: int = Field(
        default=100,
        ge=1,
        le=LIST_LIMIT_CEILING,
        description="Page size of a list request without `limit` (X-Next-Cursor tells of more).",
    )
    list_max_limit: int = Field(
        default=LIST_LIMIT_CEILING,
        ge=1,
        le=LIST_LIMIT_CEILING,
        description="Largest page a list request gets; a larger `limit` is lowered to this.",
    )
    gzip_min_bytes: int = Field(
        default=1400,
        ge=0,
        description="List responses at least this large are gzip-compressed for clients that "
        "accept gzip.",
    )
    rate_limit_per_second: float = Field(
        default=100,
        ge=0,
        description="Average requests per second allowed to one tenant (0: no limit); beyond "
        "it 429 with Retry-After.",
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, description="Requests one tenant may send at once above the rate."
    )
    unknown_token_lookups_per_second: float = Field(
        default=5,
        ge=0,
        description="Failed token lookups per second allowed from one client address (0: no "
        "limit); beyond it 429 without a database lookup.",
    )
    unknown_token_lookups_burst: int = Field(
        default=20, ge=1, description="Failed token lookups one client address may cause at once."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self

    @model_validator(mode="after")
    def _default_page_within_maximum(self) -> Self:
        if self.list_default_limit > self.list_max_limit:
            raise ValueError("list_default_limit must not exceed list_max_limit")
        return self
