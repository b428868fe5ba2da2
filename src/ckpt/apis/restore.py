"""The Restore custom resource: the single source of its schema (its CRD is generated).

A Restore names a Ready Checkpoint in its namespace and asks for it back as a new Pod. It is
shaped after KEP-5823 (Pod-level checkpoint/restore): `spec.checkpointName` plays the part of
the Pod's future `restoreFrom`, and the template the operator creates the Pod from is the
checkpoint's captured `checkpointedPodTemplate` (kept in the Checkpoint's status).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ckpt.apis.checkpoint import DNS_SUBDOMAIN, Condition, _CamelModel

RESTORE_PLURAL = "restores"
RESTORE_KIND = "Restore"
# Labels on the restored Pod, so `kubectl get pods -l ckpt.dev/restored-from=NAME` finds it.
RESTORED_FROM_LABEL = "ckpt.dev/restored-from"
RESTORE_NAME_LABEL = "ckpt.dev/restore-name"
RUNTIME_CLASS = "ckpt"


class RestorePhase(StrEnum):
    Pending = "Pending"
    Staging = "Staging"
    Restoring = "Restoring"
    Running = "Running"
    Failed = "Failed"


class RestoreSpec(_CamelModel):
    """What to restore, and where. Immutable: a new restore is a new resource."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_resource(cls, spec: Mapping[str, Any]) -> RestoreSpec:
        """Validates a spec as the apiserver sent it (JSON types; a null means absent)."""
        present = {k: v for k, v in spec.items() if v is not None}
        return cls.model_validate_json(json.dumps(present))

    checkpoint_name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="A Checkpoint in the Restore's namespace; restored once it is Ready.",
    )
    pod_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Name of the new Pod; default: <checkpointName>-restored.",
    )
    node_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Node to restore on; default: the source node when Ready, else a "
        "compatible node chosen by the operator.",
    )

    def target_pod(self) -> str:
        # Deterministic, so a restarted operator finds the Pod it may already have created.
        return self.pod_name or f"{self.checkpoint_name}-restored"[:253]


class RestoreTimings(BaseModel):
    """Milliseconds. The agent's staging streams the archive once, hashing it as it unpacks:
    fetch is the time it waited for the store, verify the time it spent hashing, extract the
    rest (decrypting, decompressing, writing and laying out the files). Then restore (Pod
    created until Running), and the total from the Restore's start."""

    fetch: int = 0
    verify: int = 0
    extract: int = 0
    restore: int = 0
    total: int = 0


class RestoreStatus(_CamelModel):
    phase: RestorePhase = RestorePhase.Pending
    message: str = Field(default="", description="What is happening now, or why it failed.")
    conditions: list[Condition] = Field(default_factory=list)
    pod_name: str | None = Field(default=None, description="The restored Pod.")
    node_name: str | None = Field(default=None, description="The node it was restored on.")
    agent: str | None = Field(default=None, description="Agent pod that staged the archive.")
    checkpoint_id: str | None = Field(default=None, description="Id in the checkpoints API.")
    staged: bool | None = Field(
        default=None, description="The agent holds the staged files (until cleaned up)."
    )
    started_at: str | None = None
    completed_at: str | None = None
    timings: RestoreTimings | None = Field(default=None, description="Milliseconds per step.")
    observed_generation: int | None = None
