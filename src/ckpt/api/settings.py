"""Configuration of the API service, read from `CKPT_API_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./ckpt-api.db"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_API_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLite file (sqlite:///PATH) or PostgreSQL (postgresql://...).",
    )
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port.")
    # Deprecated checkpoints stay visible this long before cleanup removes them, so that a
    # reader that raced the deprecation still sees a consistent state.
    deprecated_grace_seconds: float = Field(
        default=24 * 3600, ge=0, description="Deprecated checkpoints are removed after this."
    )
    cleanup_interval_seconds: float = Field(
        default=60, gt=0, description="Seconds between runs of the internal state cleanup."
    )
    # Tokens are only ever added, so a short TTL costs nothing in correctness and saves a
    # query per request.
    token_cache_seconds: float = Field(
        default=30, ge=0, description="How long a verified token's tenant is cached."
    )
    pool_size: int = Field(default=10, ge=1, description="Database connections kept open.")
    max_overflow: int = Field(default=30, ge=0, description="Extra connections allowed under load.")
    list_max_ids: int = Field(default=1000, ge=1, description="Most ids one list request may name.")
