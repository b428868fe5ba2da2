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
# The audience of the operator's projected token (deploy/base/operator.yaml). A token minted
# for it is refused by the apiserver itself and by anything else that checks its audience, so
# a token stolen from an agent is worthless elsewhere; the agent in turn refuses tokens of the
# apiserver's default audience, which every pod of the operator's ServiceAccount holds.
AGENT_AUDIENCE = "ckpt-agent"
# Every request body of the v1 API is a small JSON document (a few KiB for a pod with many
# containers); anything larger is refused while it is being read, never buffered whole.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CKPT_AGENT_", extra="ignore")

    node_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Node this agent serves; the DaemonSet sets it from spec.nodeName.",
    )
    host: str = Field(default="0.0.0.0", description="Listen address.")
    port: int = Field(default=8471, ge=0, le=65535, description="Listen port.")

    runtime: RuntimeBackend = Field(
        default="runc", description="Checkpoint backend: runc, kubelet or process."
    )
    runc_root: Path = Field(
        default=Path("/run/containerd/runc/k8s.io"),
        description="runc state root (containerd's k8s.io namespace; CRI-O: /run/runc).",
    )
    runc_binary: str = Field(default="runc", description="runc executable.")
    criu_binary: str | None = Field(
        default=None,
        description="CRIU >= 4.2 executable; unset: $CKPT_CRIU, PATH, then tools/criu's wrapper.",
    )
    kubelet_url: str = Field(
        default="https://127.0.0.1:10250",
        description="Kubelet checkpoint API (kubelet backend; needs nodes/checkpoint).",
    )
    kubelet_ca_file: Path | None = Field(
        default=None,
        description="CA of the kubelet's serving cert; unset: the cluster CA of the "
        "ServiceAccount mount, else the system CAs.",
    )
    kubelet_insecure_skip_verify: bool = Field(
        default=False,
        description="Skip verifying the kubelet's certificate (never in production: the "
        "agent's token goes to whoever answers).",
    )

    store: str = Field(
        default="/var/lib/ckpt/archives",
        description="Archive destination when a request names none: host path or PVC mount.",
    )
    work_dir: Path = Field(
        default=Path("/var/lib/ckpt/work"),
        description="Scratch space for CRIU images while they stream into the archive.",
    )
    restores_dir: Path = Field(
        default=Path("/var/lib/ckpt/restores"),
        description="Staged restores (one 0700 folder per Restore) that the ckpt-runc wrapper "
        "reads; the same host path in the agent and on the node.",
    )
    gpu_restore_socket: Path | None = Field(
        default=None,
        description="Unix socket where the ckpt-runc wrapper's GPU hook (ckpt-cuda-restore) "
        "asks this agent to restore the CUDA state of a container restored as a Pod; unset: "
        "not served (CPU-only agents). Its folder is made root-only.",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/ckpt/jobs"),
        description="One JSON record per job, so results survive an agent restart.",
    )
    # Level 1 with all cores is the speed/ratio sweet spot for memory pages: higher levels cost
    # far more time for little size on CRIU's page images.
    zstd_level: int = Field(default=1, ge=-7, le=22, description="zstd compression level.")
    zstd_threads: int = Field(default=-1, description="zstd threads (-1: one per core).")
    # Captured files are copied to the work dir before they stream into the archive; without a
    # cap one pod's emptyDir could fill the node's disk.
    capture_max_bytes: int = Field(
        default=8 << 30, ge=0,
        description="Bytes of writable-layer and emptyDir files one checkpoint may capture.",
    )

    # Staged restores are unpacked archives (whole memories): without a cap the restores of
    # every namespace could fill the node's disk.
    staging_max_bytes: int = Field(
        default=0, ge=0,
        description="Bytes all staged restores of this node may hold together (0: the disk "
        "less the reserve); a Restore past it fails StagingTooLarge.",
    )
    staging_reserve_bytes: int = Field(
        default=1 << 30, ge=0, description="Bytes staging always leaves free on its filesystem.",
    )

    # CRIU freezes and dumps are memory- and IO-heavy; more than a couple at once on one
    # node slows every workload on it.
    max_concurrent_jobs: int = Field(
        default=2, ge=1, description="Checkpoint and restore jobs running at once; others queue."
    )
    job_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="A job running longer is cancelled and fails."
    )
    job_retention_hours: float = Field(
        default=168.0, gt=0, description="Finished job records older than this are dropped."
    )

    allowed_identities: Annotated[list[str], NoDecode] = Field(
        default=[DEFAULT_OPERATOR_IDENTITY],
        description="Comma-separated TokenReview usernames allowed to call the agent.",
    )
    metrics_identities: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated TokenReview usernames that may read /metrics and call "
        "nothing else (a Prometheus ServiceAccount).",
    )
    token_audiences: Annotated[list[str], NoDecode] = Field(
        default=[AGENT_AUDIENCE],
        min_length=1,
        description="Audiences a caller's token must carry (checked by TokenReview); tokens of "
        "the apiserver's default audience are refused.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="Largest request body accepted (413 beyond it); read only after the "
        "caller is authenticated.",
    )
    # Reused so that a busy operator polling jobs does not cost an apiserver round trip each.
    auth_cache_seconds: float = Field(
        default=30.0, ge=0, description="How long a positive TokenReview answer is reused."
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig for TokenReviews; unset: in-cluster credentials."
    )

    tls_cert_file: Path | None = Field(default=None, description="Serve https with this cert.")
    tls_key_file: Path | None = Field(default=None, description="Key of tls_cert_file.")

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error."
    )

    @field_validator(
        "allowed_identities", "metrics_identities", "token_audiences", mode="before"
    )
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
