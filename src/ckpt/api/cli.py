"""`ckpt api ...`: serve the checkpoints API and manage its tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ckpt.api.settings import ApiSettings

if TYPE_CHECKING:
    from ckpt.api.db import Database

app = typer.Typer(no_args_is_help=True, add_completion=False)
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of tenants.")
app.add_typer(token_app, name="token")

class TokenRole(StrEnum):
    # The choices of `--role`, spelled as ckpt.api.tables.Role, which this module does not
    # import at start-up (it loads SQLAlchemy).
    tenant = "tenant"
    reader = "reader"
    operator = "operator"


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

    from ckpt.api.app import create_app

    settings = _settings(database, host=host, port=port)
    uvicorn.run(create_app(settings), **server_options(settings))


def server_options(settings: ApiSettings) -> dict[str, Any]:
    """uvicorn's options for `serve` (tests serve the app with the same ones)."""
    return {
        "host": settings.host,
        "port": settings.port,
        # uvicorn's TLS context: TLS 1.2 or later, the certificate loaded once at start (a
        # rotated Secret takes effect when the pod restarts).
        "ssl_certfile": str(settings.tls_cert_file) if settings.tls_cert_file else None,
        "ssl_keyfile": str(settings.tls_key_file) if settings.tls_key_file else None,
        # Request lines carry no secrets (tokens travel in headers, which are never logged),
        # but per-request logging costs more than the request on a busy node.
        "access_log": False,
        "log_level": "info",
    }


_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `12h`, `30d`, `2w` -> a timedelta (at least one second)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(
            "a positive whole number with an optional unit s, m, h, d or w (e.g. 30d)",
            param_hint="--expires-in",
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@contextmanager
def _database(database: str | None) -> Iterator[Database]:
    from ckpt.api import migrate
    from ckpt.api.db import Database

    settings = _settings(database)
    db = Database(settings.database_url, settings)
    try:
        migrate.upgrade(db.engine)
        yield db
    finally:
        db.dispose()


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant (organisation) name.")],
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            help="The token stops working after this long: 3600, 15m, 12h, 30d, 2w "
            "[default: never].",
            show_default=False,
        ),
    ] = None,
    role: Annotated[
        TokenRole,
        typer.Option(
            "--role",
            help="tenant: the whole checkpoints contract on TENANT (Cedana's clients); "
            "reader: only its reads; operator: ckpt's operator, acting for the namespace "
            "each request names (TENANT's records move to their namespaces when it starts).",
        ),
    ] = TokenRole.tenant,
    database: DatabaseOption = None,
) -> None:
    """Create a token for TENANT (and the tenant if new); print only the token."""
    from ckpt.api.tables import NAMESPACE_PREFIX, Role
    from ckpt.api.tokens import create_token

    if not tenant.strip() or len(tenant) > 253:
        raise typer.BadParameter("must be 1 to 253 characters", param_hint="--tenant")
    if tenant.startswith(NAMESPACE_PREFIX):
        raise typer.BadParameter(
            f"names starting with {NAMESPACE_PREFIX!r} are the namespaces' own tenants",
            param_hint="--tenant",
        )
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    with _database(database) as db:
        typer.echo(create_token(db, tenant, lifetime, Role(role.value)))


def _when(value: object) -> str:
    return "-" if value is None else f"{value:%Y-%m-%dT%H:%M:%SZ}"


@token_app.command("list")
def token_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant's tokens.")
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """List tokens (never their values, which are not stored): id, tenant (a namespace's:
    namespace:NAME), state, role, times (UTC)."""
    from ckpt.api.tables import utcnow
    from ckpt.api.tokens import list_tokens

    with _database(database) as db:
        records = list_tokens(db, tenant)
    now = utcnow()
    typer.echo("ID\tTENANT\tSTATE\tROLE\tCREATED\tEXPIRES\tREVOKED")
    for r in records:
        typer.echo(
            f"{r.id}\t{r.tenant}\t{r.state(now)}\t{r.role}\t{_when(r.created_at)}\t"
            f"{_when(r.expires_at)}\t{_when(r.revoked_at)}"
        )


@token_app.command("revoke")
def token_revoke(
    token: Annotated[
        str,
        typer.Argument(
            help="The token's ID from `token list`, or the token itself (a leaked one)."
        ),
    ],
    database: DatabaseOption = None,
) -> None:
    """Revoke a token: it stops working at once for new servers, within the token cache time
    (CKPT_API_TOKEN_CACHE_SECONDS) for running ones."""
    from ckpt.api.tokens import TOKEN_PREFIX, revoke_token

    with _database(database) as db:
        if token.startswith(TOKEN_PREFIX):
            found = revoke_token(db, token=token)
        elif token.isdigit():
            found = revoke_token(db, token_id=int(token))
        else:
            raise typer.BadParameter("an ID from `token list` or a token", param_hint="TOKEN")
    if not found:
        typer.echo("no such token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")
