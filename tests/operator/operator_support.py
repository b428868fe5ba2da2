"""Helpers of the operator tests: Checkpoint resources as a user sees them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from ckpt.api.client import Checkpoint, SyncCheckpointsClient
from ckpt.operator.models import GROUP, PLURAL, VERSION
from harness.controlplane import Cluster


class Checkpoints:
    """Creates Checkpoint resources and waits on their status, like a user with kubectl."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        self.custom = custom
        self.namespace = namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Checkpoint",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        current = self.get(name)
        return (current or {}).get("status") or {}

    def wait(
        self, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if until(status):
                return status
            time.sleep(0.2)
        raise AssertionError(f"{self.namespace}/{name} never got there; status: {status}")

    def wait_phase(self, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("phase") in phases, timeout)

    def delete(self, name: str, timeout: float = 60) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        deadline = time.monotonic() + timeout
        while self.get(name) is not None:
            assert time.monotonic() < deadline, f"{name} still there after {timeout}s"
            time.sleep(0.2)


def records_named(api: SyncCheckpointsClient, name: str) -> list[Checkpoint]:
    return [record for record in api.list() if record.name == name]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def event_reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    """Reasons of the Events about a Checkpoint, once the last step's has arrived (kopf
    posts Events in the background)."""
    deadline = time.monotonic() + 20
    while True:
        listed = cluster.kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.kind=Checkpoint,involvedObject.name={name}",
            "-o",
            "jsonpath={.items[*].reason}",
        ).stdout.split()
        if "Ready" in listed or time.monotonic() > deadline:
            return set(listed)
        time.sleep(0.3)
