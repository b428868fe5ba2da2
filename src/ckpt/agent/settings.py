"""The node agent's configuration, read from `CKPT_AGENT_*` environment variables."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

RuntimeBackend = Literal["runc", "kubelet", "process"]

# The operator's ServiceAccount as deployed by `deploy/`; the only caller the agent trusts.
DEFAULT_OPERATOR_IDENTITY = "system:serviceaccount:ckpt-system:ckpt-operator"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_AGENT_", extra="ignore")

    # The DaemonSet sets this from `spec.nodeName` (downward API); the hostname is only a
    # sensible default outside Kubernetes.
    node_name: str = Field(default_factory=socket.gethostname, min_length=1)
    host: str = "0.0.0.0"
    port: int = Field(default=8471, ge=0, le=65535)

    runtime: RuntimeBackend = "runc"
    # containerd's runc state root for the k8s.io namespace; CRI-O uses /run/runc.
    runc_root: Path = Path("/run/containerd/runc/k8s.io")
    runc_binary: str = "runc"
    # Unset: the first CRIU >= 4.0 among $CKPT_CRIU, PATH and the development wrapper.
    criu_binary: str | None = None
    # The kubelet backend: its checkpoint API (nodes/checkpoint permission needed).
    kubelet_url: str = "https://127.0.0.1:10250"
    kubelet_ca_file: Path | None = None
    kubelet_insecure_skip_verify: bool = False

    # Where archives go when a request names no destination: a host path or a mounted PVC.
    store: str = "/var/lib/ckpt/archives"
    # Scratch space for CRIU images while they are streamed into the archive.
    work_dir: Path = Path("/var/lib/ckpt/work")
    # One JSON record per job, so finished results survive an agent restart.
    state_dir: Path = Path("/var/lib/ckpt/jobs")
    # zstd level 1 with all cores is the speed/ratio sweet spot for memory pages (field notes).
    zstd_level: int = Field(default=1, ge=-7, le=22)
    zstd_threads: int = -1

    # CRIU freezes and dumps are memory- and IO-heavy; more than a couple at once on one
    # node slows every workload on it.
    max_concurrent_jobs: int = Field(default=2, ge=1)
    job_timeout_seconds: float = Field(default=1800.0, gt=0)
    # Finished job records older than this are dropped at start-up.
    job_retention_hours: float = Field(default=168.0, gt=0)

    # Identities (TokenReview `status.user.username`) allowed to call the API.
    allowed_identities: Annotated[list[str], NoDecode] = [DEFAULT_OPERATOR_IDENTITY]
    # Audiences the token must be valid for; empty means the apiserver's default audience.
    token_audiences: Annotated[list[str], NoDecode] = []
    # Positive TokenReview answers are reused this long, so a busy operator polling jobs does
    # not cost one apiserver round trip per request.
    auth_cache_seconds: float = Field(default=30.0, ge=0)
    # Kubeconfig for the TokenReview client; unset means in-cluster credentials.
    kubeconfig: Path | None = None

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("allowed_identities", "token_audiences", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # A comma-separated env value is friendlier in a DaemonSet manifest than JSON.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [item.strip() for item in stripped.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self
