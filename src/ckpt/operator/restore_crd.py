"""Generates the Restore CRD from the pydantic models (same generator as the Checkpoint's).

`python -m ckpt.operator.restore_crd > crds/restore.yaml` writes it; a test checks that the
committed file is exactly what this module generates.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ckpt.operator.crd import structural_schema
from ckpt.operator.models import GROUP, VERSION
from ckpt.operator.restore_models import (
    RESTORE_KIND,
    RESTORE_PLURAL,
    RestoreSpec,
    RestoreStatus,
)


def restore_crd() -> dict[str, Any]:
    spec = structural_schema(RestoreSpec)
    spec["x-kubernetes-validations"] = [
        {
            "rule": "self == oldSelf",
            "message": "spec is immutable: create a new Restore instead",
        }
    ]
    status = structural_schema(RestoreStatus, defaults=False)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["required"] = ["type", "status"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{RESTORE_PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": RESTORE_KIND,
                "listKind": f"{RESTORE_KIND}List",
                "plural": RESTORE_PLURAL,
                "singular": RESTORE_KIND.lower(),
                "shortNames": ["rst"],
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Ready Checkpoint brought back as a new Pod whose "
                            "processes continue from the checkpoint.",
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


def _printer_columns() -> list[dict[str, Any]]:
    def column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": kind, "jsonPath": path, **extra}

    return [
        column("Phase", ".status.phase"),
        column("Checkpoint", ".spec.checkpointName"),
        column("Pod", ".status.podName"),
        column("Node", ".status.nodeName"),
        column("Age", ".metadata.creationTimestamp", "date"),
        column("Message", ".status.message", priority=1),
        column("Total-ms", ".status.timings.total", "integer", priority=1),
    ]


def render() -> str:
    header = (
        "# Generated from ckpt.operator.restore_models (python -m ckpt.operator.restore_crd); "
        "do not edit.\n"
    )
    return header + yaml.safe_dump(restore_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
