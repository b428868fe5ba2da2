"""What the Restore flow calls: the agents' staging endpoints and a few Kubernetes reads and
writes (official client, run in a thread; raw JSON keeps the apiserver's camelCase keys)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kubernetes import client

from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION
from ckpt.apis.restore import RESTORE_PLURAL, RestoreSpec, RestoreStatus
from ckpt.apis.storagelocation import REVEAL_SECRETS, Destination
from ckpt.contract.agent import StageJob, StageRequest
from ckpt.contract.agent_client import AgentAddress, AgentClient
from ckpt.contract.checkpoints_client import CheckpointsClient
from ckpt.errors import NotFound
from ckpt.kubejson import json_object, response_json
from ckpt.operator import locations
from ckpt.operator.agents import AgentPod
from ckpt.operator.kube import Kube, load_api_client
from ckpt.operator.locations import Locations
from ckpt.operator.restore import (
    CheckpointFacts,
    PodExists,
    RestoreDeps,
    Restorer,
    RestoreResource,
    verify_with_api,
)
from ckpt.operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class StagingClient(AgentClient):
    """The agent client with the staging calls of a Restore (`POST/GET/DELETE /v1/restores`)."""

    async def start_staging(self, agent: AgentAddress, request: StageRequest) -> StageJob:
        """Starts staging, or answers the job already there for this restore id."""
        response = await self._call(
            "POST", agent, "/v1/restores",
            request.model_dump(mode="json", context={REVEAL_SECRETS: True}),
        )
        return StageJob.model_validate_json(response.content)

    async def staging_job(
        self, agent: AgentAddress, restore_id: str, *, wait: float = 0,
        phase: str | None = None,
    ) -> StageJob:
        params = {"wait": wait, "phase": phase} if wait and phase is not None else None
        response = await self._call("GET", agent, f"/v1/restores/{restore_id}", params=params)
        return StageJob.model_validate_json(response.content)

    async def delete_staging(self, agent: AgentAddress, restore_id: str) -> None:
        # Already gone is what we wanted.
        with contextlib.suppress(NotFound):
            await self._call("DELETE", agent, f"/v1/restores/{restore_id}")


class RestoreKube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def get_checkpoint(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        def read() -> Mapping[str, Any] | None:
            try:
                found = json_object(self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                ))
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return found

        return await asyncio.to_thread(read)

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        def read() -> Mapping[str, Any] | None:
            try:
                response = self._core.read_namespaced_pod(
                    name, namespace, _preload_content=False
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return response_json(response)

        return await asyncio.to_thread(read)

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

    async def patch_status(self, namespace: str, name: str, status: RestoreStatus) -> None:
        body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, RESTORE_PLURAL, name, body,
        )


class RestoreReporter:
    """The flow's `Reporter`: status through the status subresource, Events through kopf."""

    def __init__(self, kube: RestoreKube, body: kopf.Body) -> None:
        self._kube, self._body = kube, body

    async def save(self, status: RestoreStatus) -> None:
        meta = self._body.metadata
        await self._kube.patch_status(meta.namespace or "", meta.name or "", status)

    def event(self, kind: str, reason: str, message: str) -> None:
        kopf.event(self._body, type=kind, reason=reason, message=message)
        meta = self._body.metadata
        level = logging.INFO if kind == "Normal" else logging.WARNING
        log.log(level, "restore %s/%s %s: %s", meta.namespace, meta.name, reason, message)


@dataclass
class RestoreClients:
    api: CheckpointsClient
    kube: RestoreKube
    agents: StagingClient
    locations: Locations

    async def aclose(self) -> None:
        await self.agents.aclose()


def build_restore_clients(
    config: OperatorSettings, kube: Kube, api: CheckpointsClient
) -> RestoreClients:
    return RestoreClients(
        api=api,
        kube=RestoreKube(load_api_client()),
        agents=StagingClient(
            config.agent_token_file, scheme=config.agent_scheme, ca_file=config.agent_ca_file,
            server_name=config.agent_server_name,
        ),
        locations=locations.from_kube(kube, config.agent_namespace),
    )


def locator(
    locations: Locations, namespace: str
) -> Callable[[str | None], Awaitable[Destination | None]]:
    """The Restore flow's `locate`: a Checkpoint's StorageLocation with its credentials and
    age identities, only if its spec.allowedNamespaces admits the Restore's `namespace`."""

    async def locate(name: str | None) -> Destination | None:
        if not name:
            return None  # node-local archives
        return await locations.destination(name, with_identities=True, namespace=namespace)

    return locate


def restorer(
    clients: RestoreClients,
    agent_pods: Callable[[], Iterable[AgentPod]],
    body: kopf.Body,
    poll_interval: float,
) -> Restorer:
    """The flow for one Restore, as kopf hands it over (body, spec, status)."""
    meta = body.metadata

    async def verify(
        facts: CheckpointFacts, namespace: str, location: Destination | None
    ) -> None:
        await verify_with_api(clients.api.list, facts, namespace, location)

    deps = RestoreDeps(
        kube=clients.kube, stager=clients.agents, agent_pods=agent_pods,
        locate=locator(clients.locations, meta.namespace or ""), verify=verify,
        poll_interval=poll_interval,
    )
    created = str(meta.creation_timestamp or "").replace("Z", "+00:00")
    resource = RestoreResource(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        created=dt.datetime.fromisoformat(created) if created else dt.datetime.now(dt.UTC),
        spec=RestoreSpec.from_resource(body.spec),
        generation=body.metadata.get("generation"),
    )
    status = RestoreStatus.model_validate(dict(body.status))
    return Restorer(deps, resource, status, RestoreReporter(clients.kube, body))
