"""What deleting a Checkpoint does: deprecate the API record, delete the archive if asked.

Both act only on what the operator bound to this Checkpoint (binding.py): a status rewritten
to name another namespace's record or archive deprecates and deletes nothing.

An archive in object storage is deleted by the operator itself through its StorageLocation,
whether or not the agent that wrote it still exists. A node-local (file) archive needs an
agent of its node that knows it: an agent deletes only archives its own jobs wrote (by the
checkpoint id, so no caller can name a path on the node), and a node runs two agents (CPU
and GPU) that each know only the jobs they ran or found recorded when they started. So the
agent that took the checkpoint is asked first, then the node's others; one that does not know
the job answers 404 `not_found`, which says nothing of the file, and the next is asked. Only
an agent that knows the job and finds no file (404 `gone`) tells that the archive is gone.
When no agent could delete it, the deletion is retried and says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from ckpt.apis.checkpoint import CheckpointStatus, RetainPolicy
from ckpt.apis.storagelocation import LocationType
from ckpt.contract.checkpoints_api import Checkpoint
from ckpt.contract.checkpoints_api import CheckpointStatus as ApiStatus
from ckpt.contract.checkpoints_client import CheckpointsClient
from ckpt.errors import Conflict, NotFound, ServiceError
from ckpt.operator import binding
from ckpt.operator.agents import AgentPod
from ckpt.operator.locations import LocationError, Locations
from ckpt.operator.reconcile import Resource
from ckpt.storage.objects import StorageError

log = logging.getLogger(__name__)

# The agent's 404 code when the job is known and its archive file is not there.
ARCHIVE_GONE = "gone"


class RetentionError(Exception):
    """Deletion cannot finish yet (retried by the handler)."""


class ArchiveAgents(Protocol):
    """The agent call a node-local archive's deletion needs (`AgentClient.delete_archive`:
    its 404s carry the agent's code)."""

    async def delete_archive(self, agent: AgentPod, checkpoint_id: str) -> None: ...


async def release(
    resource: Resource,
    status: CheckpointStatus,
    api: CheckpointsClient,
    agents: ArchiveAgents,
    agent_pods: Iterable[AgentPod],
    locations: Locations | None = None,
) -> list[str]:
    """Deprecates the record and, under `retainPolicy: Delete`, removes the archive. Returns
    what was done, for the Event. Raises `binding.NotBound` (nothing done: the status names
    a record or archive not bound to this Checkpoint) and `RetentionError` (retry later)."""
    delete = resource.spec.retain_policy is RetainPolicy.Delete and bool(status.restore_path)
    record = await _record(api, status.checkpoint_id) if status.checkpoint_id else None
    if record is None:
        # Never registered, or cleanup removed the record: nothing to deprecate, and nothing
        # proves that an archive the status names is this Checkpoint's.
        if delete:
            raise binding.NotBound(
                binding.NOT_BOUND,
                f"checkpoint {resource.name}: no API record proves that {status.restore_path} "
                "is this Checkpoint's archive; it was not deleted",
            )
        return []
    claim = binding.Claim(
        namespace=resource.namespace, name=resource.name, uid=resource.uid,
        pod=resource.spec.pod_name, checkpoint_id=str(record.id),
        restore_path=status.restore_path or "", storage_location=status.storage_location,
        node=status.node_name,
    )
    if delete:
        binding.check_record(record, claim)
    elif binding.is_bound(record):
        binding.check_owner(record, claim)
    elif _namespace_of(record) != resource.namespace:
        # A record naming no Checkpoint (one not recorded yet or failed before, or an older
        # operator's): deprecated only for a Checkpoint of its own namespace.
        raise binding.NotBound(
            binding.MISMATCH,
            f"checkpoint {resource.name}: API record {record.id} belongs to another namespace "
            f"than {resource.namespace}; it was not deprecated",
        )
    done: list[str] = []
    if delete:
        # Before deprecating: a deprecated record may be cleaned up before a retry, and then
        # nothing would prove the archive is this Checkpoint's.
        done.append(await _delete_archive(claim, record, agents, agent_pods, locations))
    if record.status is not ApiStatus.deprecated:
        try:
            await api.deprecate(str(record.id))
            done.insert(0, f"deprecated {record.id} in the API")
        except NotFound:
            pass  # cleanup may already have removed it
        except ServiceError as exc:
            raise RetentionError(f"checkpoints API: deprecate {record.id}: {exc}") from exc
    return done


