"""The options of a checkpoint as both front ends spell them (`ckpt checkpoint` and
`kubectl ckpt checkpoint`): one declaration, so their names, help and defaults never drift."""

from __future__ import annotations

from typing import Annotated

import typer

from ckpt.agent.models import GpuMode
from ckpt.operator.models import RetainPolicy

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
