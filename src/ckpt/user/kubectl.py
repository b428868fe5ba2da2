"""`kubectl ckpt`: the user verbs of `ckpt` as a kubectl plugin.

kubectl runs any executable named `kubectl-NAME` on PATH for `kubectl NAME ...`, passing the
words after NAME unchanged (it refuses its own flags before NAME), so the plugin takes
kubectl's flags itself: --kubeconfig, --context, -n/--namespace (default: the context's
namespace, as kubectl), -A, -o. It exits 0 on success and 1 on any error, usage errors
included (click's usage errors would exit 2), with `error: ...` saying what to do next.

The work is ckpt.user.verbs, shared with `ckpt checkpoint|list|restore|migrate`; this module
parses the command line and prints what kubectl users expect.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from ckpt.apis.checkpoint import GROUP, KIND, VERSION, CheckpointSpec, Phase, RetainPolicy
from ckpt.apis.restore import RestorePhase, RestoreSpec
from ckpt.contract.agent import GpuMode
from ckpt.user import completion, options, verbs
from ckpt.user.failures import fail, user_errors
from ckpt.user.kinds import Kind, kind_of
from ckpt.user.printing import (
    GetOutput,
    ResourceOutput,
    columns,
    dump,
    kubectl_list,
    resource_name,
)

if TYPE_CHECKING:
    from kubernetes import client

    from ckpt.user.verbs import Listed

console = Console(stderr=True)
out = Console()


class KubectlGroup(TyperGroup):
    """kubectl's exit statuses and error shape for the whole command: 1 for any error, usage
    errors included, printed as `error: ...` and where to find the usage."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            # `kubectl ckpt` alone asks what there is, as `kubectl` alone does: not an error.
            typer.echo(exc.format_message())
            sys.exit(0)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "kubectl ckpt"
            typer.echo(f"error: {exc.format_message()}", err=True)
            typer.echo(f"See '{where} --help' for usage.", err=True)
            sys.exit(1)
        except ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(1)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _examples(*pairs: tuple[str, str]) -> str:
    """An epilog of examples as kubectl prints them. click re-flows each paragraph unless
    its first line is \\b."""
    blocks = [f"\b\n  # {what}\n  {command}" for what, command in pairs]
    return "\n\n".join(["\b\nExamples:", *blocks])


app = typer.Typer(
    name="kubectl ckpt",
    cls=KubectlGroup,
    help="Checkpoint and restore Kubernetes pods with ckpt (CRIU, CPU and GPU), from kubectl.",
    epilog=_examples(
        ("Checkpoint pod web in the current namespace and follow it to Ready",
         "kubectl ckpt checkpoint web --wait"),
        ("List the checkpoints of every namespace, with their record in the checkpoints API",
         "CKPT_API_URL=https://ckpt-api.example kubectl ckpt ls -A"),
        ("Restore a checkpoint as a new pod, on another node",
         "kubectl ckpt restore web-1a2b3c --node node-2 --wait"),
        ("Move pod web to node-2 (checkpoint, restore there, delete the original)",
         "kubectl ckpt migrate web --to node-2"),
        ("Tell the story of a checkpoint: phase, conditions, timings, archive, events",
         "kubectl ckpt describe checkpoint web-1a2b3c"),
        ("How CheckpointPolicy train is doing: each lineage's checkpoints, the next one due",
         "kubectl ckpt policy status train"),
    ),
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: kubectl's is plain text, and rich's would re-flow the examples.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", show_default=False,
        help="Namespace of the resource (default: the context's namespace, else default).",
    ),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig", envvar="KUBECONFIG", show_envvar=False,
        help="Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
    ),
]
Context = Annotated[
    str | None, typer.Option("--context", help="The kubeconfig context to use.")
]
Timeout = Annotated[int, typer.Option(help="Seconds until it counts as failed.")]
ResourceFormat = Annotated[
    ResourceOutput | None,
    typer.Option(
        "--output", "-o", show_default=False,
        help="Print the resource as json, yaml or name (the progress goes to stderr).",
    ),
]


