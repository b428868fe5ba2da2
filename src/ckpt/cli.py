"""The `ckpt` command: serve any part of the system, and the user verbs."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="ckpt",
    help="Checkpoint and restore Kubernetes pods, CPU and GPU.",
    no_args_is_help=True,
    add_completion=False,
)

# Each part owns its command group; importing them lazily keeps `ckpt --help` fast and
# lets a part's heavy dependencies (kopf, SQLAlchemy) load only when that part runs.
_GROUPS = {
    "api": ("ckpt.api.cli", "The checkpoints API service and its tokens."),
    "agent": ("ckpt.agent.cli", "The node agent that dumps and restores containers."),
    "operator": ("ckpt.operator.cli", "The kopf operator that reconciles Checkpoints."),
}


def _register_groups() -> None:
    for name, (module, help_text) in _GROUPS.items():
        try:
            group = importlib.import_module(module).app
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise
            continue
        app.add_typer(group, name=name, help=help_text)


def _register_user_verbs() -> None:
    try:
        verbs = importlib.import_module("ckpt.user_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "ckpt.user_cli":
            raise
        return
    verbs.register(app)


def main() -> None:
    _register_groups()
    _register_user_verbs()
    app()
