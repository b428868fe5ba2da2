"""The user verbs of `ckpt`: checkpoint, list, restore, migrate, prune. Parsing and printing
only; the work is in the other modules of `ckpt.user`. Statuses are read through the operator's
status models (the operator writes them from the same models)."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ckpt.agent.models import GpuMode
from ckpt.operator.models import CheckpointSpec, CheckpointStatus, Phase, RetainPolicy
from ckpt.operator.restore_models import RestorePhase, RestoreSpec, RestoreStatus

if TYPE_CHECKING:
    # The commands import it themselves: it brings the Kubernetes client (about 0.7 s to
    # import), which `ckpt --help` and the service subcommands do not need.
    from ckpt.user.restore import Restores

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
            lambda: checkpoints.status(namespace, resource), console, timeout=timeout + 30
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    out.print(follow.summary(namespace, resource, status))
    if status.phase != Phase.Ready:
        raise _fail(
            f"checkpoint did not become Ready: {status.message or 'timed out'}; "
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
    from ckpt.user.resources import Checkpoints, UserError, api_client, checkpoint_status

    try:
        items = Checkpoints(api_client(kubeconfig, context)).list(
            None if all_namespaces else namespace
        )
        statuses = [checkpoint_status(item) for item in items]
    except UserError as exc:
        raise _fail(str(exc)) from None
    live = _api_statuses(statuses, api_url, api_token)
    table = Table(box=None, header_style="bold")
    for column in ("NAMESPACE", "NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE"):
        table.add_column(column)
    for item, status in zip(items, statuses, strict=True):
        api_status = live.get(status.checkpoint_id or "", status.api_status)
        # No phase until the operator first writes the status: the column stays empty then.
        phase = status.phase if "phase" in status.model_fields_set else ""
        table.add_row(
            item["metadata"]["namespace"], item["metadata"]["name"], phase,
            item["spec"]["podName"], status.node_name or "", status.gpu or "",
            status.size or "", api_status or "", _age(item["metadata"]["creationTimestamp"]),
        )
    if items:
        out.print(table)
    else:
        console.print("no checkpoints found")


def _api_statuses(
    statuses: list[CheckpointStatus], url: str | None, token: str | None
) -> dict[str, str]:
    ids = [s.checkpoint_id for s in statuses if s.checkpoint_id]
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
    checkpoint_name: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A Checkpoint.")],
    namespace: Namespace = "default",
    node: Annotated[
        str | None, typer.Option("--node", help="Node to restore on (default: the operator's "
                                 "choice: the source node, else a compatible one).")
    ] = None,
    pod_name: Annotated[
        str | None, typer.Option("--pod-name", help="Name of the new Pod "
                                 "(default: CHECKPOINT-restored).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the Restore (default: CHECKPOINT-<random>).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow it until Running or Failed.")] = True,
    timeout: Annotated[int, typer.Option(help="Seconds to follow it.")] = 900,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Restore a checkpoint as a new Pod: creates a Restore resource and follows it."""
    from ckpt.user.resources import Checkpoints, UserError, api_client
    from ckpt.user.restore import Restores

    try:
        api = api_client(kubeconfig, context)
        # Read first: a typo is reported now rather than as a Restore waiting for it.
        Checkpoints(api).get(namespace, checkpoint_name)
        status = _restore(
            Restores(api), namespace, name or f"{checkpoint_name}-{secrets.token_hex(3)}",
            RestoreSpec(checkpoint_name=checkpoint_name, pod_name=pod_name, node_name=node),
            wait=wait, timeout=timeout,
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    if status is not None and status.phase != RestorePhase.Running:
        raise _fail(f"restore did not reach Running: {status.message or 'timed out'}")


def _restore(
    restores: Restores, namespace: str, name: str, spec: RestoreSpec, *, wait: bool, timeout: int
) -> RestoreStatus | None:
    """Creates the Restore and, with `wait`, follows it and prints its summary."""
    from ckpt.user import follow
    from ckpt.user.restore import RESTORE_STEPS, RESTORE_TERMINAL, restore_rows

    restores.create(namespace, name, spec)
    console.print(f"restore.ckpt.dev/{name} created")
    if not wait:
        return None
    status = follow.follow(
        lambda: restores.status(namespace, name), console,
        timeout=timeout, steps=RESTORE_STEPS, terminal=RESTORE_TERMINAL,
    )
    table = Table(title=f"restore {namespace}/{name}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in restore_rows(namespace, name, status):
        table.add_row(key, value)
    out.print(table)
    if status.phase == RestorePhase.Failed:
        console.print(f"see `kubectl -n {namespace} describe restore {name}`")
    return status


def migrate(
    pod: Annotated[str, typer.Argument(help="The running pod to move.")],
    to: Annotated[str, typer.Option("--to", help="The node to move it to.")],
    namespace: Namespace = "default",
    pod_name: Annotated[
        str | None, typer.Option("--pod-name", help="Name of the new Pod (default: POD-moved).")
    ] = None,
    timeout: Annotated[int, typer.Option(help="Seconds for each of checkpoint and restore.")] = (
        900
    ),
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Move a pod to another node: checkpoint it (its containers stop), restore it there, and
    delete the original once the new Pod runs. If anything fails the original Pod is kept
    (its kubelet restarts the stopped containers)."""
    from ckpt.user import follow
    from ckpt.user.resources import Checkpoints, UserError, api_client
    from ckpt.user.restore import Restores

    tag = secrets.token_hex(3)
    checkpoint_name = f"{pod}-move-{tag}"
    try:
        api = api_client(kubeconfig, context)
        checkpoints = Checkpoints(api)
        checkpoints.pod(namespace, pod)  # exists? (says so before anything is created)
        checkpoints.create(
            namespace, checkpoint_name,
            CheckpointSpec(pod_name=pod, leave_running=False, timeout_seconds=timeout),
        )
        console.print(f"checkpoint.ckpt.dev/{checkpoint_name} created")
        status = follow.follow(
            lambda: checkpoints.status(namespace, checkpoint_name), console, timeout=timeout + 30
        )
        if status.phase != Phase.Ready:
            raise UserError(
                f"checkpoint did not become Ready ({status.message or 'timed out'}); "
                f"pod {namespace}/{pod} is kept"
            )
        restores = Restores(api)
        restored = _restore(
            restores, namespace, f"{pod}-move-{tag}",
            RestoreSpec(
                checkpoint_name=checkpoint_name, node_name=to,
                pod_name=pod_name or f"{pod}-moved",
            ),
            wait=True, timeout=timeout,
        )
        if restored is None or restored.phase != RestorePhase.Running:
            message = (restored.message if restored else "") or "timed out"
            raise UserError(f"restore did not reach Running ({message}); pod {pod} is kept")
        restores.delete_pod(namespace, pod)
    except UserError as exc:
        raise _fail(str(exc)) from None
    out.print(f"moved {namespace}/{pod} to node {to} as pod {restored.pod_name}")


def prune(
    namespace: Namespace = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")
    ] = False,
    pod: Annotated[str | None, typer.Option(help="Only checkpoints of this pod.")] = None,
    keep: Annotated[
        int | None, typer.Option(help="Keep this many newest Ready checkpoints per pod.")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Only checkpoints older than this (30m, 12h, 7d, 2w).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be deleted.")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Delete old Checkpoints by age or count per pod. Their archives go with them through
    the storage location where the Checkpoint says retainPolicy: Delete."""
    from ckpt.user import prune as pruning
    from ckpt.user.resources import Checkpoints, UserError, api_client

    try:
        age = pruning.parse_duration(older_than) if older_than else None
        checkpoints = Checkpoints(api_client(kubeconfig, context))
        chosen = pruning.plan(
            checkpoints.list(None if all_namespaces else namespace),
            keep=keep, older_than=age, pod=pod,
        )
        for item in chosen:
            archive = (
                "archive deleted through its location" if item.deletes_archive
                else "archive retained (retainPolicy: Retain)" if item.archive
                else "no archive"
            )
            verb = "would delete" if dry_run else "deleting"
            out.print(f"{verb} checkpoint {item.namespace}/{item.name} ({item.reason}; {archive})")
            if not dry_run:
                checkpoints.delete(item.namespace, item.name)
    except (UserError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if not chosen:
        console.print("nothing to prune")


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint)
    app.command("list")(list_)
    app.command("restore")(restore)
    app.command("migrate")(migrate)
    app.command("prune")(prune)
