"""`kubectl ckpt describe`: the story of one Checkpoint or Restore, told the way `kubectl
describe` tells a resource's: what was asked for, the phase it reached and why, its
conditions, how long each step took, the archive, and the Events posted about it.

Pure functions of the resources as the apiserver returns them: the statuses go through the
operator's status models (the operator writes them from the same models)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ckpt.apis.checkpoint import CheckpointStatus, Condition
from ckpt.apis.restore import RestoreStatus
from ckpt.user.printing import columns, fields
from ckpt.user.resources import checkpoint_spec, checkpoint_status, read_status
from ckpt.user.restore import restore_spec
from ckpt.user.verbs import age

_INDENT = "  "


def describe_checkpoint(
    checkpoint: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    restores: Sequence[Mapping[str, Any]],
    now: dt.datetime | None = None,
    *,
    events_error: str = "",
) -> str:
    """A Checkpoint's story; `restores` are the Restores made from it. `events_error`: why
    the Events could not be read (the rest of the story is told all the same)."""
    spec = checkpoint_spec(checkpoint)
    status = checkpoint_status(checkpoint)
    parts = [
        _head(checkpoint, now),
        "Spec:\n" + fields([
            ("Pod", spec.pod_name),
            ("Containers", ", ".join(spec.containers) or "all"),
            ("GPU", spec.gpu.value),
            ("Leave Running", str(spec.leave_running).lower()),
            ("Storage", spec.storage or "the default location"),
            ("Timeout", f"{spec.timeout_seconds}s"),
            ("Retain Policy", spec.retain_policy.value),
        ], _INDENT),
        _status(status, [
            ("Node", status.node_name),
            ("Agent", status.agent),
            ("GPU", status.gpu),
            ("Platform", status.platform),
            ("Checkpoint ID", status.checkpoint_id),
            ("API Status", status.api_status),
            ("Pod Template", _template(status.pod_template)),
        ], now),
        _timings(status.timings),
        "Archive:\n" + (_archive(status) or f"{_INDENT}none yet\n"),
        conditions_section(status.conditions, now),
        _restores(restores, now),
        _events(events, now, events_error),
    ]
    return "".join(parts)


def describe_restore(
    restore: Mapping[str, Any],
    checkpoint: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    now: dt.datetime | None = None,
    *,
    events_error: str = "",
) -> str:
    """A Restore's story; `checkpoint` is the Checkpoint it restores (None: not found),
    whose archive it is. `events_error` as for describe_checkpoint."""
    spec = restore_spec(restore)
    status = read_status(RestoreStatus, restore, "restore")
    if checkpoint is None:
        archive = f"{_INDENT}checkpoint {spec.checkpoint_name} not found\n"
    else:
        source = checkpoint_status(checkpoint)
        archive = _archive(source, [("Checkpoint", f"{spec.checkpoint_name} ({source.phase})")])
    parts = [
        _head(restore, now),
        "Spec:\n" + fields([
            ("Checkpoint", spec.checkpoint_name),
            ("Pod Name", spec.target_pod()),
            ("Node", spec.node_name or "the operator's choice"),
        ], _INDENT),
        _status(status, [
            ("Pod", status.pod_name),
            ("Node", status.node_name),
            ("Agent", status.agent),
            ("Checkpoint ID", status.checkpoint_id),
            ("Staged", None if status.staged is None else str(status.staged).lower()),
        ], now),
        _timings(status.timings),
        "Archive:\n" + archive,
        conditions_section(status.conditions, now),
        _events(events, now, events_error),
    ]
    return "".join(parts)


def _head(resource: Mapping[str, Any], now: dt.datetime | None) -> str:
    metadata = resource.get("metadata") or {}
    created = metadata.get("creationTimestamp")
    return fields([
        ("Name", metadata.get("name")),
        ("Namespace", metadata.get("namespace")),
        ("Kind", resource.get("kind")),
        ("Created", f"{created} ({age(created, now)} ago)" if created else None),
    ])


def _status(
    status: CheckpointStatus | RestoreStatus,
    details: list[tuple[str, object]],
    now: dt.datetime | None,
) -> str:
    written = "phase" in status.model_fields_set
    took = _took(status.started_at, status.completed_at)
    return "Status:\n" + fields([
        # Before the operator first writes the status there is no phase to tell.
        ("Phase", status.phase.value if written else "not yet handled by the operator"),
        ("Message", status.message),
        *details,
        ("Started", status.started_at),
        ("Completed", f"{status.completed_at} (took {took})" if took else status.completed_at),
    ], _INDENT)


def _took(started: str | None, completed: str | None) -> str | None:
    if not (started and completed):
        return None
    try:
        spent = _time(completed) - _time(started)
    except ValueError:
        return None
    return f"{spent.total_seconds():.1f}s"


def _time(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _template(template: dict[str, Any] | None) -> str | None:
    if not template:
        return None
    names = [c.get("name", "") for c in (template.get("spec") or {}).get("containers") or []]
    return f"captured ({len(names)} containers: {', '.join(names)})"


def _timings(timings: BaseModel | None) -> str:
    if timings is None:
        return ""
    spent = [
        ("GPU" if step == "gpu" else step.capitalize(), f"{ms} ms")
        for step, ms in timings.model_dump().items()
    ]
    return "Timings:\n" + fields(spent, _INDENT)


def _archive(status: CheckpointStatus, first: list[tuple[str, object]] | None = None) -> str:
    return fields([
        *(first or []),
        ("Location", status.storage_location),
        ("Path", status.restore_path),
        ("Size", f"{status.size} ({status.size_bytes} bytes)" if status.size else None),
        ("Checksum", status.checksum),
    ], _INDENT)


def conditions_section(conditions: list[Condition], now: dt.datetime | None) -> str:
    """A resource's conditions as `kubectl describe` prints them."""
    if not conditions:
        return "Conditions:  <none>\n"
    rows = [
        [c.type, c.status, c.reason,
         age(c.last_transition_time, now) if c.last_transition_time else "", c.message]
        for c in conditions
    ]
    return "Conditions:\n" + columns(["Type", "Status", "Reason", "Age", "Message"], rows, _INDENT)