def plugin_describe(namespace: str, kind: str, name: str) -> str:
    return f"kubectl ckpt describe {kind} {name} -n {namespace}"


def _connect(
    kubeconfig: Path | None, context: str | None, namespace: str | None
) -> tuple[client.ApiClient, str]:
    """The client for the kubeconfig and context, and the namespace to work in: `-n`, else
    the context's."""
    from ckpt.user.resources import api_client, context_namespace

    # Read first whether or not -n is given: it names a missing file or context plainly.
    from_context = context_namespace(kubeconfig, context)
    return api_client(kubeconfig, context), namespace or from_context


def _emit(resource: Mapping[str, Any], output: ResourceOutput) -> None:
    if output is ResourceOutput.name:
        typer.echo(resource_name(resource))
    else:
        typer.echo(dump(resource, output.value), nl=False)


@app.command(short_help="Checkpoint a running pod (--wait follows it to Ready)", epilog=_examples(
    ("Checkpoint pod web and return at once (kubectl ckpt describe follows it later)",
     "kubectl ckpt checkpoint web"),
    ("Checkpoint and wait for the archive, showing the phases as they pass",
     "kubectl ckpt checkpoint web -n team-a --wait"),
    ("Only container app, stopping the pod afterwards; print the Ready resource as YAML",
     "kubectl ckpt checkpoint web -c app --stop --wait -o yaml"),
))
def checkpoint(
    pod: Annotated[str, typer.Argument(
        metavar="POD", help="The running pod to checkpoint.",
        autocompletion=completion.pod_names,
    )],
    namespace: Namespace = None,
    name: options.CheckpointName = None,
    container: options.Containers = None,
    gpu: options.Gpu = GpuMode.auto,
    stop: options.Stop = False,
    timeout: Timeout = 900,
    retain: options.Retain = RetainPolicy.Retain,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until Ready or Failed, with progress.")
    ] = False,
    output: ResourceFormat = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Checkpoint a running pod: create a Checkpoint and, with --wait, follow it to Ready.

    Exits 1 when the checkpoint fails (or with --wait, does not become Ready in time)."""
    from ckpt.user import follow
    from ckpt.user.resources import Checkpoints, UserError

    spec = CheckpointSpec(
        pod_name=pod, containers=container or [], gpu=gpu, leave_running=not stop,
        timeout_seconds=timeout, retain_policy=retain,
    )
    with user_errors():
        api, ns = _connect(kubeconfig, context, namespace)
        checkpoints = Checkpoints(api)
        resource = name or verbs.generated_name(pod)
        # With -o, stdout holds only the resource, as `kubectl create -o` prints it.
        body = verbs.start_checkpoint(
            checkpoints, ns, resource, spec, console if output else out
        )
        if not wait:
            if output:
                _emit(body, output)
            return
        status = verbs.wait_checkpoint(checkpoints, ns, resource, console, timeout)
        if output:
            _emit(checkpoints.get(ns, resource), output)
        else:
            out.print(follow.summary(ns, resource, status))
        if status.phase != Phase.Ready:
            raise UserError(verbs.checkpoint_failure(ns, resource, status, plugin_describe))


@app.command(short_help="Restore a checkpoint as a new Pod (--wait follows it)", epilog=_examples(
    ("Restore checkpoint web-1a2b3c as pod web-1a2b3c-restored, on the operator's choice of node",
     "kubectl ckpt restore web-1a2b3c"),
    ("Restore it on node-2 as pod web-2 and wait until it runs",
     "kubectl ckpt restore web-1a2b3c --node node-2 --pod-name web-2 --wait"),
))
def restore(
    checkpoint_name: Annotated[
        str, typer.Argument(
            metavar="CHECKPOINT", help="A Checkpoint in the namespace.",
            autocompletion=completion.checkpoint_names,
        )
    ],
    namespace: Namespace = None,
    node: Annotated[
        str | None, typer.Option(help="Node to restore on (default: the source node when it "
                                 "is Ready, else a compatible one).")
    ] = None,
    pod_name: Annotated[
        str | None, typer.Option(help="Name of the new Pod (default: CHECKPOINT-restored).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the Restore (default: CHECKPOINT-<random>).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until Running or Failed, with progress.")
    ] = False,
    timeout: Timeout = 900,
    output: ResourceFormat = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Restore a checkpoint as a new Pod: create a Restore and, with --wait, follow it until
    the Pod runs.

    Exits 1 when the restore fails (or with --wait, is not Running in time)."""
    from ckpt.user.resources import Checkpoints, UserError
    from ckpt.user.restore import Restores

    spec = RestoreSpec(checkpoint_name=checkpoint_name, pod_name=pod_name, node_name=node)
    with user_errors():
        api, ns = _connect(kubeconfig, context, namespace)
        # Read first: a typo is reported now rather than as a Restore waiting for it.
        Checkpoints(api).get(ns, checkpoint_name)
        restores = Restores(api)
        resource = name or verbs.generated_name(checkpoint_name)
        body = verbs.start_restore(restores, ns, resource, spec, console if output else out)
        if not wait:
            if output:
                _emit(body, output)
            return
        status = verbs.wait_restore(restores, ns, resource, console, timeout)
        if output:
            _emit(restores.get(ns, resource), output)
        else:
            out.print(verbs.restore_summary(ns, resource, status))
        if status.phase != RestorePhase.Running:
            raise UserError(verbs.restore_failure(ns, resource, status, plugin_describe))


