"""Generates the Restore CRD from the pydantic models (same generator as the Checkpoint's).

`python -m ckpt.apis.restore_crd > crds/restore.yaml` writes it; a test checks that the
committed file is exactly what this module generates.
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
from ckpt.apis.restore import (
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
    conditions_as_map(status)
    return crd_document(
        group=GROUP, version=VERSION, kind=RESTORE_KIND, plural=RESTORE_PLURAL,
        short_names=["rst"], categories=["all"], scope="Namespaced", spec=spec,
        status=status, printer_columns=_printer_columns(),
        description="A Ready Checkpoint brought back as a new Pod whose processes continue "
        "from the checkpoint.",
    )


def _printer_columns() -> list[dict[str, Any]]:
    column = printer_column
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
        "# Generated from ckpt.apis.restore (python -m ckpt.apis.restore_crd); "
        "do not edit.\n"
    )
    return header + yaml.safe_dump(restore_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
