"""Storage locations: the StorageLocation resource (its CRD is generated from these models) and
the resolved form the operator hands to an agent for one job.

A location is defined by a cluster admin (cluster-scoped resource). Users only name it in a
Checkpoint's ``spec.storage``; they never give a path or URL, so nobody who may create a
Checkpoint can make the privileged agent write anywhere else.

Object keys are ``<prefix>/<namespace>/<checkpoint-id>.tar.zst[.age]``: one prefix per
namespace, so a bucket policy or a prune can work per namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "ckpt.dev"
VERSION = "v1alpha1"
PLURAL = "storagelocations"
KIND = "StorageLocation"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# S3 bucket names (also valid GCS bucket and Azure container names).
BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# Slash-separated segments of safe characters; no "." or ".." segment, no leading slash.
# Empty is allowed (no prefix).
PREFIX = r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*)?$"
# An age X25519 recipient: "age1" + 58 bech32 characters.
AGE_RECIPIENT = r"^age1[02-9ac-hj-np-z]{58}$"
CHECKPOINT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

# Keys of the credentials Secret (S3) and of the identity Secret (age).
ACCESS_KEY_ID = "accessKeyId"
SECRET_ACCESS_KEY = "secretAccessKey"  # noqa: S105 - a key name, not a secret
SESSION_TOKEN = "sessionToken"  # noqa: S105 - a key name, not a secret
IDENTITY_KEY = "identity"


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class LocationType(StrEnum):
    s3 = "s3"
    file = "file"


class SecretRef(_CamelModel):
    """A Secret in the credentials namespace (ckpt-credentials). No namespace field on
    purpose: the operator may read Secrets only there (a namespaced Role), nowhere else."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class EncryptionSpec(_CamelModel):
    """age encryption at rest. Agents encrypt to every recipient; any one identity decrypts,
    so a key rotation adds the new recipient, re-keys or expires old archives, then drops the
    old recipient and identity."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[Annotated[str, Field(pattern=AGE_RECIPIENT)]] = Field(
        min_length=1, max_length=16,
        description="age X25519 public keys (age1...); archives are encrypted to all of them.",
    )
    identity_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret (in the credentials namespace) whose 'identity' key holds the age "
        "secret key(s), one per line; needed only to restore.",
    )


# A label key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
MAX_LABEL_KEY = 253 + 1 + 63


class SelectorOperator(StrEnum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"


class LabelSelectorRequirement(_CamelModel):
    """One requirement of a label selector, as in Kubernetes' LabelSelector."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_LABEL_KEY, pattern=LABEL_KEY)
    operator: SelectorOperator
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=list, max_length=256,
        description="Non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (SelectorOperator.In, SelectorOperator.NotIn)
        if wants_values != bool(self.values):
            raise ValueError(
                "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"
            )
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is SelectorOperator.In:
            return self.key in labels and labels[self.key] in self.values
        if self.operator is SelectorOperator.NotIn:
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator is SelectorOperator.Exists:
            return self.key in labels
        return self.key not in labels


class LabelSelector(_CamelModel):
    """Kubernetes' LabelSelector: every matchLabels pair and every matchExpressions
    requirement must hold; an empty selector matches everything."""

    model_config = ConfigDict(extra="forbid")

    # Keys are checked by the validator below (and by a CEL rule in the CRD): a JSON schema
    # for map keys (propertyNames) is not allowed in a structural CRD schema.
    match_labels: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=64,
        description="Labels that must all be present, as given.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=64, description="Requirements that must all hold."
    )

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if len(k) > MAX_LABEL_KEY or not re.match(LABEL_KEY, k)]
        if bad:
            raise ValueError(f"not label keys: {', '.join(sorted(bad))}")
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def query(self) -> str:
        """The selector in the apiserver's `labelSelector` syntax, which is also how
        `kubectl describe` prints one: app=train,tier in (a,b),!canary."""
        parts = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for requirement in self.match_expressions:
            values = ",".join(requirement.values)
            parts.append({
                SelectorOperator.In: f"{requirement.key} in ({values})",
                SelectorOperator.NotIn: f"{requirement.key} notin ({values})",
                SelectorOperator.Exists: requirement.key,
                SelectorOperator.DoesNotExist: f"!{requirement.key}",
            }[requirement.operator])
        return ",".join(parts)


