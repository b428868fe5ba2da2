"""Restore resources as the user's kubeconfig sees them: `ckpt restore` and `ckpt migrate`
create resources and follow them; the operator does the work (no agent calls, no tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from ckpt.apis.checkpoint import GROUP, VERSION
from ckpt.apis.restore import (
    RESTORE_KIND,
    RESTORE_PLURAL,
    RestorePhase,
    RestoreSpec,
    RestoreStatus,
)
from ckpt.kubejson import json_object
from ckpt.user.follow import finished_rows
from ckpt.user.resources import UserError, explain, read_status, unreadable

# The Restore's phases in order, for the progress display.
RESTORE_STEPS = [
    RestorePhase.Pending, RestorePhase.Staging, RestorePhase.Restoring, RestorePhase.Running
]
RESTORE_TERMINAL = {RestorePhase.Running, RestorePhase.Failed}


class Restores:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def create(self, namespace: str, name: str, spec: RestoreSpec) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": RESTORE_KIND,
            "metadata": {"name": name},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            return json_object(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESTORE_PLURAL, body
                )
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"create restore {namespace}/{name}")) from exc

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return json_object(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESTORE_PLURAL, name
                )
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"read restore {namespace}/{name}")) from exc

    def list(self, namespace: str) -> list[dict[str, Any]]:
        try:
            found = json_object(
                self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, RESTORE_PLURAL)
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"list restores in {namespace}")) from exc
        return list(found.get("items", []))

    def status(self, namespace: str, name: str) -> RestoreStatus:
        """The Restore's status as the operator wrote it (from this same model)."""
        return read_status(RestoreStatus, self.get(namespace, name), "restore")

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise UserError(explain(exc, f"delete pod {namespace}/{name}")) from exc


def restore_spec(resource: Mapping[str, Any]) -> RestoreSpec:
    """A Restore's spec, read with the apiserver's rules (the CRD is generated from this
    same model, so only a resource of another ckpt version can fail)."""
    try:
        return RestoreSpec.from_resource(resource.get("spec") or {})
    except ValidationError as exc:
        raise unreadable(exc, resource, "spec", "restore") from exc


def restore_rows(namespace: str, name: str, status: RestoreStatus) -> list[tuple[str, str]]:
    """The summary lines of a finished Restore."""
    rows: list[tuple[str, object]] = [
        ("phase", status.phase),
        ("pod", f"{namespace}/{status.pod_name}" if status.pod_name else ""),
        ("node / agent", f"{status.node_name or ''} / {status.agent or ''}"),
        ("checkpoint id", status.checkpoint_id or ""),
    ]
    return finished_rows(rows, status.timings, status.phase == RestorePhase.Failed,
                         status.message)
