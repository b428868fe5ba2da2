"""The user verbs of `ckpt`: checkpoint, list, restore, migrate, prune, policy status. Parsing
and printing only; the work is in the other modules of `ckpt.user` (`ckpt.user.verbs` and
`ckpt.user.policies` for what `kubectl ckpt` does too). Statuses are read through the
operator's status models (the operator writes them from the same models)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ckpt.apis.checkpoint import CheckpointSpec, Phase, RetainPolicy
from ckpt.apis.restore import RestorePhase, RestoreSpec
from ckpt.contract.agent import GpuMode
from ckpt.user import options, verbs
from ckpt.user.printing import GetOutput

# The commands import ckpt.user.resources and ckpt.user.restore themselves: they bring the
# Kubernetes client (about 0.7 s to import), which `ckpt --help` and the service subcommands
# do not need.

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
    name: options.CheckpointName = None,
    container: options.Containers = None,
    gpu: options.Gpu = GpuMode.auto,
    stop: options.Stop = False,
    timeout: Annotated[int, typer.Option(help="Seconds until the checkpoint fails.")] = 900,
    retain: options.Retain = RetainPolicy.Retain,
    wait: Annotated[bool, typer.Option(help="Follow it until Ready or Failed.")] = True,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Checkpoint a running pod: creates a Checkpoint resource and follows it."""
    from ckpt.user import follow
    from ckpt.user.resources import Checkpoints, UserError, api_client

    resource = name or verbs.generated_name(pod)
    spec = CheckpointSpec(
        pod_name=pod, containers=container or [], gpu=gpu, leave_running=not stop,
        timeout_seconds=timeout, retain_policy=retain,
    )
    try:
        checkpoints = Checkpoints(api_client(kubeconfig, context))
        verbs.start_checkpoint(checkpoints, namespace, resource, spec, console)
        if not wait:
            return
        status = verbs.wait_checkpoint(checkpoints, namespace, resource, console, timeout)
    except UserError as exc:
        raise _fail(str(exc)) from None
    out.print(follow.summary(namespace, resource, status))
    if status.phase != Phase.Ready:
        raise _fail(verbs.checkpoint_failure(namespace, resource, status, verbs.kubectl_describe))


def list_(
    namespace: Namespace = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")
    ] = False,
    api_url: options.ApiUrl = None,
    api_token: options.ApiToken = None,
    api_ca: options.ApiCa = None,
    api_server_name: options.ApiServerName = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """List Checkpoints with their status in the checkpoints API."""
    from ckpt.user.resources import Checkpoints, UserError, api_client

    try:
        listed = verbs.list_checkpoints(
            Checkpoints(api_client(kubeconfig, context)),
            None if all_namespaces else namespace, api_url, api_token, console,
            api_ca=api_ca, api_server_name=api_server_name,
        )
    except UserError as exc:
        raise _fail(str(exc)) from None
    table = Table(box=None, header_style="bold")
    for column in ("NAMESPACE", "NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE"):
        table.add_column(column)
    for row in listed:
        status = row.status
        table.add_row(
            row.namespace, row.name, row.phase, row.pod, status.node_name or "",
            status.gpu or "", status.size or "", row.api_status, row.age,
        )
    if listed:
        out.print(table)
    else:
        console.print("no checkpoints found")


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

    resource = name or verbs.generated_name(checkpoint_name)
    try:
        api = api_client(kubeconfig, context)
        # Read first: a typo is reported now rather than as a Restore waiting for it.
        Checkpoints(api).get(namespace, checkpoint_name)
        restores = Restores(api)
        verbs.start_restore(
            restores, namespace, resource,
            RestoreSpec(checkpoint_name=checkpoint_name, pod_name=pod_name, node_name=node),
            console,
        )
        if not wait:
            return
        status = verbs.wait_restore(restores, namespace, resource, console, timeout)
    except UserError as exc:
        raise _fail(str(exc)) from None
    out.print(verbs.restore_summary(namespace, resource, status))
    if status.phase != RestorePhase.Running:
        raise _fail(verbs.restore_failure(namespace, resource, status, verbs.kubectl_describe))


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
    from ckpt.user.resources import UserError, api_client

    try:
        restored = verbs.migrate(
            api_client(kubeconfig, context), namespace, pod, to=to, pod_name=pod_name,
            timeout=timeout, console=console, out=out,
        )
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


def policy_status(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", show_default=False,
                                   help="A CheckpointPolicy (default: every one).")
    ] = None,
    namespace: Namespace = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")
    ] = False,
    output: Annotated[
        GetOutput | None,
        typer.Option("--output", "-o", show_default=False,
                     help="json or yaml (the report), wide (every checkpoint too) or name."),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """How a CheckpointPolicy is doing: its spec, the pods it covers, per lineage its latest
    Ready checkpoint, those kept, in flight and failed, the next one due, its conditions."""
    from ckpt.user import policies
    from ckpt.user.resources import UserError, api_client

    if name and all_namespaces:
        raise _fail("a policy cannot be named across all namespaces (-A): drop NAME or -A")
    ns = None if all_namespaces else namespace
    try:
        reports = policies.gather(api_client(kubeconfig, context), ns, name)
    except UserError as exc:
        raise _fail(str(exc)) from None
    if not reports and output not in (GetOutput.json, GetOutput.yaml):
        console.print(policies.nothing_found(ns), markup=False)
        return
    # Plain: rich would take brackets in names and messages for markup, and re-wrap tables.
    typer.echo(policies.render(reports, output, one=name is not None), nl=False)


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint)
    app.command("list")(list_)
    app.command("restore")(restore)
    app.command("migrate")(migrate)
    app.command("prune")(prune)
    policy = typer.Typer(no_args_is_help=True, help="CheckpointPolicies: how they are doing.")
    policy.command("status")(policy_status)
    app.add_typer(policy, name="policy", help="CheckpointPolicies: how they are doing.")
