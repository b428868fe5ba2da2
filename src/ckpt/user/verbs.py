"""What the user verbs do, shared by `ckpt` and `kubectl ckpt`, which differ only in how they
are called and what they print: create a Checkpoint or a Restore and follow it, move a pod to
another node, list Checkpoints joined with the checkpoints API. Each function takes the
consoles it writes to: `console` (stderr: progress, warnings) and, where it prints a result,
`out`."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ckpt.apis.checkpoint import CheckpointSpec, CheckpointStatus, Phase
from ckpt.apis.restore import RestorePhase, RestoreSpec, RestoreStatus

if TYPE_CHECKING:
    # Imported where used: they bring the Kubernetes client (about 0.7 s to import), which
    # help, completion and the service subcommands do not need.
    from kubernetes import client

    from ckpt.contract.checkpoints_api import Checkpoint as ApiRecord
    from ckpt.user.resources import Checkpoints
    from ckpt.user.restore import Restores

# How a message names the command that tells a resource's story: (namespace, kind, name).
Describe = Callable[[str, str, str], str]


def kubectl_describe(namespace: str, kind: str, name: str) -> str:
    return f"kubectl -n {namespace} describe {kind} {name}"


def generated_name(base: str) -> str:
    """`base` and a random suffix, so that repeated runs make new resources."""
    return f"{base}-{secrets.token_hex(3)}"


def start_checkpoint(
    checkpoints: Checkpoints, namespace: str, name: str, spec: CheckpointSpec, say: Console
) -> dict[str, Any]:
    body = checkpoints.create(namespace, name, spec)
    say.print(f"checkpoint.ckpt.dev/{name} created")
    return body


def wait_checkpoint(
    checkpoints: Checkpoints, namespace: str, name: str, console: Console, timeout: int
) -> CheckpointStatus:
    """Follows the Checkpoint to Ready or Failed with a progress display on `console`. The
    operator gets 30 s beyond the checkpoint's own timeout to write the Failed status."""
    from ckpt.user import follow

    return follow.follow(
        lambda: checkpoints.status(namespace, name), console, timeout=timeout + 30
    )


def checkpoint_failure(
    namespace: str, name: str, status: CheckpointStatus, describe: Describe
) -> str:
    return (
        f"checkpoint did not become Ready: {status.message or 'timed out'}; "
        f"see `{describe(namespace, 'checkpoint', name)}`"
    )


def start_restore(
    restores: Restores, namespace: str, name: str, spec: RestoreSpec, say: Console
) -> dict[str, Any]:
    body = restores.create(namespace, name, spec)
    say.print(f"restore.ckpt.dev/{name} created")
    return body


def wait_restore(
    restores: Restores, namespace: str, name: str, console: Console, timeout: int
) -> RestoreStatus:
    from ckpt.user import follow
    from ckpt.user.restore import RESTORE_STEPS, RESTORE_TERMINAL

    return follow.follow(
        lambda: restores.status(namespace, name), console,
        timeout=timeout, steps=RESTORE_STEPS, terminal=RESTORE_TERMINAL,
    )