def _namespace_of(record: Checkpoint) -> str | None:
    """The namespace of a record that names no Checkpoint: from its info, else from the
    name the operator gives every record at creation (`<namespace>/<name>`)."""
    namespace = binding.info_of(record).get(binding.NAMESPACE)
    if namespace is None and record.name and "/" in record.name:
        namespace = record.name.partition("/")[0]
    return str(namespace) if namespace is not None else None


async def _record(api: CheckpointsClient, checkpoint_id: str) -> Checkpoint | None:
    try:
        records = await api.list([checkpoint_id])
    except ServiceError as exc:
        raise RetentionError(f"checkpoints API: list {checkpoint_id}: {exc}") from exc
    return records[0] if records else None


async def _delete_archive(
    claim: binding.Claim,
    record: Checkpoint,
    agents: ArchiveAgents,
    agent_pods: Iterable[AgentPod],
    locations: Locations | None,
) -> str:
    url = claim.restore_path
    location = None
    if claim.storage_location:
        if locations is None:
            raise RetentionError(f"no StorageLocation known for {url}")
        try:
            location = await locations.destination(claim.storage_location)
        except LocationError as exc:
            raise RetentionError(f"cannot delete {url}: {exc}") from exc
    binding.check_archive(claim, location)
    if location is not None and location.type is LocationType.s3:
        deleted = await delete_through_location(locations, claim.storage_location, url)
        return f"deleted {url}" if deleted else f"{url} was already gone"
    # The node and agent as the operator recorded them (the status's node agreed).
    info = binding.info_of(record)
    holder = info.get(binding.AGENT)
    return await _delete_on_node(
        url, claim.checkpoint_id, str(info.get(binding.NODE) or ""),
        str(holder) if holder else None, agents, agent_pods,
    )


async def _delete_on_node(
    url: str,
    checkpoint_id: str,
    node: str,
    holder: str | None,
    agents: ArchiveAgents,
    agent_pods: Iterable[AgentPod],
) -> str:
    """Asks the node's agents, the one that took the checkpoint (`holder`, from the API
    record) first, until one deletes the archive or knows it is gone."""
    candidates = sorted(
        (a for a in agent_pods if a.node == node),
        key=lambda a: (a.ref != holder, not a.ready, a.name),
    )
    if not candidates:
        raise RetentionError(f"no agent on node {node or '(unknown)'} to delete {url}")
    answers: list[str] = []
    for agent in candidates:
        try:
            await agents.delete_archive(agent, checkpoint_id)
        except NotFound as exc:
            if exc.code == ARCHIVE_GONE:
                return f"{url} was already gone"
            answers.append(f"{agent.ref}: {exc.code or 'not found'}")
            continue
        except Conflict as exc:
            # Its job still runs (the Checkpoint was deleted mid-dump): the archive comes.
            raise RetentionError(f"{url} not deleted yet: {exc}") from exc
        except ServiceError as exc:
            answers.append(f"{agent.ref}: {exc}")
            continue
        return f"deleted {url} through agent {agent.ref}"
    raise RetentionError(
        f"no agent on node {node} could delete {url} ({'; '.join(answers)}); the file stays "
        "until one can"
    )


async def delete_through_location(
    locations: Locations | None, location: str | None, url: str
) -> bool:
    """Deletes an archive (given by its URL, checked to lie in the location); False if it
    was not there."""
    if locations is None or not location:
        raise RetentionError(f"no StorageLocation known for {url}")
    try:
        store = await locations.store(location)
        key = store.key_of(url)
        return await asyncio.to_thread(store.delete, key)
    except (LocationError, StorageError) as exc:
        raise RetentionError(f"cannot delete {url}: {exc}") from exc
