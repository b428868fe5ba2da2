"""What deleting a Checkpoint does: deprecate the API record, delete the archive if asked."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ckpt.agent.client import AgentClient
from ckpt.api.client import CheckpointsClient
from ckpt.errors import NotFound
from ckpt.operator.agents import AgentPod
from ckpt.operator.models import CheckpointSpec, CheckpointStatus, RetainPolicy

log = logging.getLogger(__name__)


class RetentionError(Exception):
    """Deletion cannot finish yet (retried by the handler)."""


async def release(
    spec: CheckpointSpec,
    status: CheckpointStatus,
    api: CheckpointsClient,
    agents: AgentClient,
    agent_pods: Iterable[AgentPod],
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
    if spec.retain_policy is RetainPolicy.Delete and status.restore_path and status.checkpoint_id:
        holder = next((a for a in agent_pods if a.node == status.node_name), None)
        if holder is None:
            raise RetentionError(
                f"no agent on node {status.node_name} to delete {status.restore_path}"
            )
        await agents.delete_archive(holder, status.checkpoint_id)
        done.append(f"deleted {status.restore_path}")
    return done