def restore_summary(namespace: str, name: str, status: RestoreStatus) -> Table:
    from ckpt.user.restore import restore_rows

    table = Table(title=f"restore {namespace}/{name}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in restore_rows(namespace, name, status):
        table.add_row(key, value)
    return table


def restore_failure(
    namespace: str, name: str, status: RestoreStatus, describe: Describe
) -> str:
    return (
        f"restore did not reach Running: {status.message or 'timed out'}; "
        f"see `{describe(namespace, 'restore', name)}`"
    )


def migrate(
    api: client.ApiClient,
    namespace: str,
    pod: str,
    *,
    to: str,
    pod_name: str | None,
    timeout: int,
    console: Console,
    out: Console,
    describe: Describe = kubectl_describe,
) -> RestoreStatus:
    """Checkpoints `pod` (its containers stop), restores it on node `to`, and deletes the
    original once the new Pod runs; returns the Running Restore's status. On any failure
    the original Pod is kept (its kubelet restarts the stopped containers) and a UserError
    says why."""
    from ckpt.user.resources import Checkpoints, UserError
    from ckpt.user.restore import Restores

    tag = secrets.token_hex(3)
    # The Checkpoint and the Restore share the name: one move, one name to look for.
    name = f"{pod}-move-{tag}"
    checkpoints = Checkpoints(api)
    checkpoints.pod(namespace, pod)  # exists? (says so before anything is created)
    start_checkpoint(
        checkpoints, namespace, name,
        CheckpointSpec(pod_name=pod, leave_running=False, timeout_seconds=timeout), console,
    )
    status = wait_checkpoint(checkpoints, namespace, name, console, timeout)
    if status.phase != Phase.Ready:
        raise UserError(
            f"checkpoint did not become Ready ({status.message or 'timed out'}); "
            f"pod {namespace}/{pod} is kept; see `{describe(namespace, 'checkpoint', name)}`"
        )
    restores = Restores(api)
    start_restore(
        restores, namespace, name,
        RestoreSpec(checkpoint_name=name, node_name=to, pod_name=pod_name or f"{pod}-moved"),
        console,
    )
    restored = wait_restore(restores, namespace, name, console, timeout)
    out.print(restore_summary(namespace, name, restored))
    if restored.phase != RestorePhase.Running:
        raise UserError(
            f"restore did not reach Running ({restored.message or 'timed out'}); "
            f"pod {pod} is kept; see `{describe(namespace, 'restore', name)}`"
        )
    restores.delete_pod(namespace, pod)
    return restored


@dataclass(frozen=True)
class Listed:
    """One listed Checkpoint: the resource, its status through the operator's model, and
    its record in the checkpoints API when that was joined."""

    item: dict[str, Any]
    status: CheckpointStatus
    record: ApiRecord | None

    @property
    def namespace(self) -> str:
        return str(self.item["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.item["metadata"]["name"])

    @property
    def pod(self) -> str:
        return str((self.item.get("spec") or {}).get("podName", ""))

    @property
    def phase(self) -> str:
        # No phase until the operator first writes the status: the column stays empty then.
        return self.status.phase if "phase" in self.status.model_fields_set else ""

    @property
    def api_status(self) -> str:
        """The API's status when joined, else the one the operator last wrote."""
        if self.record is not None:
            return self.record.status.value
        return self.status.api_status or ""

    @property
    def age(self) -> str:
        return age(str(self.item["metadata"]["creationTimestamp"]))


def list_checkpoints(
    checkpoints: Checkpoints,
    namespace: str | None,
    api_url: str | None,
    api_token: str | None,
    console: Console,
    *,
    api_ca: Path | None = None,
    api_server_name: str | None = None,
) -> list[Listed]:
    """The Checkpoints of `namespace` (None: all), joined with the checkpoints API when its
    URL is given: with `api_token`, else each namespace's read-only token from the Secret the
    operator keeps there (a warning on `console` when there is none, the API cannot be
    reached, its certificate is not trusted, or the URL is plain http off this host)."""
    from ckpt.user.resources import checkpoint_status

    items = checkpoints.list(namespace)
    statuses = [checkpoint_status(item) for item in items]
    records: dict[str, ApiRecord] = {}
    for token, group in _tokens(checkpoints, items, statuses, api_url, api_token, console):
        records |= _api_records(group, api_url, token, console, api_ca, api_server_name)
    return [
        Listed(item, status, records.get(status.checkpoint_id or ""))
        for item, status in zip(items, statuses, strict=True)
    ]


def _tokens(
    checkpoints: Checkpoints,
    items: list[dict[str, Any]],
    statuses: list[CheckpointStatus],
    url: str | None,
    token: str | None,
    console: Console,
) -> list[tuple[str | None, list[CheckpointStatus]]]:
    """Which token joins which statuses: the one given joins all; without one, each
    namespace's records are readable only with that namespace's own token (README, Security
    model), read from its Secret with the user's Kubernetes credentials."""
    if token or not url:
        return [(token, statuses)]
    from ckpt.contract.checkpoints_api import READ_TOKEN_SECRET
    from ckpt.user.resources import UserError

    by_namespace: dict[str, list[CheckpointStatus]] = {}
    for item, status in zip(items, statuses, strict=True):
        if status.checkpoint_id:
            by_namespace.setdefault(item["metadata"]["namespace"], []).append(status)
    joined: list[tuple[str | None, list[CheckpointStatus]]] = []
    for namespace, group in sorted(by_namespace.items()):
        try:
            found = checkpoints.api_token(namespace)
        except UserError as exc:
            console.print(f"[yellow]warning:[/yellow] checkpoints API not joined: {exc}")
            continue
        if found is None:
            console.print(
                f"[yellow]warning:[/yellow] checkpoints API not joined in {namespace}: no "
                f"secret {READ_TOKEN_SECRET} there yet (the operator writes it); or pass "
                "--api-token"
            )
            continue
        joined.append((found, group))
    return joined


def _api_records(
    statuses: list[CheckpointStatus], url: str | None, token: str | None, console: Console,
    ca_file: Path | None = None, server_name: str | None = None,
) -> dict[str, ApiRecord]:
    ids = [s.checkpoint_id for s in statuses if s.checkpoint_id]
    if not (url and token and ids):
        return {}
    from ckpt.contract.checkpoints_client import SyncCheckpointsClient, plain_http_refusal
    from ckpt.errors import ServiceError

    refusal = plain_http_refusal(url)
    if refusal is not None:
        console.print(f"[yellow]warning:[/yellow] checkpoints API not joined: {refusal}")
        return {}
    try:
        with SyncCheckpointsClient(url, token, ca_file=ca_file, server_name=server_name) as api:
            return {str(r.id): r for r in api.list(ids)}
    except (ServiceError, OSError) as exc:
        console.print(f"[yellow]warning:[/yellow] checkpoints API not joined: {exc}")
        return {}


def age(timestamp: str, now: dt.datetime | None = None) -> str:
    """How long ago an RFC 3339 time was, as kubectl shows ages: 45s, 12m, 3h, 2d."""
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
