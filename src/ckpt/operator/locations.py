"""StorageLocations on the operator's side: choosing one for a Checkpoint, resolving it (with
its credentials) for one agent job, checking that it is reachable, and deleting archives
through it.

How credentials travel (the narrowest means we found):

- Secrets live only in the operator's own namespace (ckpt-system); the operator may read
  Secrets there through a namespaced Role and nowhere else. A location's ``secretRef`` has
  no namespace field, so a location cannot point the operator at another namespace's Secret.
- The operator reads the Secret just before each agent call and puts the keys into that one
  request (``destination``/``source``), over the TLS connection it verified, with a token
  bound to the agent audience. Agents hold no Secret, need no RBAC on Secrets, and keep the
  keys in memory only for the job (their job records mask them). A node that is compromised
  sees only the credentials of jobs sent to it while it is compromised, not all of them at
  all times as a mounted Secret would give it; a rotated Secret takes effect at the next job
  without restarting any agent.
- The age identity (private key) travels only with restore requests; checkpoint requests
  carry only the public recipients.
- No credential is written to a status, an Event, a log line or the checkpoints API: the
  models keep them as ``SecretStr`` and every message is built from the location's name.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from ckpt.apis import storagelocation as sl
from ckpt.storage.objects import LocationStore, StorageError, open_location

GetLocation = Callable[[str], Awaitable[Mapping[str, Any] | None]]
ListLocations = Callable[[], Awaitable[list[Mapping[str, Any]]]]
ReadSecret = Callable[[str], Awaitable[Mapping[str, str] | None]]
# A namespace's labels; None when the namespace does not exist.
NamespaceLabels = Callable[[str], Awaitable[Mapping[str, str] | None]]

AVAILABLE = "Available"
# Condition reason: the location's spec.allowedNamespaces does not select the namespace.
NOT_ALLOWED = "LocationNotAllowed"


class LocationError(Exception):
    """The location cannot be used; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_spec(name: str, spec: Mapping[str, Any]) -> sl.StorageLocationSpec:
    try:
        # JSON mode: strict like the apiserver, with enums given as strings.
        return sl.StorageLocationSpec.model_validate_json(json.dumps(dict(spec)))
    except ValidationError as exc:
        raise LocationError(
            "InvalidStorageLocation",
            f"StorageLocation {name!r} is invalid ({exc.error_count()} error(s))",
        ) from None


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data, base64-decoded (stringData is folded into data by the apiserver)."""
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        out[key] = base64.b64decode(value).decode()
    return out


class Locations:
    """Resolves StorageLocations through three small reads (injected, so tests can fake them)."""

    def __init__(
        self, get: GetLocation, list_all: ListLocations, read_secret: ReadSecret,
        namespace_labels: NamespaceLabels | None = None,
    ) -> None:
        self._get = get
        self._list = list_all
        self._read_secret = read_secret
        self._namespace_labels = namespace_labels

    async def choose(
        self, name: str | None, namespace: str | None = None
    ) -> tuple[str, sl.StorageLocationSpec]:
        """The named location, or the one marked default; with `namespace`, only if its
        spec.allowedNamespaces selects that namespace (LocationError `LocationNotAllowed`)."""
        chosen, spec = await self._choose(name)
        if namespace is not None:
            await self._allow(chosen, spec, namespace)
        return chosen, spec

    async def _allow(self, name: str, spec: sl.StorageLocationSpec, namespace: str) -> None:
        if spec.allowed_namespaces is None:
            return
        if self._namespace_labels is None:
            # Fail closed: a location restricted to some namespaces is never used unchecked.
            raise LocationError(
                NOT_ALLOWED,
                f"StorageLocation {name!r} admits only the namespaces its "
                "spec.allowedNamespaces selects, and namespace labels cannot be read here",
            )
        labels = await self._namespace_labels(namespace)
        if labels is None or not spec.allows(labels):
            raise LocationError(
                NOT_ALLOWED,
                f"StorageLocation {name!r} does not allow namespace {namespace!r} "
                "(its spec.allowedNamespaces does not select it)",
            )

    async def _choose(self, name: str | None) -> tuple[str, sl.StorageLocationSpec]:
        if name:
            body = await self._get(name)
            if body is None:
                raise LocationError(
                    "StorageLocationNotFound", f"StorageLocation {name!r} does not exist"
                )
            return name, parse_spec(name, body.get("spec") or {})
        defaults = [
            b for b in await self._list() if (b.get("spec") or {}).get("default") is True
        ]
        if not defaults:
            raise LocationError(
                "NoDefaultStorageLocation",
                "the Checkpoint names no storage and no StorageLocation is marked default",
            )
        if len(defaults) > 1:
            names = sorted(b["metadata"]["name"] for b in defaults)
            raise LocationError(
                "AmbiguousDefaultStorageLocation",
                f"several StorageLocations are marked default: {', '.join(names)}",
            )
        chosen = defaults[0]["metadata"]["name"]
        return chosen, parse_spec(chosen, defaults[0].get("spec") or {})

    async def destination(
        self, name: str | None, *, with_identities: bool = False, namespace: str | None = None
    ) -> sl.Destination:
        """The location with its credentials (and, for restores, its age identities); with
        `namespace`, only for a namespace the location allows."""
        chosen, spec = await self.choose(name, namespace)
        return await self.resolve(chosen, spec, with_identities=with_identities)

    async def resolve(
        self, name: str, spec: sl.StorageLocationSpec, *, with_identities: bool = False
    ) -> sl.Destination:
        credentials: sl.S3Credentials | None = None
        if spec.credentials_secret_ref is not None:
            values = await self._secret(name, spec.credentials_secret_ref.name)
            try:
                credentials = sl.S3Credentials(
                    access_key_id=SecretStr(values[sl.ACCESS_KEY_ID]),
                    secret_access_key=SecretStr(values[sl.SECRET_ACCESS_KEY]),
                    session_token=(
                        SecretStr(values[sl.SESSION_TOKEN]) if sl.SESSION_TOKEN in values else None
                    ),
                )
            except KeyError as exc:
                raise LocationError(
                    "StorageCredentialsInvalid",
                    f"StorageLocation {name!r}: its credentials Secret lacks the key {exc}",
                ) from None
        identities: list[SecretStr] = []
        encryption = spec.encryption
        if with_identities and encryption is not None and encryption.identity_secret_ref:
            values = await self._secret(name, encryption.identity_secret_ref.name)
            if sl.IDENTITY_KEY not in values:
                raise LocationError(
                    "StorageCredentialsInvalid",
                    f"StorageLocation {name!r}: its identity Secret lacks the key "
                    f"{sl.IDENTITY_KEY!r}",
                )
            identities = [SecretStr(values[sl.IDENTITY_KEY])]
        return sl.Destination(
            location=name,
            type=spec.type,
            bucket=spec.bucket,
            prefix=spec.prefix,
            endpoint=spec.endpoint,
            region=spec.region,
            path_style=spec.path_style,
            credentials=credentials,
            recipients=list(encryption.recipients) if encryption else [],
            identities=identities,
        )

    async def _secret(self, location: str, secret: str) -> dict[str, str]:
        data = await self._read_secret(secret)
        if data is None:
            raise LocationError(
                "StorageCredentialsMissing",
                f"StorageLocation {location!r}: Secret {secret!r} is missing in the "
                "operator's namespace",
            )
        return dict(data)

    async def store(self, name: str) -> LocationStore:
        """An object store for the operator itself (S3 only: file locations are node-local)."""
        dest = await self.destination(name)
        try:
            return open_location(dest)
        except StorageError as exc:
            raise LocationError("StorageLocationNodeLocal", str(exc)) from exc


async def check(
    locations: Locations, name: str, spec: Mapping[str, Any], generation: int | None = None
) -> sl.StorageLocationStatus:
    """One reachability check, as the location's new status; ``generation`` is the
    metadata.generation of the spec checked (a changed spec is checked anew)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    try:
        parsed = parse_spec(name, spec)
        if parsed.type is sl.LocationType.file:
            ok, reason, message = True, "NodeLocal", "node-local folder of each agent"
        else:
            store = open_location(await locations.resolve(name, parsed))
            await asyncio.to_thread(store.check)
            ok, reason, message = True, "Reachable", f"bucket {parsed.bucket} answered a listing"
    except LocationError as exc:
        ok, reason, message = False, exc.reason, exc.message
    except StorageError as exc:
        ok, reason, message = False, "Unreachable", str(exc)
    condition = sl.LocationCondition(
        type=AVAILABLE,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        last_transition_time=now,
    )
    return sl.StorageLocationStatus(
        phase="Available" if ok else "Unavailable",
        message=message,
        conditions=[condition],
        last_checked=now,
        observed_generation=generation,
    )


def merge_condition(
    old: Mapping[str, Any] | None, new: sl.StorageLocationStatus
) -> sl.StorageLocationStatus:
    """Keeps the condition's lastTransitionTime when its status did not change."""
    for cond in (old or {}).get("conditions") or []:
        same = new.conditions and cond.get("status") == new.conditions[0].status
        if cond.get("type") == AVAILABLE and same:
            new.conditions[0].last_transition_time = cond.get(
                "lastTransitionTime", new.conditions[0].last_transition_time
            )
    return new


def from_kube(kube: Any, namespace: str) -> Locations:
    """Locations read through the operator's Kube client; Secrets only from ``namespace``
    (the operator's own)."""

    async def read_secret(name: str) -> Mapping[str, str] | None:
        result: Mapping[str, str] | None = await kube.read_secret(namespace, name)
        return result

    return Locations(
        kube.get_storage_location, kube.list_storage_locations, read_secret,
        kube.namespace_labels,
    )
