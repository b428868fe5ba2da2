"""Standard Kubernetes conditions on the Checkpoint status."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from ckpt.apis.checkpoint import Condition

# The condition types, in the order the flow sets them.
ACCEPTED = "Accepted"
REGISTERED = "Registered"
DUMPED = "Dumped"
READY = "Ready"


class HasConditions(Protocol):
    """A status with standard conditions (Checkpoint's and Restore's)."""

    conditions: list[Condition]


def now_rfc3339(*, precise: bool = False) -> str:
    """Now in RFC 3339, UTC; `precise` keeps milliseconds (for timings read off status)."""
    now = dt.datetime.now(dt.UTC)
    text = now.isoformat(timespec="milliseconds") if precise else now.replace(
        microsecond=0
    ).isoformat()
    return text.replace("+00:00", "Z")


def set_condition(
    status: HasConditions, type_: str, ok: bool, reason: str, message: str = ""
) -> bool:
    """Sets a condition; returns whether anything changed. The transition time moves only when
    the condition's truth changes, as Kubernetes conventions ask."""
    value = "True" if ok else "False"
    for index, current in enumerate(status.conditions):
        if current.type != type_:
            continue
        if (current.status, current.reason, current.message) == (value, reason, message):
            return False
        moved = now_rfc3339() if current.status != value else current.last_transition_time
        status.conditions[index] = Condition(
            type=type_, status=value, reason=reason, message=message, last_transition_time=moved
        )
        return True
    status.conditions.append(
        Condition(
            type=type_, status=value, reason=reason, message=message,
            last_transition_time=now_rfc3339(),
        )
    )
    return True


def get_condition(status: HasConditions, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)
