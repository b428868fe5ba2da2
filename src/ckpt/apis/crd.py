"""Generates the Checkpoint CRD from the pydantic models, so the two cannot drift.

`python -m ckpt.apis.crd > crds/checkpoint.yaml` writes it; a test checks that the committed
file is exactly what this module generates.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from ckpt.apis import storagelocation as sl
from ckpt.apis.checkpoint import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    CheckpointSpec,
    CheckpointStatus,
)

# JSON-schema keywords pydantic emits that a structural CRD schema does not accept.
_DROPPED = {"title", "additionalProperties", "$defs"}


def structural_schema(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    """The model's JSON schema rewritten as a Kubernetes structural schema.

    `defaults=False` leaves defaulting to the writer: the operator owns every status field, and
    apiserver-side defaults there would only make a fresh status look half-written.
    """
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural_object(schema, schema.get("$defs", {}), defaults)


def _structural(node: Any, defs: dict[str, Any], defaults: bool) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs, defaults) for item in node]
    if isinstance(node, dict):
        return _structural_object(node, defs, defaults)
    return node


def _structural_object(
    node: dict[str, Any], defs: dict[str, Any], defaults: bool
) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural_object(merged, defs, defaults)
    any_of = node.get("anyOf")
    if any_of is not None:
        # Optional[X] arrives as anyOf [X, null]; Kubernetes spells it `nullable: true`.
        others = [branch for branch in any_of if branch.get("type") != "null"]
        if len(others) != 1:
            raise ValueError(f"cannot express anyOf with {len(others)} non-null branches")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural_object({**others[0], **rest, "nullable": True}, defs, defaults)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties" and isinstance(value, dict):
            # A map (dict[str, X]): its values' schema stays, or the apiserver would prune
            # every entry. Only `additionalProperties: false` (extra="forbid") is dropped.
            out[key] = _structural(value, defs, defaults)
            continue
        if key in _DROPPED or (key == "default" and (value is None or not defaults)):
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs, defaults) for name, prop in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, defaults)
        else:
            out[key] = value
    return out


def printer_column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


def conditions_as_map(status: dict[str, Any]) -> None:
    """Standard conditions: a list keyed by type, so server-side apply merges them by type."""
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["required"] = ["type", "status"]


def crd_document(
    *, group: str, version: str, kind: str, plural: str, short_names: list[str],
    scope: str, description: str, spec: dict[str, Any], status: dict[str, Any],
    printer_columns: list[dict[str, Any]], categories: list[str] | None = None,
) -> dict[str, Any]:
    """The CustomResourceDefinition envelope every ckpt resource shares: one served and
    stored version with a status subresource, spec required."""
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": short_names,
    }
    if categories:
        names["categories"] = categories
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": names,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def checkpoint_crd() -> dict[str, Any]:
    spec = structural_schema(CheckpointSpec)
    spec["x-kubernetes-validations"] = [
        {
            "rule": "self == oldSelf",
            "message": "spec is immutable once accepted: create a new Checkpoint instead",
        }
    ]
    status = structural_schema(CheckpointStatus, defaults=False)
    # A whole Pod spec: kept as written (a structural schema would prune every field in it).
    status["properties"]["podTemplate"] = {
        "type": "object",
        "nullable": True,
        "description": status["properties"]["podTemplate"].get("description", ""),
        "x-kubernetes-preserve-unknown-fields": True,
    }
    conditions_as_map(status)
    return crd_document(
        group=GROUP, version=VERSION, kind=KIND, plural=PLURAL, short_names=["ckpt"],
        categories=["all"], scope="Namespaced", spec=spec, status=status,
        printer_columns=_printer_columns(),
        description="A checkpoint of a running pod's containers (CRIU, with GPU state when "
        "asked).",
    )


def _printer_columns() -> list[dict[str, Any]]:
    column = printer_column
    return [
        column("Phase", ".status.phase"),
        column("Pod", ".spec.podName"),
        column("Node", ".status.nodeName"),
        column("GPU", ".status.gpu"),
        column("Size", ".status.size"),
        column("Age", ".metadata.creationTimestamp", "date"),
        column("Message", ".status.message", priority=1),
        column("Checkpoint-ID", ".status.checkpointId", priority=1),
    ]


def storage_location_crd() -> dict[str, Any]:
    """The cluster-scoped StorageLocation CRD (admin-defined archive destinations)."""
    spec = structural_schema(sl.StorageLocationSpec)
    # The model's cross-field rules, for the apiserver too.
    spec["x-kubernetes-validations"] = [
        {"rule": "self.type != 's3' || has(self.bucket)", "message": "type s3 needs a bucket"},
        {
            "rule": "self.type != 'file' || (!has(self.bucket) && !has(self.endpoint))",
            "message": "type file takes no bucket or endpoint",
        },
    ]
    requirement = spec["properties"]["allowedNamespaces"]["properties"]["matchExpressions"][
        "items"
    ]
    requirement["x-kubernetes-validations"] = [
        {
            "rule": "(self.operator == 'In' || self.operator == 'NotIn') == "
            "(has(self.values) && size(self.values) > 0)",
            "message": "values must be non-empty for In and NotIn and empty for Exists and "
            "DoesNotExist",
        },
    ]
    status = structural_schema(sl.StorageLocationStatus, defaults=False)
    conditions_as_map(status)
    column = printer_column
    return crd_document(
        group=sl.GROUP, version=sl.VERSION, kind=sl.KIND, plural=sl.PLURAL, short_names=["sl"],
        scope="Cluster", spec=spec, status=status,
        printer_columns=[
            column("Type", ".spec.type"),
            column("Bucket", ".spec.bucket"),
            column("Prefix", ".spec.prefix"),
            column("Default", ".spec.default", "boolean"),
            column("Encrypted", ".spec.encryption.recipients[0]", priority=1),
            column("Phase", ".status.phase"),
            column("Last-Checked", ".status.lastChecked", "date"),
            column("Message", ".status.message", priority=1),
            column("Age", ".metadata.creationTimestamp", "date"),
        ],
        description="Where checkpoint archives are stored: an S3-compatible bucket or each "
        "node's local archive folder.",
    )


def render_storage_location() -> str:
    header = (
        "# Generated from ckpt.apis.storagelocation "
        "(python -m ckpt.apis.crd storagelocation); do not edit.\n"
    )
    return header + yaml.dump(
        storage_location_crd(), Dumper=_NoAliases, sort_keys=False, width=100
    )


class _NoAliases(yaml.SafeDumper):
    """Writes shared sub-objects out in full: no YAML anchors in a manifest."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated from ckpt.apis.checkpoint (python -m ckpt.apis.crd); do not edit.\n"
    return header + yaml.safe_dump(checkpoint_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    if sys.argv[1:] == ["storagelocation"]:
        sys.stdout.write(render_storage_location())
    else:
        sys.stdout.write(render())
