"""Client of the checkpoints API (README.md, "The checkpoints API"): async first, with a sync
wrapper.

Schemas come from `ckpt.contract.checkpoints_api`, so client and server cannot drift apart.
Error answers become the typed errors of `ckpt.errors` (`NotFound`, `Conflict`, `Rejected`,
`Unavailable`).
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import ipaddress
import ssl
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID, uuid4

import httpx
from pydantic import TypeAdapter, ValidationError

from ckpt.contract.checkpoints_api import (
    TENANT_HEADER,
    Adoption,
    ApiError,
    Checkpoint,
    CheckpointInfo,
    ReaderToken,
    UploadedBody,
)
from ckpt.errors import ServiceError, Unavailable, error_for
from ckpt.retry import Backoff, retry

__all__ = [
    "DEFAULT_RETRY",
    "Checkpoint",
    "CheckpointsClient",
    "SyncCheckpointsClient",
    "plain_http_refusal",
]

_CHECKPOINTS = TypeAdapter(list[Checkpoint])
NEXT_CURSOR_HEADER = "X-Next-Cursor"
# Half the server's default maximum of ids per request (CKPT_API_LIST_MAX_IDS, 1000).
_IDS_PER_REQUEST = 500


# Transport errors and 5xx are retried this often, with full jitter so that many operator
# workers do not retry in lock-step.
DEFAULT_RETRY = Backoff(first=0.1, cap=2.0, attempts=5, jitter=True)


def _api_error(response: httpx.Response) -> ServiceError:
    try:
        body = ApiError.model_validate_json(response.content)
    except ValidationError:
        # A proxy in front of the API may answer with HTML or nothing; keep a readable message.
        text = response.text.strip()[:200] or response.reason_phrase
        body = ApiError(message=text, code=str(response.status_code))
    return error_for(response.status_code, body.message, code=body.code, details=body.details)


def _id_of(response: httpx.Response) -> UUID:
    return UUID(response.text.strip())


def plain_http_refusal(url: str) -> str | None:
    """Why a tenant token must not go to `url`, or None: plain http is for loopback only (a
    local API in development or tests), where the token never crosses a network."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return None
    if parsed.scheme != "http":
        return f"{url}: the checkpoints API URL must start with https://"
    host = parsed.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"{url}: refusing to send the API token over plain http to {host}; the checkpoints "
        "API serves https (use https:// and its CA)"
    )


