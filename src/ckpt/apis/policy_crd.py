"""Generates the CheckpointPolicy CRD from the pydantic models (same generator as the
Checkpoint's).

`python -m ckpt.apis.policy_crd > crds/checkpointpolicy.yaml` writes it; a test checks that
the committed file is exactly what this module generates.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ckpt.apis.checkpoint import GROUP, VERSION
from ckpt.apis.crd import (
    conditions_as_map,
    crd_document,
    printer_column,
    structural_schema,
)
from ckpt.apis.policy import (
    DURATION,
    EMPTY_SELECTOR,
    EVERY_FORMAT,
    EVERY_RANGE,
    MAX_EVERY_SECONDS,
    MAX_POLICY_NAME,
    MIN_EVERY_SECONDS,
    POLICY_KIND,
    POLICY_PLURAL,
    CheckpointPolicySpec,
    CheckpointPolicyStatus,
)


def policy_crd() -> dict[str, Any]:
    spec = structural_schema(CheckpointPolicySpec)
    # The model's rules, for the apiserver too, with the same messages. `every` has no
    # `pattern`: the apiserver's message for one only quotes the regex.
    spec["properties"]["every"]["x-kubernetes-validations"] = [
        {"rule": f"self.matches('{DURATION}')", "message": f"every must be {EVERY_FORMAT}"},
        {
            "rule": f"!self.matches('{DURATION}') || "
            f"(duration(self) >= duration('{MIN_EVERY_SECONDS}s') && "
            f"duration(self) <= duration('{MAX_EVERY_SECONDS // 3600}h'))",
            "message": f"every must be {EVERY_RANGE}",
        },
    ]
    selector = spec["properties"]["selector"]
    selector["x-kubernetes-validations"] = [
        {
            "rule": "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
            "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "message": EMPTY_SELECTOR,
        }
    ]
    selector["properties"]["matchExpressions"]["items"]["x-kubernetes-validations"] = [
        {
            "rule": "(self.operator == 'In' || self.operator == 'NotIn') == "
            "(has(self.values) && size(self.values) > 0)",
            "message": "values must be non-empty for In and NotIn and empty for Exists and "
            "DoesNotExist",
        },
    ]
    status = structural_schema(CheckpointPolicyStatus, defaults=False)
    conditions_as_map(status)
    crd = crd_document(
        group=GROUP, version=VERSION, kind=POLICY_KIND, plural=POLICY_PLURAL,
        short_names=["cpol"], scope="Namespaced", spec=spec, status=status,
        printer_columns=_printer_columns(),
        description="Periodic checkpoints of the pods a label selector picks, the last few "
        "kept per lineage (the pod's Job, ReplicaSet, StatefulSet and ordinal, or the bare "
        "pod). checkpointOnEviction, evictionDeadlineSeconds and resumeReplacements are "
        "stored but not yet acted on.",
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["x-kubernetes-validations"] = [
        {
            "rule": f"size(self.metadata.name) <= {MAX_POLICY_NAME}",
            "message": f"the name may have at most {MAX_POLICY_NAME} characters: it is the "
            "value of the ckpt.dev/policy label on the policy's Checkpoints",
        }
    ]
    return crd


def _printer_columns() -> list[dict[str, Any]]:
    column = printer_column
    return [
        column("Pods", ".status.podsCovered", "integer"),
        column("Every", ".spec.every"),
        column("Keep", ".spec.keepLast", "integer"),
        column("Last-Checkpoint", ".status.lastCheckpointAt", "date"),
        column("Age", ".metadata.creationTimestamp", "date"),
        column("Last", ".status.lastCheckpoint", priority=1),
        column("Message", ".status.message", priority=1),
    ]


def render() -> str:
    header = (
        "# Generated from ckpt.apis.policy (python -m ckpt.apis.policy_crd); "
        "do not edit.\n"
    )
    return header + yaml.safe_dump(policy_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
