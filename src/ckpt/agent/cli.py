"""`ckpt agent`: run the node agent."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ckpt.agent.settings import AgentSettings

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """The node agent that dumps and restores containers."""


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: CKPT_AGENT_HOST or 0.0.0.0).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (default: CKPT_AGENT_PORT or 8471).")
    ] = None,
) -> None:
    """Serve the agent's HTTP API; every other setting comes from CKPT_AGENT_* variables."""
    import uvicorn

    from ckpt.agent.app import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = AgentSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        # The operator follows jobs by polling; short keep-alives are enough.
        timeout_keep_alive=30,
        # Cancelling a dump thaws containers and removes partial files: give it time.
        timeout_graceful_shutdown=60,
    )
    uvicorn.Server(config).run()