class StorageLocationSpec(_CamelModel):
    """Where archives go. Only cluster admins create these; Checkpoints name one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: LocationType = Field(description="s3 (any S3-compatible store) or file (node-local).")
    bucket: str | None = Field(
        default=None, min_length=3, max_length=63, pattern=BUCKET,
        description="Bucket (type s3).",
    )
    prefix: str = Field(
        default="", max_length=512, pattern=PREFIX,
        description="Key prefix (s3) or subfolder of the agent's archive folder (file).",
    )
    endpoint: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="S3 endpoint URL (default: AWS for the region).",
    )
    region: str | None = Field(
        default=None, max_length=64, pattern=r"^[a-z0-9-]+$", description="S3 region."
    )
    path_style: bool = Field(
        default=False, description="Path-style requests (most S3-compatible servers need it)."
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret in the credentials namespace with keys accessKeyId, "
        "secretAccessKey and optionally sessionToken (type s3).",
    )
    encryption: EncryptionSpec | None = Field(
        default=None, description="Encrypt archives at rest with age."
    )
    default: bool = Field(
        default=False, description="Used by Checkpoints that name no location."
    )
    allowed_namespaces: LabelSelector | None = Field(
        default=None,
        description="Namespaces (by their labels; kubernetes.io/metadata.name is the name) "
        "whose Checkpoints and Restores may use this location. Absent: every namespace; an "
        "empty selector ({}) also matches every namespace.",
    )

    def allows(self, namespace_labels: Mapping[str, str]) -> bool:
        """Whether a namespace with these labels may use the location."""
        return self.allowed_namespaces is None or self.allowed_namespaces.matches(
            namespace_labels
        )

    @model_validator(mode="after")
    def _type_fields(self) -> StorageLocationSpec:
        if self.type is LocationType.s3 and not self.bucket:
            raise ValueError("type s3 needs a bucket")
        if self.type is LocationType.file and (self.bucket or self.endpoint):
            raise ValueError("type file takes no bucket or endpoint")
        return self


class LocationCondition(_CamelModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class StorageLocationStatus(_CamelModel):
    phase: Literal["Available", "Unavailable", "Unknown"] | None = None
    message: str = Field(default="", description="Result of the last reachability check.")
    conditions: list[LocationCondition] = Field(default_factory=list)
    last_checked: str | None = Field(default=None, description="RFC 3339 time of the check.")
    observed_generation: int | None = None


# ------------------------------------------------------------------ the agent's view of a location


# Serialization context key: the operator's request to an agent is the one place secrets are
# written out in clear (over TLS, to the agent that uses them for one job). Everywhere else
# (logs, job records, status) they stay masked as pydantic masks them.
REVEAL_SECRETS = "reveal_secrets"


def _secret_out(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return value.get_secret_value() if context.get(REVEAL_SECRETS) else str(value)


class S3Credentials(BaseModel):
    """Static S3 keys, carried in memory only for one job (never in a record, log or status)."""

    model_config = ConfigDict(extra="forbid")

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None

    @field_serializer("access_key_id", "secret_access_key", "session_token")
    def _secrets(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return None if value is None else _secret_out(value, info)


class Destination(BaseModel):
    """A StorageLocation resolved by the operator for one agent job (checkpoint, restore,
    delete): its settings plus the credentials, read from the location's Secret just before."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    type: LocationType
    bucket: str | None = Field(default=None, pattern=BUCKET)
    prefix: str = Field(default="", max_length=512, pattern=PREFIX)
    endpoint: str | None = Field(default=None, max_length=2048)
    region: str | None = None
    path_style: bool = False
    credentials: S3Credentials | None = None
    recipients: list[Annotated[str, Field(pattern=AGE_RECIPIENT)]] = Field(
        default_factory=list, max_length=16
    )
    # age secret keys; only restores carry them.
    identities: list[SecretStr] = Field(default_factory=list, max_length=16)

    @field_serializer("identities")
    def _identities(self, value: list[SecretStr], info: SerializationInfo) -> list[str]:
        return [_secret_out(v, info) for v in value]

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    def key_for(self, namespace: str, checkpoint_id: str, compression: str = "zstd") -> str:
        """The object key (s3) or relative path (file) of a checkpoint's archive."""
        if not re.match(DNS_LABEL, namespace) or len(namespace) > 63:
            raise ValueError("bad namespace")
        if not re.match(CHECKPOINT_ID, checkpoint_id) or len(checkpoint_id) > 64:
            raise ValueError("bad checkpoint id")
        name = f"{checkpoint_id}.tar.zst" if compression == "zstd" else f"{checkpoint_id}.tar"
        if self.encrypted:
            name += ".age"
        return "/".join(p for p in (self.prefix, namespace, name) if p)

    def __eq__(self, other: object) -> bool:
        # The same job's destination whatever the credentials: agent job records keep them
        # masked, and a retry may carry rotated ones.
        return isinstance(other, Destination) and self.redacted() == other.redacted()

    __hash__ = None  # type: ignore[assignment]

    def redacted(self) -> dict[str, object]:
        """For logs and errors: everything but secrets."""
        return self.model_dump(exclude={"credentials", "identities"})

