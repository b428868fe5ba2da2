"""What deleting a Checkpoint does: deprecate the API record, delete the archive if asked.

An archive in object storage is deleted by the operator itself through its StorageLocation,
whether or not the agent that wrote it still exists; only a node-local (file) archive needs
the agent of its node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ckpt.agent.client import AgentClient
from ckpt.api.client import CheckpointsClient
from ckpt.errors import NotFound
from ckpt.operator.agents import AgentPod
from ckpt.operator.locations import LocationError, Locations
from ckpt.operator.models import CheckpointSpec, CheckpointStatus, RetainPolicy
from ckpt.storage.objects import StorageError

log = logging.getLogger(__name__)


class RetentionError(Exception):
    """Deletion cannot finish yet (retried by the handler)."""


async def release(
    spec: CheckpointSpec,
    status: CheckpointStatus,
    api: CheckpointsClient,
    agents: AgentClient,
    agent_pods: Iterable[AgentPod],
    locations: Locations | None = None,
) -> list[str]:
    """Deprecates the record and, under `retainPolicy: Delete`, removes the archive through
    the agent of the node that holds it. Returns what was done, for the Event."""
    done: list[str] = []
    if status.checkpoint_id:
        try:
            await api.deprecate(status.checkpoint_id)
            done.append(f"deprecated {status.checkpoint_id} in the API")
        except NotFound:
            pass  # cleanup may already have removed it
    if (
        spec.retain_policy is RetainPolicy.Delete
        and status.restore_path
        and status.restore_path.startswith("s3://")
    ):
        if locations is None or not status.storage_location:
            raise RetentionError(f"no StorageLocation known for {status.restore_path}")
        deleted = await delete_through_location(
            locations, status.storage_location, status.restore_path
        )
        done.append(f"deleted {status.restore_path}" if deleted else
                    f"{status.restore_path} was already gone")
        return done
    if spec.retain_policy is RetainPolicy.Delete and status.restore_path and status.checkpoint_id:
        holder = next((a for a in agent_pods if a.node == status.node_name), None)
        if holder is None:
            raise RetentionError(
                f"no agent on node {status.node_name} to delete {status.restore_path}"
            )
        await agents.delete_archive(holder, status.checkpoint_id)
        done.append(f"deleted {status.restore_path}")
    return done


async def delete_through_location(locations: Locations, location: str, url: str) -> bool:
    """Deletes an archive (given by its URL, checked to lie in the location); False if it
    was not there."""
    try:
        store = await locations.store(location)
        key = store.key_of(url)
        return await asyncio.to_thread(store.delete, key)
    except (LocationError, StorageError) as exc:
        raise RetentionError(f"cannot delete {url}: {exc}") from exc
