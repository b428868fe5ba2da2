"""The operator's direct Kubernetes calls (official client, run in a thread), for every flow.

Raw JSON keeps the apiserver's camelCase keys, as kopf bodies have them. Target pods are read
with a GET when a flow needs them instead of being cached from a cluster-wide pod watch: a
checkpoint is rare, pods are many, and only agent pods are indexed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from kubernetes import client, config
from pydantic import BaseModel

from ckpt.apis import storagelocation as sl
from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION
from ckpt.kubejson import json_object, response_json
from ckpt.operator.locations import secret_values

T = TypeVar("T")


class PodExists(Exception):
    """A create found a Pod of that name already there (HTTP 409)."""


def load_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


async def _found(read: Callable[[], T]) -> T | None:
    """`read()` in a thread; None where the apiserver answers 404."""

    def call() -> T | None:
        try:
            return read()
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return await asyncio.to_thread(call)


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    # -- pods and nodes ------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await _found(lambda: response_json(
            self._core.read_namespaced_pod(name, namespace, _preload_content=False)
        ))

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        def create() -> Mapping[str, Any]:
            try:
                # The client sends a dict body as it is; its annotation names only V1Pod.
                response = self._core.create_namespaced_pod(
                    namespace, cast(Any, dict(body)), _preload_content=False
                )
            except client.ApiException as exc:
                if exc.status == 409:
                    raise PodExists(body["metadata"]["name"]) from exc
                raise
            return response_json(response)

        return await asyncio.to_thread(create)

    async def list_nodes(self) -> list[Mapping[str, Any]]:
        def read() -> list[Mapping[str, Any]]:
            response = self._core.list_node(_preload_content=False)
            return list(response_json(response).get("items") or [])

        return await asyncio.to_thread(read)

    async def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels (StorageLocations' allowedNamespaces), None if it is gone."""
        found = await _found(lambda: response_json(
            self._core.read_namespace(name, _preload_content=False)
        ))
        if found is None:
            return None
        labels = (found.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    # -- ckpt's resources ----------------------------------------------------------------------

    async def get_checkpoint(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await _found(lambda: json_object(
            self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        ))

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: BaseModel
    ) -> None:
        """Writes a namespaced ckpt resource's status (subresource) from its model."""
        body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, plural, name, body,
        )

    # -- storage locations (cluster-scoped) and their Secrets (operator's namespace only) -------

    async def get_storage_location(self, name: str) -> Mapping[str, Any] | None:
        return await _found(lambda: json_object(
            self._custom.get_cluster_custom_object(sl.GROUP, sl.VERSION, sl.PLURAL, name)
        ))

    async def list_storage_locations(self) -> list[Mapping[str, Any]]:
        result = json_object(
            await asyncio.to_thread(
                self._custom.list_cluster_custom_object, sl.GROUP, sl.VERSION, sl.PLURAL
            )
        )
        return list(result.get("items") or [])

    async def patch_storage_location_status(self, name: str, status: Mapping[str, Any]) -> None:
        await asyncio.to_thread(
            self._custom.patch_cluster_custom_object_status,
            sl.GROUP, sl.VERSION, sl.PLURAL, name, {"status": dict(status)},
        )

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret's decoded data; only ever called for the operator's own namespace."""
        found = await _found(lambda: response_json(
            self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        ))
        return None if found is None else secret_values(found)
