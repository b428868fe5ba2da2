"""`ckpt api ...`: serve the checkpoints API and manage its tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from .settings import ApiSettings

app = typer.Typer(no_args_is_help=True, add_completion=False)
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of tenants.")
app.add_typer(token_app, name="token")

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="SQLAlchemy URL (sqlite:///FILE or postgresql+psycopg://...); "
        "default: $CKPT_API_DATABASE_URL or ./ckpt-api.db.",
        show_default=False,
    ),
]


def _settings(database: str | None, **overrides: object) -> ApiSettings:
    settings = ApiSettings()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if database is not None:
        changes["database_url"] = database
    return settings.model_copy(update=changes) if changes else settings


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: 8080]")] = None,
    database: DatabaseOption = None,
) -> None:
    """Run the API service (applies database migrations first)."""
    import uvicorn

    from .app import create_app

    settings = _settings(database, host=host, port=port)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Request lines carry no secrets (tokens travel in headers, which are never logged),
        # but per-request logging costs more than the request on a busy node.
        access_log=False,
        log_level="info",
    )


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant (organisation) name.")],
    database: DatabaseOption = None,
) -> None:
    """Create a token for TENANT (and the tenant if new); print only the token."""
    from . import migrate
    from .db import Database
    from .tokens import create_token

    if not tenant.strip() or len(tenant) > 253:
        raise typer.BadParameter("must be 1 to 253 characters", param_hint="--tenant")
    settings = _settings(database)
    db = Database(settings.database_url, settings)
    try:
        migrate.upgrade(db.engine)
        typer.echo(create_token(db, tenant))
    finally:
        db.dispose()
