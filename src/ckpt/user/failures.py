"""How the user commands (`ckpt ...` and `kubectl ckpt ...`) end on errors the user can act
on: exit status 1 and one line saying what to do, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


def fail(message: str) -> typer.Exit:
    # Plain text: a message may hold brackets that rich would take for markup.
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turns a `UserError` or an unreachable apiserver into `fail`'s exit."""
    import urllib3

    from ckpt.user.resources import UserError

    try:
        yield
    except UserError as exc:
        raise fail(str(exc)) from None
    except urllib3.exceptions.HTTPError as exc:
        # The client's retries gave up: no apiserver answers at the kubeconfig's address.
        reason = getattr(exc, "reason", None) or exc
        raise fail(
            f"cannot reach the cluster ({reason}); check --context and --kubeconfig "
            "(`kubectl cluster-info` shows where they point)"
        ) from None
