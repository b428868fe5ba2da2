"""Following a Checkpoint (or a Restore) to its end, with a live progress display."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ckpt.apis.checkpoint import CheckpointStatus, Phase
from ckpt.apis.restore import RestoreStatus

TERMINAL = {Phase.Ready, Phase.Failed}
# The flow's phases in order; the bar shows how far along the checkpoint is.
STEPS = [Phase.Pending, Phase.Checkpointing, Phase.Uploading, Phase.Ready]

# Both statuses carry `phase`, `message` and `conditions`, which is all following needs.
Status = TypeVar("Status", CheckpointStatus, RestoreStatus)


def follow(
    read_status: Callable[[], Status],
    console: Console,
    *,
    timeout: float,
    interval: float = 0.3,
    steps: Sequence[str] = STEPS,
    terminal: Collection[str] = TERMINAL,
) -> Status:
    """Polls the status until a terminal phase (or `timeout`); returns the last status.
    `steps` are the resource's phases in order (a Checkpoint's by default). The status is
    read at least once, so a zero timeout still answers with the current one."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[phase]:<13}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("waiting for the operator", total=len(steps) - 1, phase="")
        deadline = time.monotonic() + timeout
        while True:
            status = read_status()
            phase = status.phase
            step = steps.index(phase) if phase in steps else 0
            progress.update(
                task, completed=step, phase=phase,
                description=status.message or _latest_condition(status),
            )
            if phase in terminal or time.monotonic() + interval >= deadline:
                return status
            time.sleep(interval)


def _latest_condition(status: CheckpointStatus | RestoreStatus) -> str:
    if not status.conditions:
        return "waiting for the operator"
    latest = max(status.conditions, key=lambda c: c.last_transition_time)
    return f"{latest.type}: {latest.message}"


def summary(namespace: str, name: str, status: CheckpointStatus) -> Table:
    table = Table(title=f"checkpoint {namespace}/{name}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, object]] = [
        ("phase", status.phase),
        ("checkpoint id", status.checkpoint_id),
        ("node / agent", f"{status.node_name or ''} / {status.agent or ''}"),
        ("gpu / platform", f"{status.gpu or ''} / {status.platform or ''}"),
        ("size", f"{status.size} ({status.size_bytes} bytes)" if status.size else ""),
        ("checksum", status.checksum),
        ("restore path", status.restore_path),
        ("api status", status.api_status),
    ]
    for key, value in finished_rows(rows, status.timings, status.phase == Phase.Failed,
                                    status.message):
        table.add_row(key, value)
    return table


def finished_rows(rows: list[tuple[str, object]], timings: BaseModel | None, failed: bool,
                  message: str) -> list[tuple[str, str]]:
    """A finished resource's summary lines: `rows`, its timings, the reason of a failure;
    lines without a value left out."""
    rows = list(rows)
    if timings:
        spent = "  ".join(f"{k} {v}" for k, v in timings.model_dump().items())
        rows.append(("timings (ms)", spent))
    if failed:
        rows.append(("reason", message))
    return [(k, str(v)) for k, v in rows if v not in ("", None, " / ")]