class _NotRetried(Exception):
    """Carries an error out of the retry loop: retrying cannot change its outcome."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class CheckpointsClient:
    """Async client. Use as `async with CheckpointsClient(url, token) as api: ...`.

    An https API is always verified: against `ca_file` (the API's own certificate or its CA)
    when given, else the system's CAs; `server_name` is the name its certificate must carry
    when the URL's host is another (a port-forward to 127.0.0.1)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ca_file: Path | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
        retry: Backoff = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._retry = retry
        self._base_url = base_url.rstrip("/")
        https = httpx.URL(self._base_url).scheme == "https"
        # Only https reads the CA file: a plain-http API on loopback (tests) needs none.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if https and ca_file else True
        )
        # SNI and the hostname check both use this name (httpcore's `sni_hostname`).
        self._extensions = {"sni_hostname": server_name} if https and server_name else None
        # Set by `for_tenant` on its views, which share this pool and leave closing it here.
        self._tenant: dict[str, str] = {}
        self._owns_http = True
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def for_tenant(self, namespace: str) -> Self:
        """This client acting for `namespace`'s tenant, as only an operator token may (ckpt's
        extension, README "The checkpoints API"). A cheap view: it shares this client's
        connection pool, and closing it leaves the pool to this client."""
        view = copy.copy(self)
        view._tenant = {TENANT_HEADER: namespace}
        view._owns_http = False
        return view

    async def mint_reader_token(self, namespace: str, expires_in: int) -> ReaderToken:
        """A new read-only token of `namespace`'s tenant, working for `expires_in` seconds
        (operator tokens only). A retry after a lost answer mints another: the first expires
        unused."""
        response = await self._request(
            "POST",
            f"/ckpt/v1/namespaces/{namespace}/reader-tokens",
            params={"expires_in": expires_in},
        )
        return ReaderToken.model_validate_json(response.content)

    async def adopt_namespace_records(self) -> Adoption:
        """Moves the records of the operator token's own tenant to the tenants of the
        namespaces they name (operator tokens only; idempotent)."""
        response = await self._request("POST", "/ckpt/v1/namespaces/adopt")
        return Adoption.model_validate_json(response.content)

    async def create(self, idempotency_key: str | None = None, name: str | None = None) -> UUID:
        # Without a caller's key, a fresh one per call still makes retries safe: a request
        # whose answer was lost cannot create a second checkpoint when it is retried.
        headers = {"Idempotency-Key": idempotency_key or f"client-{uuid4()}"}
        params = {"name": name} if name is not None else None
        response = await self._request("POST", "/v2/checkpoints", headers=headers, params=params)
        return _id_of(response)

    async def put_info(
        self, checkpoint_id: UUID | str, gpu: str, platform: str, info: Any = None
    ) -> UUID:
        body = CheckpointInfo(gpu=gpu, platform=platform, info=info)
        response = await self._request(
            "PUT", f"/v2/checkpoints/info/{checkpoint_id}", json=body.model_dump(mode="json")
        )
        return _id_of(response)

    async def uploaded(
        self, checkpoint_id: UUID | str, restore_path: str | None, checksum: str | None = None
    ) -> UUID:
        body = UploadedBody(restore_path=restore_path, checksum=checksum)
        payload = body.model_dump(mode="json", exclude_none=False)
        if checksum is None:
            # Plain contract body unless the extension is used.
            payload.pop("checksum")
        response = await self._request(
            "POST", f"/v2/checkpoints/uploaded/{checkpoint_id}", json=payload
        )
        return _id_of(response)

    async def deprecate(self, checkpoint_id: UUID | str) -> UUID:
        response = await self._request("PATCH", f"/v2/checkpoints/deprecate/{checkpoint_id}")
        return _id_of(response)

    async def list(self, ids: Iterable[UUID | str] | None = None) -> list[Checkpoint]:
        """The caller's checkpoints, or only those of `ids` that exist."""
        items: list[Checkpoint] = []
        if ids is not None:
            wanted = [str(i) for i in ids]
            # The server pages every list (100 by default) and takes at most 1000 ids a
            # request: ask in batches, each with a page as large as the batch, and follow
            # the cursor should the server's maximum page be smaller still.
            for start in range(0, len(wanted), _IDS_PER_REQUEST):
                batch = wanted[start : start + _IDS_PER_REQUEST]
                params: dict[str, str | int] = {"ids": ",".join(batch), "limit": len(batch)}
                while True:
                    response = await self._request("GET", "/v2/checkpoints", params=params)
                    items.extend(_CHECKPOINTS.validate_json(response.content))
                    following = response.headers.get(NEXT_CURSOR_HEADER)
                    if following is None:
                        break
                    params = {**params, "cursor": following}
            return items
        cursor: str | None = None
        while True:
            page, cursor = await self.list_page(limit=500, cursor=cursor)
            items.extend(page)
            if cursor is None:
                return items

    async def list_page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[builtins.list[Checkpoint], str | None]:
        """One page of the paging extension, and the cursor of the next page (None at the end)."""
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._request("GET", "/v2/checkpoints", params=params)
        return _CHECKPOINTS.validate_json(response.content), response.headers.get(
            NEXT_CURSOR_HEADER
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        # Every call is safe to repeat: create carries an idempotency key, the others are
        # idempotent by the contract's lifecycle. So transport errors and 5xx are retried.
        async def once() -> httpx.Response:
            try:
                response = await self._http.request(
                    method, path, params=params, headers={**self._tenant, **(headers or {})},
                    json=json,
                    extensions=self._extensions,
                )
            except httpx.TransportError as exc:
                untrusted = _certificate_error(exc)
                if untrusted is not None:
                    raise _NotRetried(Unavailable(
                        f"checkpoints API {self._base_url}: its certificate is not trusted "
                        f"({untrusted.verify_message or untrusted.reason}); give its CA file "
                        "(and the name it carries, when the URL names another host)"
                    )) from exc
                raise Unavailable(f"checkpoints API unreachable: {exc!r}") from exc
            if response.status_code >= 400:
                raise _api_error(response)
            return response

        try:
            return await retry(once, self._retry, retry_on=Unavailable)
        except _NotRetried as final:
            raise final.error from final.__cause__


class SyncCheckpointsClient:
    """Blocking wrapper for code without an event loop (the CLI). Not for use inside one."""

    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = CheckpointsClient(base_url, token, **kwargs)
        self._owner = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._owner:
            return
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def for_tenant(self, namespace: str) -> Self:
        """As `CheckpointsClient.for_tenant`: valid while this client is open."""
        view = copy.copy(self)
        view._client = self._client.for_tenant(namespace)
        view._owner = False
        return view

    def create(self, idempotency_key: str | None = None, name: str | None = None) -> UUID:
        return self._runner.run(self._client.create(idempotency_key, name))

    def put_info(
        self, checkpoint_id: UUID | str, gpu: str, platform: str, info: Any = None
    ) -> UUID:
        return self._runner.run(self._client.put_info(checkpoint_id, gpu, platform, info))

    def uploaded(
        self, checkpoint_id: UUID | str, restore_path: str | None, checksum: str | None = None
    ) -> UUID:
        return self._runner.run(self._client.uploaded(checkpoint_id, restore_path, checksum))

    def deprecate(self, checkpoint_id: UUID | str) -> UUID:
        return self._runner.run(self._client.deprecate(checkpoint_id))

    def list(self, ids: Sequence[UUID | str] | None = None) -> list[Checkpoint]:
        return self._runner.run(self._client.list(ids))

    def list_page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[builtins.list[Checkpoint], str | None]:
        return self._runner.run(self._client.list_page(limit, cursor))
