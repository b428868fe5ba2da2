"""The Restore flow as kopf hands a Restore over: its resource, status and dependencies,
built from the operator's shared clients."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable

import kopf

from ckpt.apis.restore import RESTORE_PLURAL, RestoreSpec, RestoreStatus
from ckpt.apis.storagelocation import Destination
from ckpt.operator.agents import AgentPod
from ckpt.operator.locations import Locations
from ckpt.operator.restore import (
    CheckpointFacts,
    RestoreDeps,
    Restorer,
    RestoreResource,
    verify_with_api,
)
from ckpt.operator.runtime import Clients, KopfReporter


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
    clients: Clients,
    agent_pods: Callable[[], Iterable[AgentPod]],
    body: kopf.Body,
    poll_interval: float,
) -> Restorer:
    """The flow for one Restore, as kopf hands it over (body, spec, status)."""
    meta = body.metadata
    # The Restore's namespace's tenant alone: a record of any other namespace is absent.
    api = clients.api.for_tenant(meta.namespace or "")

    async def verify(
        facts: CheckpointFacts, namespace: str, location: Destination | None
    ) -> None:
        await verify_with_api(api.list, facts, namespace, location)

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
    return Restorer(deps, resource, status, KopfReporter(clients.kube, body, RESTORE_PLURAL))
