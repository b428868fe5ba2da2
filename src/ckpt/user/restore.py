"""`ckpt restore`: a Restore resource, followed until its Pod runs.

The user never talks to a node agent and never holds an operator credential: the operator
reads the Checkpoint (whose status a user may be able to patch), checks it against the
checkpoints API, and has its own agent stage the archive (README, Security model).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from ckpt.operator.models import GROUP, VERSION
from ckpt.operator.restore_models import RESTORE_KIND, RESTORE_PLURAL, RestorePhase
from ckpt.user.resources import UserError, explain

TERMINAL = {RestorePhase.Running.value, RestorePhase.Failed.value}


class Restores:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    def create(
        self, namespace: str, name: str, checkpoint: str, *,
        pod_name: str | None = None, node_name: str | None = None,
    ) -> dict[str, Any]:
        spec = {"checkpointName": checkpoint}
        if pod_name:
            spec["podName"] = pod_name
        if node_name:
            spec["nodeName"] = node_name
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": RESTORE_KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, RESTORE_PLURAL, body
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"create restore {namespace}/{name}")) from exc

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, RESTORE_PLURAL, name
            )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"read restore {namespace}/{name}")) from exc


def follow(
    restores: Restores, namespace: str, name: str, *, timeout: float,
    on_phase: Callable[[str, str], None] = lambda phase, message: None,
    interval: float = 1.0,
) -> dict[str, Any]:
    """The Restore's status once it is Running or Failed; UserError at the deadline."""
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        status = restores.get(namespace, name).get("status") or {}
        phase = status.get("phase") or RestorePhase.Pending.value
        if phase != seen:
            on_phase(phase, status.get("message", ""))
            seen = phase
        if phase in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise UserError(
                f"restore {namespace}/{name} is still {phase} after {timeout:.0f} s: "
                f"{status.get('message', '')} (kubectl describe restore {name} -n {namespace})"
            )
        time.sleep(interval)
