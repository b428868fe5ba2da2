"""Configuration of the operator (environment variables prefixed CKPT_OPERATOR_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_OPERATOR_", extra="ignore")

    api_url: str = Field(
        default="http://ckpt-api.ckpt-system.svc:8080",
        description="Base URL of the checkpoints API.",
    )
    api_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token of the checkpoints API (a tenant's)."
    )
    agent_selector: str = Field(
        default="app.kubernetes.io/name=ckpt-agent",
        description="Label selector of the node agent pods (watched server-side).",
    )
    agent_kind_label: str = Field(
        default="ckpt.dev/agent-kind", description="Label telling GPU agents (gpu) from CPU ones."
    )
    agent_port: int = Field(
        default=8443, description="Agent port when its pod declares no container port `agent`."
    )
    agent_scheme: str = Field(
        default="http", pattern="^https?$", description="http, or https when agents serve TLS."
    )
    agent_token_file: Path = Field(
        default=SERVICE_ACCOUNT_TOKEN,
        description="Token presented to agents (re-read on every call: projected tokens rotate).",
    )
    agent_ca_file: Path | None = Field(default=None, description="CA of agents serving https.")
    sync_interval: float = Field(
        default=60.0, gt=0, description="Seconds between API status syncs of Ready checkpoints."
    )
    poll_interval: float = Field(
        default=0.5, gt=0,
        description="Seconds: first wait while a target or agent is missing (doubling up to"
        " 5 s), and the pause after a job long poll that came back unchanged.",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means the whole cluster."
    )
    listen_host: str = Field(default="0.0.0.0", description="Address of /healthz and /metrics.")
    liveness_port: int = Field(default=8080, description="Port of /healthz (kopf liveness).")
    metrics_port: int = Field(default=9090, description="Port of /metrics (Prometheus).")
