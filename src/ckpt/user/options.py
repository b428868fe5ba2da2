"""Options both front ends share (`ckpt` and `kubectl ckpt`): one declaration, so their names,
help and defaults never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ckpt.apis.checkpoint import RetainPolicy
from ckpt.contract.agent import GpuMode

CheckpointName = Annotated[
    str | None, typer.Option(help="Name of the Checkpoint (default: POD-<random>).")
]
Containers = Annotated[
    list[str] | None,
    typer.Option("--container", "-c", help="Only these containers (repeatable)."),
]
Gpu = Annotated[GpuMode, typer.Option(help="GPU state: auto, required or none.")]
Stop = Annotated[bool, typer.Option(help="Stop the pod's containers after the dump.")]
Retain = Annotated[
    RetainPolicy, typer.Option(help="Retain or Delete the archive with the resource.")
]
# The checkpoints API that `ls` / `list` join their rows with.
ApiUrl = Annotated[
    str | None, typer.Option(envvar="CKPT_API_URL", help="Checkpoints API to join with.")
]
ApiToken = Annotated[
    str | None,
    typer.Option(
        envvar="CKPT_API_TOKEN",
        help="Token of that API (default: each namespace's read-only one, from its Secret "
        "ckpt-api-read-token).",
    ),
]
# Always verified: there is no option to skip it, since the token goes to whoever answers.
ApiCa = Annotated[
    Path | None,
    typer.Option(
        "--api-ca", envvar="CKPT_API_CA", dir_okay=False,
        help="Certificate (or CA) that the API's https certificate must chain to, e.g. "
        "tls.crt of Secret ckpt-system/ckpt-api-tls (default: the system CAs).",
    ),
]
ApiServerName = Annotated[
    str | None,
    typer.Option(
        "--api-server-name", envvar="CKPT_API_SERVER_NAME",
        help="Name the API's certificate carries when the URL names another host (a "
        "port-forward to 127.0.0.1: ckpt-api.ckpt-system.svc).",
    ),
]
