"""`ckpt operator run`: the kopf operator process."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these (default: the whole cluster)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the operator: reconcile Checkpoints until stopped (SIGTERM/SIGINT)."""
    import kopf

    from ckpt.operator import handlers  # registers the handlers with kopf

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request (agent polls, health probes) would drown the events that
    # matter; those are logged by the reporter instead.
    for chatty in ("httpx", "aiohttp.access"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    config = handlers.CONFIG
    namespaces = namespace or config.namespaces
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{config.listen_host}:{config.liveness_port}/healthz",
    )
