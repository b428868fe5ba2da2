"""The `ckpt` command: serve any part of the system, and the user verbs."""

from __future__ import annotations

import typer

from ckpt.agent.cli import app as agent_app
from ckpt.api.cli import app as api_app
from ckpt.operator.cli import app as operator_app
from ckpt.user import cli as user_cli
from ckpt.user.failures import user_errors

app = typer.Typer(
    name="ckpt",
    help="Checkpoint and restore Kubernetes pods, CPU and GPU.",
    no_args_is_help=True,
    add_completion=False,
)
user_cli.register(app)
app.add_typer(api_app, name="api", help="The checkpoints API service and its tokens.")
app.add_typer(agent_app, name="agent", help="The node agent that dumps and restores containers.")
app.add_typer(operator_app, name="operator", help="The kopf operator that reconciles Checkpoints.")


def main() -> None:
    # The user verbs' connection failures end in one line, as the kubectl plugin's do.
    try:
        with user_errors():
            app()
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