@app.command(short_help="Move a pod to another node: checkpoint, then restore", epilog=_examples(
    ("Move pod web to node-2; the new pod is web-moved",
     "kubectl ckpt migrate web --to node-2"),
))
def migrate(
    pod: Annotated[str, typer.Argument(
        metavar="POD", help="The running pod to move.", autocompletion=completion.pod_names,
    )],
    to: Annotated[str, typer.Option("--to", help="The node to move it to.")],
    namespace: Namespace = None,
    pod_name: Annotated[
        str | None, typer.Option(help="Name of the new Pod (default: POD-moved).")
    ] = None,
    timeout: Annotated[
        int, typer.Option(help="Seconds for each of the checkpoint and the restore.")
    ] = 900,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Move a pod to another node in one command: checkpoint it (its containers stop),
    restore it there, and delete the original once the new Pod runs.

    If anything fails the original Pod is kept (its kubelet restarts the stopped containers)
    and the command exits 1."""
    with user_errors():
        api, ns = _connect(kubeconfig, context, namespace)
        restored = verbs.migrate(
            api, ns, pod, to=to, pod_name=pod_name, timeout=timeout,
            console=console, out=out, describe=plugin_describe,
        )
    typer.echo(f"moved {ns}/{pod} to node {to} as pod {restored.pod_name}")


@app.command(short_help="List Checkpoints, joined with the checkpoints API", epilog=_examples(
    ("Checkpoints of the current namespace", "kubectl ckpt ls"),
    ("Of every namespace, with more columns", "kubectl ckpt ls -A -o wide"),
    ("As JSON, each joined with its record in the checkpoints API",
     "CKPT_API_URL=https://ckpt-api.example kubectl ckpt ls -o json"),
    ("Names only, to feed other commands", "kubectl ckpt ls -o name"),
))
def ls(
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List the checkpoints of every "
                           "namespace (a NAMESPACE column comes first).")
    ] = False,
    output: Annotated[
        GetOutput | None,
        typer.Option(
            "--output", "-o", show_default=False,
            help="json or yaml (a List; each item joined with the API has `checkpointsApi`, "
            "its record there), wide (more columns) or name.",
        ),
    ] = None,
    api_url: options.ApiUrl = None,
    api_token: options.ApiToken = None,
    api_ca: options.ApiCa = None,
    api_server_name: options.ApiServerName = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """List Checkpoints, joined with their records in the checkpoints API when its URL is
    given (the API column: its status there), read with --api-token or else each namespace's
    own read-only token, from its Secret ckpt-api-read-token."""
    from ckpt.user.resources import Checkpoints

    with user_errors():
        api, namespace_ = _connect(kubeconfig, context, namespace)
        ns = None if all_namespaces else namespace_
        listed = verbs.list_checkpoints(Checkpoints(api), ns, api_url, api_token, console,
                                        api_ca=api_ca, api_server_name=api_server_name)
    if output in (GetOutput.json, GetOutput.yaml):
        _print_list(listed, output)
    elif output is GetOutput.name:
        for row in listed:
            typer.echo(resource_name({"kind": KIND, **row.item}))
    elif not listed:
        where = "any namespace" if ns is None else f"the {ns} namespace"
        typer.echo(f"No checkpoints found in {where}.", err=True)
    else:
        typer.echo(_table(listed, wide=output is GetOutput.wide, namespaces=ns is None), nl=False)


def _print_list(listed: list[Listed], output: GetOutput) -> None:
    items = []
    for row in listed:
        # Each item stands on its own (kubectl's lists too): kind and apiVersion included.
        item = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **row.item}
        if row.record is not None:
            item["checkpointsApi"] = row.record.model_dump(mode="json")
        items.append(item)
    typer.echo(dump(kubectl_list(items), output.value), nl=False)


def _table(listed: list[Listed], *, wide: bool, namespaces: bool) -> str:
    headers = ["NAME", "PHASE", "POD", "NODE", "GPU", "SIZE", "API", "AGE"]
    if wide:
        headers += ["PLATFORM", "CHECKPOINT-ID", "ARCHIVE", "MESSAGE"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for row in listed:
        status = row.status
        cells = [
            # "1.5 MiB" as one word: scripts split rows on whitespace.
            row.name, row.phase, row.pod, status.node_name or "", status.gpu or "",
            (status.size or "").replace(" ", ""), row.api_status, row.age,
        ]
        if wide:
            cells += [
                status.platform or "", status.checkpoint_id or "", status.restore_path or "",
                status.message,
            ]
        if namespaces:
            cells.insert(0, row.namespace)
        rows.append(cells)
    return columns(headers, rows)


@app.command(short_help="Tell the story of a Checkpoint or Restore", epilog=_examples(
    ("The story of a checkpoint", "kubectl ckpt describe checkpoint web-1a2b3c"),
    ("Of a restore, in namespace team-a", "kubectl ckpt describe restore/web-back -n team-a"),
))
def describe(
    kind_or_ref: Annotated[
        str, typer.Argument(
            metavar="TYPE[/NAME]", help="checkpoint (ckpt) or restore (rst), or TYPE/NAME.",
            autocompletion=completion.describe_targets,
        )
    ],
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", show_default=False, autocompletion=completion.describe_names,
    )] = None,
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Tell the story of one Checkpoint or Restore: what was asked, its phase and message,
    conditions, timings, its archive, the Restores made from a checkpoint, and the Events
    the operator posted about it."""
    from ckpt.user import describe as story
    from ckpt.user.resources import Checkpoints, UserError
    from ckpt.user.restore import Restores

    kind_name, _, ref_name = kind_or_ref.partition("/")
    kind = kind_of(kind_name)
    if kind is None:
        raise fail(
            f"unknown type {kind_name!r}: describe checkpoint NAME or restore NAME "
            "(or ckpt/NAME, rst/NAME)"
        )
    resource_name = ref_name or name
    if not resource_name or (ref_name and name):
        raise fail(f"name one {kind.value}: describe {kind.value} NAME, or {kind.value}/NAME")
    with user_errors():
        api, ns = _connect(kubeconfig, context, namespace)
        checkpoints, restores = Checkpoints(api), Restores(api)
        if kind is Kind.checkpoint:
            found = checkpoints.get(ns, resource_name)
            made = [
                r for r in restores.list(ns)
                if (r.get("spec") or {}).get("checkpointName") == resource_name
            ]
            seen, error = _events_about(api, found)
            text = story.describe_checkpoint(found, seen, made, events_error=error)
        else:
            found = restores.get(ns, resource_name)
            wanted = str((found.get("spec") or {}).get("checkpointName", ""))
            try:
                source: dict[str, Any] | None = checkpoints.get(ns, wanted)
            except UserError:
                source = None  # gone, or never made: the story says so
            seen, error = _events_about(api, found)
            text = story.describe_restore(found, source, seen, events_error=error)
    typer.echo(text, nl=False)


def _events_about(
    api: client.ApiClient, resource: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """The Events about `resource`, or why they cannot be read: ckpt's user role grants
    ckpt's resources, not Events, and the rest of the story is worth telling without them."""
    from ckpt.user.resources import Events, UserError

    try:
        return Events(api).about(resource), ""
    except UserError as exc:
        return [], str(exc)


policy_app = typer.Typer(
    name="policy",
    help="CheckpointPolicies: the pods they checkpoint periodically, and what they keep.",
    epilog=_examples(
        ("How policy train is doing", "kubectl ckpt policy status train"),
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(policy_app, short_help="How CheckpointPolicies are doing (policy status)")


@policy_app.command("status", short_help="Tell how a CheckpointPolicy is doing", epilog=_examples(
    ("How policy train is doing: pods covered, each lineage's checkpoints, the next one due",
     "kubectl ckpt policy status train"),
    ("Every policy of every namespace, with each of their checkpoints",
     "kubectl ckpt policy status -A -o wide"),
    ("As JSON, for scripts", "kubectl ckpt policy status train -o json"),
))
def policy_status(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", show_default=False, autocompletion=completion.policy_names,
        help="A CheckpointPolicy (default: every one in the namespace).",
    )] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every policy of every namespace.")
    ] = False,
    output: Annotated[
        GetOutput | None,
        typer.Option(
            "--output", "-o", show_default=False,
            help="json or yaml (the report; a List of them without NAME), wide (each "
            "lineage's label and every checkpoint of the policy too) or name.",
        ),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Tell how a CheckpointPolicy is doing: its spec, the pods it covers, and per lineage
    (Job, ReplicaSet, StatefulSet and ordinal, bare pod) its latest Ready checkpoint with
    its age and size, how many Ready ones are kept, those in flight and failed, and when
    the next periodic checkpoint is due; then the policy's conditions.

    Exits 1 when the policy does not exist or cannot be read."""
    from ckpt.user import policies

    if name and all_namespaces:
        # As kubectl get: a name is unique only within its namespace.
        raise fail("a policy cannot be named across all namespaces (-A): drop NAME or -A")
    with user_errors():
        api, namespace_ = _connect(kubeconfig, context, namespace)
        ns = None if all_namespaces else namespace_
        reports = policies.gather(api, ns, name)
    if not reports and output not in (GetOutput.json, GetOutput.yaml):
        typer.echo(policies.nothing_found(ns), err=True)
        return
    typer.echo(policies.render(reports, output, one=name is not None), nl=False)


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"


@app.command("completion", short_help="Print a bash or zsh completion script", epilog=_examples(
    ("Complete kubectl-ckpt in this bash session (the same line in ~/.bashrc: in every one)",
     "source <(kubectl ckpt completion bash)"),
    ("In zsh, after compinit", "source <(kubectl ckpt completion zsh)"),
))
def completion_script(shell: Annotated[Shell, typer.Argument(help="bash or zsh.")]) -> None:
    """Print a shell completion script.

    `kubectl ckpt <TAB>` completes through kubectl's own completion (kubectl 1.26 or later),
    which runs kubectl_complete-ckpt, installed with ckpt; the script printed here completes
    kubectl-ckpt run on its own, through the same program."""
    typer.echo(completion.script(shell.value), nl=False)


def main() -> None:
    """`kubectl-ckpt`, run by kubectl for `kubectl ckpt ...`."""
    app(prog_name="kubectl ckpt")


def complete_main() -> None:
    """`kubectl_complete-ckpt WORD... INCOMPLETE`, run by kubectl to complete `kubectl ckpt`."""
    sys.stdout.write(completion.complete(typer.main.get_command(app), sys.argv[1:]))
