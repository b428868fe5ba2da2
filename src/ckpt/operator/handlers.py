"""kopf handlers: decorators only. Each one delegates to plain code in this package."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import kopf

from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION, CheckpointSpec, CheckpointStatus
from ckpt.apis.policy import POLICY_PLURAL
from ckpt.apis.restore import RESTORE_PLURAL
from ckpt.errors import ServiceError
from ckpt.operator import binding, locations, reconcile, retention
from ckpt.operator.agents import AgentIndex, AgentPod
from ckpt.operator.kube import load_api_client
from ckpt.operator.policy import PolicyRunner
from ckpt.operator.policy_kube import PolicyKube
from ckpt.operator.read_tokens import KubeSecrets, ReadTokens
from ckpt.operator.restore import TERMINAL as RESTORE_TERMINAL
from ckpt.operator.restore_clients import restorer
from ckpt.operator.runtime import (
    Clients,
    KopfReporter,
    build_clients,
    configure_kopf,
    serve_metrics,
    start_agent_index,
)
from ckpt.operator.settings import OperatorSettings

CONFIG = OperatorSettings()
CHECKPOINTS = (GROUP, VERSION, PLURAL)
RESTORES = (GROUP, VERSION, RESTORE_PLURAL)
POLICIES = (GROUP, VERSION, POLICY_PLURAL)


def _active(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in {p.value for p in reconcile.TERMINAL}


def _ready(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == "Ready"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings, CONFIG)
    memo.clients = build_clients(CONFIG)
    memo.read_tokens = ReadTokens(
        memo.clients.api, KubeSecrets(load_api_client()),
        skip=frozenset({CONFIG.agent_namespace}),
    )
    memo.agent_index = start_agent_index(CONFIG)
    memo.policies = PolicyKube(load_api_client())
    serve_metrics(CONFIG)


@kopf.on.startup()
async def adopt_namespace_records(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Moves the records that operators before namespace tenants kept in this token's tenant
    to their namespaces' tenants, before any Checkpoint is handled (idempotent)."""
    clients: Clients | None = getattr(memo, "clients", None)
    if clients is None:
        raise kopf.TemporaryError("the clients are not built yet", delay=1)
    try:
        adopted = await clients.api.adopt_namespace_records()
    except ServiceError as exc:
        raise kopf.TemporaryError(
            f"the checkpoints API refused or missed the move of old records ({exc}); is "
            "CKPT_OPERATOR_API_TOKEN an operator token (ckpt api token create --role "
            "operator)?",
            delay=30,
        ) from exc
    if adopted.moved:
        logger.info("moved %d API record(s) to their namespaces' tenants", adopted.moved)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.clients.aclose()
    index: AgentIndex = memo.agent_index
    index.stop()


def _read_tokens(memo: kopf.Memo) -> ReadTokens:
    tokens: ReadTokens = memo.read_tokens
    return tokens


def checkpoint_resource(body: kopf.Body) -> reconcile.Resource:
    """What the Checkpoint flow needs of the resource, its spec read with the apiserver's rules."""
    meta = body.meta
    return reconcile.Resource(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        created=dt.datetime.fromisoformat(str(meta.creation_timestamp).replace("Z", "+00:00")),
        spec=CheckpointSpec.from_resource(body.spec),
        generation=meta.get("generation"),
    )


@kopf.daemon(*CHECKPOINTS, when=_active, cancellation_timeout=5.0)
async def checkpoint(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any,
) -> None:
    clients: Clients = memo.clients
    index: AgentIndex = memo.agent_index
    namespace = body.meta.namespace or ""
    await _read_tokens(memo).ensure_quietly(namespace)
    deps = reconcile.Dependencies(
        api=clients.api.for_tenant(namespace),
        agents=clients.agents,
        get_pod=clients.kube.get_pod,
        agent_pods=index.agents,
        poll_interval=CONFIG.poll_interval,
        locations=clients.locations,
    )
    current = CheckpointStatus.model_validate(dict(status))
    await reconcile.Checkpointer(
        deps, checkpoint_resource(body), current, KopfReporter(clients.kube, body, PLURAL)
    ).run()


