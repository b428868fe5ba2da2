"""The Kubernetes calls of the CheckpointPolicy loop (ckpt.operator.policy.PolicyCluster), with
the official client in a thread. Pods are listed by the policy's selector in its namespace
only, once per round: no pod watch, no cache of every pod in the cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client

from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION
from ckpt.apis.policy import POLICY_LABEL, POLICY_PLURAL
from ckpt.apis.restore import RESTORE_PLURAL
from ckpt.kubejson import json_object, response_json
from ckpt.operator.policy import ClusterError

# Seconds one call may take; the round is retried at the next resync.
REQUEST_TIMEOUT = 30
T = TypeVar("T")


class PolicyKube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def list_pods(self, namespace: str, selector: str) -> list[Mapping[str, Any]]:
        def read() -> list[Mapping[str, Any]]:
            # Raw JSON keeps the apiserver's camelCase keys, as kopf bodies have them.
            response = self._core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return list(response_json(response).get("items") or [])

        return await _call(f"listing pods {selector!r}", read)

    async def list_checkpoints(self, namespace: str, policy: str) -> list[Mapping[str, Any]]:
        def read() -> list[Mapping[str, Any]]:
            found = self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=f"{POLICY_LABEL}={policy}",
                _request_timeout=REQUEST_TIMEOUT,
            )
            return list(json_object(found).get("items") or [])

        return await _call("listing the policy's Checkpoints", read)

    async def list_restores(self, namespace: str) -> list[Mapping[str, Any]]:
        def read() -> list[Mapping[str, Any]]:
            found = self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, RESTORE_PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
            return list(json_object(found).get("items") or [])

        return await _call("listing Restores", read)

    async def create_checkpoint(self, namespace: str, body: Mapping[str, Any]) -> None:
        def create() -> None:
            try:
                self._custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, dict(body),
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except client.ApiException as exc:
                if exc.status != 409:  # AlreadyExists: the same slot's Checkpoint
                    raise

        await _call("creating a Checkpoint", create)

    async def delete_checkpoint(self, namespace: str, name: str, uid: str) -> None:
        def delete() -> None:
            # The uid precondition: never a newer Checkpoint that took the name since.
            options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
            try:
                self._custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, body=options,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except client.ApiException as exc:
                if exc.status not in (404, 409):  # gone, or another object by that name
                    raise

        await _call(f"deleting Checkpoint {name}", delete)

    async def patch_policy_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        def patch() -> None:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, POLICY_PLURAL, name, {"status": dict(status)},
                _request_timeout=REQUEST_TIMEOUT,
            )

        await _call("writing the policy's status", patch)


async def _call(what: str, fn: Callable[[], T]) -> T:
    """Runs a blocking client call in a thread; its failures become ClusterError."""
    try:
        return await asyncio.to_thread(fn)
    except client.ApiException as exc:
        raise ClusterError(
            f"{what}: {exc.status} {exc.reason}: {_api_message(exc)}", status=exc.status
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterError(f"{what}: {exc}") from exc


def _api_message(exc: client.ApiException) -> str:
    """The apiserver's own message from a Status body, else the body as text."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body)
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return body[:300]
    return str(message) if message else body[:300]
