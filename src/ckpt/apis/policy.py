"""The CheckpointPolicy custom resource: the single source of its schema (its CRD is generated).

A policy selects pods of its namespace by label and checkpoints each of them periodically,
keeping the last few Ready checkpoints per lineage (ckpt.operator.lineage). The Checkpoints it
makes are ordinary Checkpoint resources, labelled with the policy and the lineage, owned by the
policy, and deleted with their archives when pruned or when the policy goes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ckpt.apis.checkpoint import DNS_SUBDOMAIN, Condition, _CamelModel, _integral
from ckpt.apis.storagelocation import LabelSelector

POLICY_PLURAL = "checkpointpolicies"
POLICY_KIND = "CheckpointPolicy"
# On every Checkpoint a policy makes: the policy's name, and its pod's lineage (a label, to
# select by; the readable workload as an annotation, for people and for the policy's status).
POLICY_LABEL = "ckpt.dev/policy"
LINEAGE_LABEL = "ckpt.dev/lineage"
WORKLOAD_ANNOTATION = "ckpt.dev/workload"
# The policy's name is a label value on its Checkpoints.
MAX_POLICY_NAME = 63

# Go-style durations in whole hours, minutes and seconds, largest unit first: 30s, 5m, 1h30m.
DURATION = r"^([0-9]{1,4}h)?([0-9]{1,5}m)?([0-9]{1,6}s)?$"
_DURATION_PART = re.compile(r"([0-9]+)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
# A dump freezes the pod for a moment and takes seconds: more often than this, a pod would
# spend much of its time frozen or queued. Longer than this, nobody resumes from it usefully.
MIN_EVERY_SECONDS = 10
MAX_EVERY_SECONDS = 30 * 24 * 3600
EVERY_FORMAT = "a duration in h, m and s, largest unit first, such as 30s, 5m, 1h or 1h30m"
EVERY_RANGE = "between 10s and 720h (30 days)"


def duration_seconds(text: str) -> int:
    """Seconds of a duration such as 30s, 5m, 1h30m; ValueError with the accepted format."""
    if not text or not re.fullmatch(DURATION, text):
        raise ValueError(f"{text!r} is not {EVERY_FORMAT}")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


class CheckpointPolicySpec(_CamelModel):
    """Which pods, how often, how many checkpoints to keep (edits apply within seconds)."""

    # Strict, like the apiserver: "true" is not a boolean and 3.0 is taken as 3 only where said.
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_resource(cls, spec: Mapping[str, Any]) -> CheckpointPolicySpec:
        """Validates a spec as the apiserver sent it (JSON types). A null given for a field
        with a default is dropped by the apiserver, which then applies the default."""
        not_nullable = {f.alias for f in cls.model_fields.values() if f.default is not None}
        present = {k: v for k, v in spec.items() if v is not None or k not in not_nullable}
        return cls.model_validate_json(json.dumps(present))

    selector: LabelSelector = Field(
        description="The pods of the policy's namespace it covers (matchLabels and "
        "matchExpressions, as in a Deployment's selector). It may not be empty: a policy over "
        "every pod of a namespace is rarely meant."
    )
    every: str | None = Field(
        default=None, min_length=2, max_length=20,
        description="How often each selected Running pod is checkpointed (a leave-running "
        f"Checkpoint): {EVERY_FORMAT}, {EVERY_RANGE}. Pods are spread over the period by a "
        "hash of their uid, so that they do not all dump at once. Absent: no periodic "
        "checkpoints.",
    )
    keep_last: Annotated[int, BeforeValidator(_integral)] = Field(
        default=3, ge=1, le=100,
        description="Ready checkpoints kept per lineage (the pod's Job, ReplicaSet, "
        "StatefulSet and ordinal, or the bare pod); a lineage that runs several pods at once "
        "(a ReplicaSet's replicas) keeps this many per pod it runs. Older ones are deleted "
        "with their archives.",
    )
    storage: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Name of the StorageLocation for the archives (default: the location "
        "marked default), as in a Checkpoint.",
    )
    checkpoint_on_eviction: bool = Field(
        default=True,
        description="Not yet acted on (stored for the eviction hold, a later release): hold an "
        "eviction of a selected pod until a final checkpoint of it is Ready.",
    )
    eviction_deadline_seconds: Annotated[int, BeforeValidator(_integral)] = Field(
        default=120, ge=10, le=3600,
        description="Not yet acted on (stored for the eviction hold, a later release): how "
        "long an eviction may be held before it proceeds without its checkpoint.",
    )
    resume_replacements: bool = Field(
        default=True,
        description="Not yet acted on (stored for resume, a later release): restore a new pod "
        "of a lineage from the lineage's latest Ready checkpoint.",
    )

    @field_validator("every")
    @classmethod
    def _every_is_a_duration_in_range(cls, value: str | None) -> str | None:
        if value is not None:
            seconds = duration_seconds(value)
            if not MIN_EVERY_SECONDS <= seconds <= MAX_EVERY_SECONDS:
                raise ValueError(f"every must be {EVERY_RANGE}, not {value}")
        return value

    @model_validator(mode="after")
    def _selector_not_empty(self) -> CheckpointPolicySpec:
        if not self.selector.match_labels and not self.selector.match_expressions:
            raise ValueError(EMPTY_SELECTOR)
        return self

    @property
    def every_seconds(self) -> int | None:
        return None if self.every is None else duration_seconds(self.every)


EMPTY_SELECTOR = (
    "selector needs matchLabels or matchExpressions: an empty selector would cover every pod "
    "of the namespace"
)


class LineageStatus(_CamelModel):
    """One lineage the policy holds checkpoints of, or covers a pod of."""

    lineage: str = Field(description="Value of the ckpt.dev/lineage label of its Checkpoints.")
    workload: str = Field(
        description="Job/NAME (Job/NAME/INDEX for an Indexed Job), ReplicaSet/NAME, "
        "StatefulSet/NAME/ORDINAL, another controller's KIND/NAME, or Pod/NAME (a bare pod)."
    )
    pods: list[str] = Field(default_factory=list, description="Its pods the policy covers now.")
    ready: int = Field(default=0, description="Ready checkpoints kept.")
    latest_ready: str | None = Field(default=None, description="Its newest Ready Checkpoint.")
    latest_ready_at: str | None = Field(
        default=None, description="RFC 3339 time that Checkpoint was taken."
    )


# Lineages listed in status (the newest first); lineageCount has them all.
MAX_STATUS_LINEAGES = 50


class CheckpointPolicyStatus(_CamelModel):
    pods_covered: int | None = Field(
        default=None, description="Pods the selector selects now (not finished)."
    )
    last_checkpoint: str | None = Field(
        default=None, description="The newest Ready Checkpoint of any lineage."
    )
    last_checkpoint_at: str | None = Field(
        default=None, description="RFC 3339 time the last checkpoint was taken."
    )
    lineages: list[LineageStatus] = Field(
        default_factory=list,
        description=f"Per lineage, its latest Ready Checkpoint and when (at most "
        f"{MAX_STATUS_LINEAGES}, the most recently checkpointed first).",
    )
    lineage_count: int | None = Field(default=None, description="Lineages in all.")
    message: str = Field(default="", description="What the policy does now, or why it cannot.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
