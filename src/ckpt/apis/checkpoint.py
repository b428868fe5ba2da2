"""The Checkpoint custom resource: the single source of its schema (its CRD is generated)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class GpuMode(StrEnum):
    auto = "auto"
    required = "required"
    none = "none"


class Timings(BaseModel):
    """Milliseconds spent in each phase of a job."""

    freeze: int = 0
    gpu: int = 0
    dump: int = 0
    store: int = 0
    total: int = 0


GROUP = "ckpt.dev"
VERSION = "v1alpha1"
PLURAL = "checkpoints"
KIND = "Checkpoint"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _integral(value: object) -> object:
    """JSON has one number type: the apiserver takes 100.0 as the integer 100, and so do we."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RetainPolicy(StrEnum):
    Retain = "Retain"
    Delete = "Delete"


class Phase(StrEnum):
    Pending = "Pending"
    Checkpointing = "Checkpointing"
    Uploading = "Uploading"
    Ready = "Ready"
    Failed = "Failed"


class CheckpointSpec(_CamelModel):
    """What to checkpoint. Immutable once accepted: a new checkpoint is a new resource."""

    # Strict, like the apiserver: "true" is not a boolean and 100.0 is not an integer.
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_resource(cls, spec: Mapping[str, Any]) -> CheckpointSpec:
        """Validates a spec with the apiserver's rules (JSON types, so enums arrive as strings).

        The apiserver drops a null given for a non-nullable field and then applies the
        default, so such a null means "absent" here too.
        """
        not_nullable = {f.alias for f in cls.model_fields.values() if f.default is not None}
        present = {k: v for k, v in spec.items() if v is not None or k not in not_nullable}
        return cls.model_validate_json(json.dumps(present))

    pod_name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Name of the running pod to checkpoint, in the Checkpoint's namespace.",
    )
    containers: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] = Field(
        default_factory=list, max_length=64,
        description="Containers to include; empty means all app containers of the pod.",
    )
    leave_running: bool = Field(
        default=True, description="Keep the pod running after the dump (false stops it)."
    )
    gpu: GpuMode = Field(
        default=GpuMode.auto,
        description="auto: GPU state when the pod requests nvidia.com/gpu; required; none.",
    )
    storage: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Name of the StorageLocation for the archive (default: the location "
        "marked default). A name only: paths and URLs are refused.",
    )
    timeout_seconds: Annotated[int, BeforeValidator(_integral)] = Field(
        default=900, ge=10, le=86400,
        description="Give up (phase Failed) when not Ready this many seconds after creation.",
    )
    retain_policy: RetainPolicy = Field(
        default=RetainPolicy.Retain,
        description="Retain or Delete the archive when the Checkpoint is deleted.",
    )


class Condition(_CamelModel):
    """The standard Kubernetes condition shape."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = Field(default="", description="RFC 3339 time of the last change.")


class CheckpointStatus(_CamelModel):
    phase: Phase = Phase.Pending
    message: str = Field(default="", description="What is happening now, or why it failed.")
    conditions: list[Condition] = Field(default_factory=list)
    checkpoint_id: str | None = Field(default=None, description="Id in the checkpoints API.")
    node_name: str | None = None
    agent: str | None = Field(default=None, description="Agent pod that took the checkpoint.")
    gpu: str | None = Field(default=None, description="GPU model(s), or none.")
    platform: str | None = None
    restore_path: str | None = None
    storage_location: str | None = Field(
        default=None, description="StorageLocation that holds the archive."
    )
    checksum: str | None = None
    size_bytes: int | None = None
    size: str | None = Field(default=None, description="Archive size, human readable.")
    started_at: str | None = None
    completed_at: str | None = None
    timings: Timings | None = Field(default=None, description="Milliseconds per phase.")
    api_status: str | None = Field(default=None, description="Status in the checkpoints API.")
    observed_generation: int | None = None
    pod_template: dict[str, Any] | None = Field(
        default=None,
        description="The pod as a template for a Restore (KEP-5823's checkpointedPodTemplate): "
        "its spec without node-specific fields, images pinned to the digests that ran.",
    )
