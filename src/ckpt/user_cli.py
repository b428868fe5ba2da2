"""The user verbs of `ckpt`: checkpoint, list, restore. Parsing and printing only; the work is
in `ckpt.user`."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ckpt.agent.models import GpuMode
from ckpt.operator.models import CheckpointSpec, RetainPolicy

console = Console(stderr=True)
out = Console()

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the resource.")]
Kubeconfig = Annotated[
    Path | None, typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file.")
]
Context = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def checkpoint(
    pod: Annotated[str, typer.Argument(help="The running pod to checkpoint.")],
    namespace: Namespace = "default",
    name: Annotated[
        str | None, typer.Option(help="Name of the Checkpoint (default: POD-<random>).")
    ] = None,
    container: Annotated[
        list[str] | None,
        typer.Option("--container", "-c", help="Only these containers (repeatable)."),
    ] = None,
    gpu: Annotated[GpuMode, typer.Option(help="GPU state: auto, required or none.")] = (
        GpuMode.auto
    ),
    stop: Annotated[bool, typer.Option(help="Stop the pod's containers after the dump.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds until the checkpoint fails.")] = 900,
    retain: Annotated[
        RetainPolicy, typer.Option(help="Retain or Delete the archive with the resource.")
    ] = RetainPolicy.Retain,
    wait: Annotated[bool, typer.Option(help="Follow it until Ready or Failed.")] = True,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Checkpoint a running pod: creates a Checkpoint resource and follows it."""
    from ckpt.user import follow
    from ckpt.user.resources import Checkpoints, UserError, api_client

    resource = name or f"{pod}-{secrets.token_hex(3)}"
    spec = CheckpointSpec(
        pod_name=pod, containers=container or [], gpu=gpu, leave_running=not stop,
        timeout_seconds=timeout, retain_policy=retain,
    )
    try:
        checkpoints = Checkpoints(api_client(kubeconfig, context))
        checkpoints.create(namespace, resource, spec)
        console.print(f"checkpoint.ckpt.dev/{resource} created")
        if not wait:
            return
        status = follow.follow(
            lambda: checkpoints.get(namespace, resource).get("status") or {},
            console, timeout=timeout + 30,
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    out.print(follow.summary(namespace, resource, status))
    if status.get("phase") != "Ready":
        raise _fail(
            f"checkpoint did not become Ready: {status.get('message') or 'timed out'}; "
            f"see `kubectl -n {namespace} describe checkpoint {resource}`"
        )


def list_(
    namespace: Namespace = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option(envvar="CKPT_API_URL", help="Checkpoints API to join with.")
    ] = None,
    api_token: Annotated[
        str | None, typer.Option(envvar="CKPT_API_TOKEN", help="Token of that API.")
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """List Checkpoints with their status in the checkpoints API."""
    from ckpt.user.resources import Checkpoints, UserError, api_client

    try:
        items = Checkpoints(api_client(kubeconfig, context)).list(
            None if all_namespaces else namespace
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    live = _api_statuses(items, api_url, api_token)
    table = Table(box=None, header_style="bold")
    for column in ("NAMESPACE", "NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE"):
        table.add_column(column)
    for item in items:
        status = item.get("status") or {}
        api_status = live.get(status.get("checkpointId", ""), status.get("apiStatus", ""))
        table.add_row(
            item["metadata"]["namespace"], item["metadata"]["name"], status.get("phase", ""),
            item["spec"]["podName"], status.get("nodeName", ""), status.get("gpu", ""),
            status.get("size", ""), api_status or "", _age(item["metadata"]["creationTimestamp"]),
        )
    if items:
        out.print(table)
    else:
        console.print("no checkpoints found")


def _api_statuses(
    items: list[dict[str, Any]], url: str | None, token: str | None
) -> dict[str, str]:
    ids = [s["checkpointId"] for i in items if (s := i.get("status") or {}).get("checkpointId")]
    if not (url and token and ids):
        return {}
    from ckpt.api.client import SyncCheckpointsClient
    from ckpt.errors import ServiceError

    try:
        with SyncCheckpointsClient(url, token) as api:
            return {str(r.id): r.status.value for r in api.list(ids)}
    except (ServiceError, OSError) as exc:
        console.print(f"[yellow]warning:[/yellow] checkpoints API not joined: {exc}")
        return {}


def _age(created: str) -> str:
    seconds = int(
        (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(created.replace("Z", "+00:00")))
        .total_seconds()
    )
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def restore(
    checkpoint_name: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A Ready one.")],
    namespace: Namespace = "default",
    name: Annotated[
        str | None, typer.Option(help="Name of the Restore (default: CHECKPOINT-restore-XXXX).")
    ] = None,
    pod_name: Annotated[
        str | None, typer.Option(help="Name of the new Pod (default: CHECKPOINT-restored).")
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="Node to restore on (default: chosen by the operator).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the Pod.")] = 900,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Restore a checkpoint as a new Pod: creates a Restore and follows it.

    The operator does the work with its own agents; this command needs only the right to
    create Restores in the namespace.
    """
    from ckpt.user.resources import UserError, api_client
    from ckpt.user.restore import Restores, follow

    resource = name or f"{checkpoint_name}-restore-{secrets.token_hex(2)}"[:253]
    try:
        restores = Restores(api_client(kubeconfig, context))
        restores.create(namespace, resource, checkpoint_name, pod_name=pod_name, node_name=node)
        console.print(f"restore.ckpt.dev/{resource} created")
        status = follow(
            restores, namespace, resource, timeout=timeout,
            on_phase=lambda phase, message: console.print(
                f"{phase}" + (f": {message}" if message else "")
            ),
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    if status.get("phase") != "Running":
        raise _fail(f"restore {namespace}/{resource} failed: {status.get('message', '')}")
    out.print(
        f"restored {namespace}/{checkpoint_name} as pod {status.get('podName')} "
        f"on {status.get('nodeName')}"
    )


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint)
    app.command("list")(list_)
    app.command("restore")(restore)
