"""The user verbs of `ckpt`: checkpoint, list, restore. Parsing and printing only; the work is
in `ckpt.user`."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ckpt.agent.models import GpuMode, JobState, RestoreRequest
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
    container_id: Annotated[
        str | None, typer.Option(help="Id of the restored container (default: derived).")
    ] = None,
    container: Annotated[
        str | None, typer.Option(help="Which container of the archive (if several).")
    ] = None,
    agent_url: Annotated[
        str | None, typer.Option(help="Agent address (default: its pod IP and port).")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Token for the agent (default: minted for the operator's account)."),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Restore a checkpoint as a new container on the node that holds its archive."""
    from ckpt.user.resources import Checkpoints, UserError, api_client
    from ckpt.user.restore import agent_url as find_agent
    from ckpt.user.restore import restore as run_restore

    try:
        checkpoints = Checkpoints(api_client(kubeconfig, context))
        status = checkpoints.get(namespace, checkpoint_name).get("status") or {}
        if status.get("phase") != "Ready":
            raise UserError(
                f"checkpoint {namespace}/{checkpoint_name} is {status.get('phase', 'Pending')}, "
                "not Ready"
            )
        url = agent_url or find_agent(checkpoints, status)
        token = (
            token_file.read_text().strip() if token_file
            else checkpoints.service_account_token(
                os.environ.get("CKPT_SYSTEM_NAMESPACE", "ckpt-system"), "ckpt-operator"
            )
        )
        request = RestoreRequest(
            restore_path=status["restorePath"], checksum=status["checksum"],
            container_id=container_id or f"{checkpoint_name}-restored-{secrets.token_hex(2)}",
            container=container,
        )
        with console.status(f"restoring {checkpoint_name} through {url}"):
            job = run_restore(url, token, request)
    except UserError as exc:
        raise _fail(str(exc)) from None
    if job.state is not JobState.succeeded:
        raise _fail(f"restore failed: {job.error}")
    out.print(
        f"restored {namespace}/{checkpoint_name} as container {job.container_id} "
        f"(pid {job.pid}) in {job.timings.total} ms"
    )


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint)
    app.command("list")(list_)
    app.command("restore")(restore)
