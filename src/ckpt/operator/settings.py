"""Configuration of the operator (environment variables prefixed CKPT_OPERATOR_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ckpt.contract.checkpoints_client import plain_http_refusal

# The projected token of deploy/base/operator.yaml: audience `ckpt-agent`, short-lived and
# rotated by the kubelet. It is worthless against the apiserver (wrong audience), unlike the
# ServiceAccount's default token, which the operator uses for the apiserver only.
AGENT_TOKEN = Path("/var/run/secrets/ckpt.dev/agent-token/token")
# The agents' certificate, mounted from Secret ckpt-agent-tls (its public part only).
AGENT_CA = Path("/var/run/secrets/ckpt.dev/agent-tls/tls.crt")


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_OPERATOR_", extra="ignore")

    api_url: str = Field(
        default="https://ckpt-api.ckpt-system.svc:8443",
        description="Base URL of the checkpoints API: https (verified); http only on loopback.",
    )
    api_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the checkpoints API, of role operator (ckpt api token "
        "create --role operator).",
    )
    api_ca_file: Path | None = Field(
        default=None,
        description="Certificate (or CA) the API's serving certificate must chain to (deploy/: "
        "Secret ckpt-api-tls); unset: the system CAs.",
    )
    api_server_name: str | None = Field(
        default=None,
        description="Name the API's certificate must carry when it is not api_url's host.",
    )
    credentials_namespace: str = Field(
        default="ckpt-credentials",
        description="Namespace of the StorageLocations' credential and age identity Secrets, "
        "the only Secrets the operator reads.",
    )
    agent_namespace: str = Field(
        default="ckpt-system",
        description="Namespace of the agents, the operator's own (deploy/ sets it from the "
        "pod's namespace): agent pods elsewhere are never called.",
    )
    agent_selector: str = Field(
        default="app.kubernetes.io/name=ckpt-agent",
        description="Label selector narrowing the agent pod watch (labels prove nothing; "
        "owner and ServiceAccount do).",
    )
    agent_service_account: str = Field(
        default="ckpt-agent", description="ServiceAccount every agent pod must run as."
    )
    agent_daemonset: str = Field(
        default="ckpt-agent", description="DaemonSet controlling the CPU agents."
    )
    agent_gpu_daemonset: str = Field(
        default="ckpt-agent-gpu",
        description="DaemonSet controlling the GPU agents (the only ones given GPU work).",
    )
    agent_port: int = Field(
        default=8443, description="Agent port when its pod declares no container port `agent`."
    )
    agent_scheme: str = Field(
        default="https", pattern="^https?$",
        description="https (verified); http only for agents on loopback in tests.",
    )
    agent_token_file: Path = Field(
        default=AGENT_TOKEN,
        description="Projected token (audience ckpt-agent) presented to agents; re-read on "
        "every call, as the kubelet rotates it.",
    )
    agent_ca_file: Path | None = Field(
        default=AGENT_CA,
        description="Certificate (or CA) the agents' serving certificate must chain to.",
    )
    agent_server_name: str = Field(
        default="ckpt-agent.ckpt-system.svc",
        description="Name the agents' certificate must carry; checked instead of the pod IP.",
    )
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
    metrics_auth: Literal["kubernetes", "none"] = Field(
        default="kubernetes",
        description="Who may read /metrics: kubernetes (a bearer token that the apiserver "
        "authenticates and authorizes for get on the non-resource URL /metrics) or none "
        "(anyone; development only).",
    )
    metrics_tls_cert_file: Path | None = Field(
        default=None,
        description="Serve /metrics over https with this certificate (deploy/: Secret "
        "ckpt-operator-tls); unset: plain http.",
    )
    metrics_tls_key_file: Path | None = Field(
        default=None, description="Key of metrics_tls_cert_file."
    )

    @field_validator("api_url")
    @classmethod
    def _api_url_keeps_the_token_off_plain_networks(cls, url: str) -> str:
        refusal = plain_http_refusal(url)
        if refusal is not None:
            raise ValueError(refusal)
        return url

    @model_validator(mode="after")
    def _metrics_tls_pair(self) -> Self:
        if (self.metrics_tls_cert_file is None) != (self.metrics_tls_key_file is None):
            raise ValueError("metrics_tls_cert_file and metrics_tls_key_file must be set together")
        return self