def _restores(restores: Sequence[Mapping[str, Any]], now: dt.datetime | None) -> str:
    if not restores:
        return "Restores:  <none>\n"
    rows = []
    for restore in restores:
        status = read_status(RestoreStatus, restore, "restore")
        metadata = restore.get("metadata") or {}
        created = metadata.get("creationTimestamp")
        rows.append([
            metadata.get("name", ""),
            status.phase.value if "phase" in status.model_fields_set else "",
            status.pod_name or "", status.node_name or "", age(created, now) if created else "",
        ])
    return "Restores:\n" + columns(["Name", "Phase", "Pod", "Node", "Age"], rows, _INDENT)


def _events(events: Sequence[Mapping[str, Any]], now: dt.datetime | None, error: str) -> str:
    if error:
        return f"Events:  <unavailable: {error}>\n"
    if not events:
        return "Events:  <none>\n"
    rows = [
        [
            str(event.get("type") or ""),
            str(event.get("reason") or ""),
            _event_age(event, now),
            _reporter(event),
            str(event.get("message") or "").strip(),
        ]
        for event in sorted(events, key=_last_seen)
    ]
    headers = ["Type", "Reason", "Age", "From", "Message"]
    underline = ["-" * len(header) for header in headers]
    return "Events:\n" + columns(headers, [underline, *rows], _INDENT)


def _last_seen(event: Mapping[str, Any]) -> str:
    # RFC 3339 UTC times order as strings. core/v1 Events carry lastTimestamp; those made
    # through events.k8s.io carry eventTime (with series for repeats) instead.
    metadata = event.get("metadata") or {}
    return str(
        event.get("lastTimestamp") or (event.get("series") or {}).get("lastObservedTime")
        or event.get("eventTime") or event.get("firstTimestamp")
        or metadata.get("creationTimestamp") or ""
    )


def _event_age(event: Mapping[str, Any], now: dt.datetime | None) -> str:
    """As kubectl describe: `5m`, or `5m (x3 over 12m)` for an Event seen several times."""
    last = _last_seen(event)
    if not last:
        return ""
    shown = age(last, now)
    count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
    first = event.get("firstTimestamp") or event.get("eventTime")
    if count > 1 and first:
        shown += f" (x{count} over {age(str(first), now)})"
    return shown


def _reporter(event: Mapping[str, Any]) -> str:
    source = event.get("source") or {}
    return str(source.get("component") or event.get("reportingComponent") or "")
