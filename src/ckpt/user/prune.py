"""`ckpt prune`: choose Checkpoints to delete by age or by count per pod.

Deleting a Checkpoint runs the operator's finalizer: the API record is deprecated and, under
`retainPolicy: Delete`, the archive is deleted through its StorageLocation (by the operator
itself for S3, whether or not the agent that wrote it still exists). Archives of Checkpoints
with `retainPolicy: Retain` are kept on purpose; the plan says so for each of them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus, Phase, RetainPolicy
from ckpt.user.resources import checkpoint_spec, checkpoint_status

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``12h``, ``7d``, ``2w``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 12h, 7d, 2w)")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


@dataclass(frozen=True)
class Pruned:
    namespace: str
    name: str
    pod: str
    created: dt.datetime
    archive: str | None
    deletes_archive: bool
    reason: str


@dataclass(frozen=True)
class _Listed:
    """One listed Checkpoint: its spec and status through the operator's models."""

    namespace: str
    name: str
    created: dt.datetime
    spec: CheckpointSpec
    status: CheckpointStatus


def _listed(item: Mapping[str, Any]) -> _Listed:
    metadata = item["metadata"]
    return _Listed(
        namespace=metadata["namespace"],
        name=metadata["name"],
        created=dt.datetime.fromisoformat(
            str(metadata["creationTimestamp"]).replace("Z", "+00:00")
        ),
        spec=checkpoint_spec(item),
        status=checkpoint_status(item),
    )


def plan(
    items: Iterable[Mapping[str, Any]],
    *,
    keep: int | None = None,
    older_than: dt.timedelta | None = None,
    pod: str | None = None,
    now: dt.datetime | None = None,
) -> list[Pruned]:
    """The Checkpoints to delete. Per (namespace, pod): the ``keep`` newest Ready ones are
    never chosen; of the rest, all are chosen, or with ``older_than`` only those older than
    that. Checkpoints still in progress are never chosen. A Checkpoint whose spec or status
    the models refuse is a UserError naming it: nothing is chosen then."""
    if keep is None and older_than is None:
        raise ValueError("say what to prune: --keep N and/or --older-than AGE")
    if keep is not None and keep < 0:
        raise ValueError("--keep must be 0 or more")
    now = now or dt.datetime.now(dt.UTC)
    groups: dict[tuple[str, str], list[_Listed]] = defaultdict(list)
    for listed in map(_listed, items):
        if pod is not None and listed.spec.pod_name != pod:
            continue
        if listed.status.phase not in (Phase.Ready, Phase.Failed):
            continue  # in progress (or no status yet): never pulled from under the operator
        groups[(listed.namespace, listed.spec.pod_name)].append(listed)
    out: list[Pruned] = []
    for (namespace, pod_name), group in sorted(groups.items()):
        group.sort(key=lambda listed: listed.created, reverse=True)
        ready_seen = 0
        for listed in group:
            if listed.status.phase is Phase.Ready:
                ready_seen += 1
                if keep is not None and ready_seen <= keep:
                    continue
            age = now - listed.created
            if older_than is not None and age <= older_than:
                continue
            reason = (
                f"older than {older_than}" if older_than is not None
                else f"beyond the {keep} newest of pod {pod_name}"
            )
            out.append(Pruned(
                namespace=namespace,
                name=listed.name,
                pod=pod_name,
                created=listed.created,
                archive=listed.status.restore_path,
                deletes_archive=listed.spec.retain_policy is RetainPolicy.Delete,
                reason=reason,
            ))
    return out
