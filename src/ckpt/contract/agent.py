"""The node agent's v1 HTTP API: the single source of its request and response schemas.

The agent serves them and the operator sends them; the GPU mode and the phase timings belong to
the Checkpoint resource (ckpt.apis.checkpoint) and are re-exported here for the agent.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ckpt.apis.checkpoint import GpuMode as GpuMode
from ckpt.apis.checkpoint import Timings as Timings
from ckpt.apis.storagelocation import Destination


class JobState(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ContainerTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=253)
    # The runtime's id, without the "containerd://" / "cri-o://" scheme of pod status.
    container_id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    namespace: str = Field(min_length=1, max_length=63)
    pod: str = Field(min_length=1, max_length=253)
    pod_uid: str = ""
    containers: list[ContainerTarget] = Field(min_length=1)
    leave_running: bool = True
    gpu: GpuMode = GpuMode.auto
    # The storage location, resolved by the operator (settings + credentials for this job
    # only; records keep them masked). None: the agent's own node-local archive folder.
    destination: Destination | None = None
    compression: Literal["zstd", "none"] = "zstd"
    # The pod as a template for a Restore (ckpt.agent.capture.pod_template), written into the
    # archive as pod.json; None: a Restore takes the Checkpoint status's copy instead.
    pod_template: dict[str, Any] | None = None


class CheckpointResult(BaseModel):
    restore_path: str
    checksum: str  # "sha256:<hex>" of the stored archive bytes
    size_bytes: int
    gpu: str  # GPU model(s), or "none"
    platform: str  # e.g. "linux/amd64"
    runtime: str
    criu_version: str
    containers: list[str] = []
    timings: Timings = Timings()


class CheckpointJob(BaseModel):
    checkpoint_id: str
    state: JobState
    phase: str = ""  # freezing, gpu-lock, dumping, storing, done
    bytes_done: int = 0
    result: CheckpointResult | None = None
    error: str | None = None
    # Failed only because the agent stopped under it: the same request again starts over.
    retryable: bool = False


class AgentInfo(BaseModel):
    node: str
    runtimes: list[str]
    criu_version: str
    # What `criu check --feature` said of this node's kernel at start-up (uffd: lazy restore;
    # mem_dirty_track: incremental dumps).
    criu_features: dict[str, bool] = {}
    gpus: list[str]
    driver_version: str | None
    cuda_checkpoint: bool  # the driver exposes cuCheckpointProcess*
    platform: str


# The Pod annotation naming a restored Pod's staged restore (the Restore's uid), set by the
# operator. containerd copies `ckpt.dev/*` pod annotations into each container's config.json
# (the runtime handler's `pod_annotations` allowlist), where the ckpt-runc wrapper and the
# agent's GPU restore read it.
RESTORE_ANNOTATION = "ckpt.dev/restore"


class StageRequest(BaseModel):
    """Stage a checkpoint for a Restore: fetch, verify, extract into the per-restore folder
    the ckpt-runc wrapper reads. Keyed by ``restore_id`` (the Restore's uid)."""

    model_config = ConfigDict(extra="forbid")

    restore_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    namespace: str = Field(min_length=1, max_length=63)
    pod_name: str = Field(min_length=1, max_length=253)
    checkpoint_id: str = Field(default="", max_length=64)
    # The archive's URL as the checkpoint recorded it (its restorePath), inside `location`.
    source: str = Field(min_length=1, max_length=4096)
    checksum: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    # The storage location holding it, resolved by the operator (with age identities when it
    # encrypts); None: the agent's own node-local archive folder.
    location: Destination | None = None


class StageTimings(BaseModel):
    """Milliseconds. Staging reads, hashes and unpacks the archive in one pass, its stages
    overlapping in two threads: fetch is the time that pass waited for the store, verify the
    time it spent hashing, extract the rest of its wall time (decrypting, decompressing,
    writing files) plus laying the files out for the wrapper; together about total."""

    fetch: int = 0
    verify: int = 0
    extract: int = 0
    total: int = 0


class StageResult(BaseModel):
    path: str  # the staged folder on the node
    containers: list[str]
    gpu: bool = False
    size_bytes: int = 0
    timings: StageTimings = StageTimings()
    # pod.json of the verified archive: what the operator creates the Pod from.
    pod_template: dict[str, Any] | None = None


class StageJob(BaseModel):
    restore_id: str
    state: JobState
    phase: str = ""  # queued, fetching, verifying, extracting, staged
    result: StageResult | None = None
    error: str | None = None
    # Why it failed, for callers that act on it: checksum_mismatch, not_found, bad_archive.
    error_code: str | None = None
    retryable: bool = False
