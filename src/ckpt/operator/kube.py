"""The operator's few direct Kubernetes calls (official client, run in a thread).

Target pods are read with a GET when a checkpoint needs them instead of being cached from a
cluster-wide pod watch: a checkpoint is rare, pods are many, and only agent pods are indexed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from ckpt.apis import storagelocation as sl
from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION, CheckpointStatus
from ckpt.kubejson import json_object, response_json
from ckpt.operator.locations import secret_values


def load_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        def read() -> Mapping[str, Any] | None:
            try:
                # Raw JSON keeps the apiserver's camelCase keys, as kopf bodies have them.
                response = self._core.read_namespaced_pod(
                    name, namespace, _preload_content=False
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return response_json(response)

        return await asyncio.to_thread(read)

    async def patch_status(self, namespace: str, name: str, status: CheckpointStatus) -> None:
        body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, body,
        )

    # -- storage locations (cluster-scoped) and their Secrets (operator's namespace only)

    async def get_storage_location(self, name: str) -> Mapping[str, Any] | None:
        def read() -> Mapping[str, Any] | None:
            try:
                result = json_object(
                    self._custom.get_cluster_custom_object(sl.GROUP, sl.VERSION, sl.PLURAL, name)
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return result

        return await asyncio.to_thread(read)

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

    async def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels (StorageLocations' allowedNamespaces), None if it is gone."""
        def read() -> Mapping[str, str] | None:
            try:
                response = self._core.read_namespace(name, _preload_content=False)
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            labels = (response_json(response).get("metadata") or {}).get("labels") or {}
            return {str(k): str(v) for k, v in labels.items()}

        return await asyncio.to_thread(read)

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret's decoded data; only ever called for the operator's own namespace."""
        def read() -> Mapping[str, str] | None:
            try:
                response = self._core.read_namespaced_secret(
                    name, namespace, _preload_content=False
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return secret_values(response_json(response))

        return await asyncio.to_thread(read)
