"""Following a Checkpoint (or a Restore) to its end, with a live progress display."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

TERMINAL = {"Ready", "Failed"}
# The flow's phases in order; the bar shows how far along the checkpoint is.
STEPS = ["Pending", "Checkpointing", "Uploading", "Ready"]


def follow(
    read_status: Callable[[], dict[str, Any]],
    console: Console,
    *,
    timeout: float,
    interval: float = 0.3,
    steps: list[str] = STEPS,
    terminal: set[str] = TERMINAL,
) -> dict[str, Any]:
    """Polls the status until a terminal phase (or `timeout`); returns the last status.
    `steps` are the resource's phases in order (a Checkpoint's by default)."""
    status: dict[str, Any] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[phase]:<13}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("waiting for the operator", total=len(steps) - 1, phase="")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = read_status()
            phase = status.get("phase", "Pending")
            step = steps.index(phase) if phase in steps else 0
            progress.update(
                task, completed=step, phase=phase,
                description=status.get("message") or _latest_condition(status),
            )
            if phase in terminal:
                break
            time.sleep(interval)
    return status


def _latest_condition(status: dict[str, Any]) -> str:
    conditions = status.get("conditions") or []
    if not conditions:
        return "waiting for the operator"
    latest = max(conditions, key=lambda c: c.get("lastTransitionTime", ""))
    return f"{latest['type']}: {latest.get('message', '')}"


def summary(namespace: str, name: str, status: dict[str, Any]) -> Table:
    table = Table(title=f"checkpoint {namespace}/{name}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("phase", status.get("phase", "")),
        ("checkpoint id", status.get("checkpointId", "")),
        ("node / agent", f"{status.get('nodeName', '')} / {status.get('agent', '')}"),
        ("gpu / platform", f"{status.get('gpu', '')} / {status.get('platform', '')}"),
        ("size", f"{status['size']} ({status['sizeBytes']} bytes)" if "size" in status else ""),
        ("checksum", status.get("checksum", "")),
        ("restore path", status.get("restorePath", "")),
        ("api status", status.get("apiStatus", "")),
    ]
    timings = status.get("timings")
    if timings:
        rows.append(("timings (ms)", "  ".join(f"{k} {v}" for k, v in timings.items())))
    if status.get("phase") == "Failed":
        rows.append(("reason", status.get("message", "")))
    for key, value in rows:
        if value not in ("", None, " / "):
            table.add_row(key, str(value))
    return table