@kopf.timer(*CHECKPOINTS, when=_ready, interval=CONFIG.sync_interval, idle=CONFIG.sync_interval)
async def sync(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    clients: Clients = memo.clients
    namespace = body.meta.namespace or ""
    await _read_tokens(memo).ensure_quietly(namespace)
    current = CheckpointStatus.model_validate(dict(status))
    api_status = await reconcile.sync_api_status(clients.api.for_tenant(namespace), current)
    if api_status and api_status != current.api_status:
        current.api_status = api_status
        await KopfReporter(clients.kube, body, PLURAL).save(current)


@kopf.on.delete(*CHECKPOINTS, retries=6, backoff=5)
async def release(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, **_: Any,
) -> None:
    clients: Clients = memo.clients
    index: AgentIndex = memo.agent_index
    done = await _release(clients, body, status, index.agents())
    if done:
        kopf.info(body, reason="Released", message="; ".join(done))


async def _release(
    clients: Clients, body: kopf.Body, status: kopf.Status, agents: Iterable[AgentPod]
) -> list[str]:
    resource = checkpoint_resource(body)
    try:
        return await retention.release(
            resource,
            CheckpointStatus.model_validate(dict(status)),
            clients.api.for_tenant(resource.namespace), clients.agents, agents,
            locations=clients.locations,
        )
    except retention.RetentionError as exc:
        raise kopf.TemporaryError(str(exc), delay=10) from exc
    except binding.NotBound as exc:
        # Final: the status names what the operator never bound to this Checkpoint. Nothing
        # was deprecated or deleted; the Checkpoint goes, and the Event says why.
        kopf.warn(body, reason=exc.reason, message=exc.message)
        return []


@kopf.timer(
    "ckpt.dev", "v1alpha1", "storagelocations",
    interval=CONFIG.sync_interval, initial_delay=1.0, idle=None,
)
async def storage_location_available(
    name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    """Checks each StorageLocation periodically (Available condition, lastChecked)."""
    clients: Clients = memo.clients
    checked = await locations.check(clients.locations, name, spec, meta.get("generation"))
    result = locations.merge_condition(dict(status), checked)
    await clients.kube.patch_storage_location_status(
        name, result.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


# -- Restore ------------------------------------------------------------------------------------


def _restore_active(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in {p.value for p in RESTORE_TERMINAL}


def _restore_staged(status: kopf.Status, **_: Any) -> bool:
    # Over, but the agent still holds the staged files (it was away when the flow ended).
    return not _restore_active(status) and bool(status.get("staged"))


@kopf.daemon(*RESTORES, when=_restore_active, cancellation_timeout=5.0)
async def restore(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    index: AgentIndex = memo.agent_index
    await restorer(memo.clients, index.agents, body, CONFIG.poll_interval).run()


@kopf.timer(*RESTORES, when=_restore_staged, interval=CONFIG.sync_interval)
async def restore_cleanup(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    index: AgentIndex = memo.agent_index
    await restorer(memo.clients, index.agents, body, CONFIG.poll_interval).cleanup()


@kopf.on.delete(*RESTORES, retries=3, backoff=5)
async def restore_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Removes the staged files; the restored Pod stays (it carries no ownerReference)."""
    index: AgentIndex = memo.agent_index
    if not await restorer(memo.clients, index.agents, body, CONFIG.poll_interval).cleanup():
        raise kopf.TemporaryError("the agent holding the staged files did not answer", delay=10)


# -- CheckpointPolicy ---------------------------------------------------------------------------


@kopf.daemon(*POLICIES, cancellation_timeout=5.0)
async def checkpoint_policy(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Periodic checkpoints and keep-last pruning of one policy, until it is deleted."""
    cluster: PolicyKube = memo.policies
    await PolicyRunner(cluster, body, operator_namespace=CONFIG.agent_namespace).run()
