"""Options both front ends share (`ckpt` and `kubectl ckpt`): one declaration, so their names,
help and defaults never drift."""

from __future__ import annotations

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
    str | None, typer.Option(envvar="CKPT_API_TOKEN", help="Token of that API.")
]
