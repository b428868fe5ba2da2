"""Each namespace's read-only token of the checkpoints API, in a Secret of that namespace.

The API keeps one tenant per namespace; the operator acts for all of them, and its token
stays in the operator's namespace. A namespace's users (ClusterRole ckpt-user) may read the
Secret `ckpt-api-read-token` there, which holds a token that lists that namespace's records
and changes nothing: `ckpt list` and `kubectl ckpt ls` find it themselves.

The operator mints a token the first time it handles a namespace after it starts, and again
at half its lifetime while the namespace has Checkpoints; a token it replaced keeps working
until it expires, so a user never holds one that stopped early. It never reads the Secret:
writing is all its RBAC allows there (create, and update of that one name), and
ValidatingAdmissionPolicy `ckpt-operator-writes-only-read-token-secrets` holds even that to
this name, type and key.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from kubernetes import client

from ckpt.contract.checkpoints_api import (
    READ_TOKEN_EXPIRES_ANNOTATION,
    READ_TOKEN_KEY,
    READ_TOKEN_SECRET,
    READ_TOKEN_SECRET_TYPE,
    ReaderToken,
)

log = logging.getLogger(__name__)

# Long enough that a namespace without Ready Checkpoints (the periodic renewal rides on
# their sync) keeps a working token for a day; short enough that someone who lost access to
# the namespace loses access to its records within one.
LIFETIME = dt.timedelta(hours=24)


class Minter(Protocol):
    """The API call (`CheckpointsClient.mint_reader_token`)."""

    async def mint_reader_token(self, namespace: str, expires_in: int) -> ReaderToken: ...


class SecretWriter(Protocol):
    async def write(self, namespace: str, token: ReaderToken) -> None: ...


def secret_body(namespace: str, token: ReaderToken) -> dict[str, Any]:
    expires = token.expires_at.astimezone(dt.UTC) if token.expires_at.tzinfo else token.expires_at
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": READ_TOKEN_SECRET_TYPE,
        "metadata": {
            "name": READ_TOKEN_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ckpt-operator"},
            "annotations": {
                READ_TOKEN_EXPIRES_ANNOTATION: expires.strftime("%Y-%m-%dT%H:%M:%SZ")
            },
        },
        "data": {READ_TOKEN_KEY: base64.b64encode(token.token.encode()).decode()},
    }


class KubeSecrets:
    """Create, else replace: the two writes the operator's RBAC grants on these Secrets."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)

    async def write(self, namespace: str, token: ReaderToken) -> None:
        # The client sends a dict body as it is; its annotations name only V1Secret.
        body = cast(Any, secret_body(namespace, token))

        def put() -> None:
            try:
                self._core.create_namespaced_secret(namespace, body, _preload_content=False)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
                self._core.replace_namespaced_secret(
                    READ_TOKEN_SECRET, namespace, body, _preload_content=False
                )

        await asyncio.to_thread(put)


class ReadTokens:
    """Keeps each namespace's Secret holding a token that works for at least half its
    lifetime. `ensure` is cheap between renewals (a dictionary lookup)."""

    def __init__(
        self,
        api: Minter,
        secrets: SecretWriter,
        *,
        skip: frozenset[str] = frozenset(),
        lifetime: dt.timedelta = LIFETIME,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._api = api
        self._secrets = secrets
        self._skip = skip
        self._lifetime = lifetime
        self._clock = clock
        self._renew_at: dict[str, dt.datetime] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, namespace: str) -> None:
        """Mint and write a new token when the namespace's is due. Raises what the API or
        the apiserver raised."""
        if namespace in self._skip or not self._due(namespace):
            return
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            if not self._due(namespace):
                return  # another handler of the namespace renewed it meanwhile
            minted = await self._api.mint_reader_token(
                namespace, int(self._lifetime.total_seconds())
            )
            await self._secrets.write(namespace, minted)
            self._renew_at[namespace] = self._clock() + self._lifetime / 2
            log.info("wrote %s/%s (a new read-only API token)", namespace, READ_TOKEN_SECRET)

    async def ensure_quietly(self, namespace: str) -> None:
        """`ensure`, with a failure logged instead of raised: the namespace's users lose
        the API column of `ckpt list` for a while, nothing else does."""
        try:
            await self.ensure(namespace)
        except Exception as exc:
            log.warning(
                "could not renew %s/%s: %s", namespace, READ_TOKEN_SECRET, _described(exc)
            )

    def _due(self, namespace: str) -> bool:
        renew_at = self._renew_at.get(namespace)
        return renew_at is None or renew_at <= self._clock()


def _described(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"the apiserver answered {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
