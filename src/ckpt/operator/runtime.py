"""Wiring of the running operator: kopf settings and the long-lived clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import kopf
from pydantic import BaseModel

from ckpt.contract.agent_client import AgentClient
from ckpt.contract.checkpoints_client import CheckpointsClient
from ckpt.operator import locations
from ckpt.operator.agents import AgentIdentity, AgentIndex
from ckpt.operator.kube import Kube, load_api_client
from ckpt.operator.locations import Locations
from ckpt.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
PREFIX = "ckpt.dev"


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    # Progress and the last-handled spec live in our own annotations, not in status: status
    # belongs to the Checkpoint schema, and kopf's fields there would be pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # One replica (Deployment strategy Recreate); kopf peering is not leader election.
    settings.peering.standalone = True
    # Our Events say what happened; kopf's per-handler log lines would bury them.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "ckpt-operator"
    # Watches are re-established before intermediaries (load balancers) drop idle streams.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10


@dataclass
class Clients:
    """The long-lived clients every flow shares (one connection pool each)."""

    api: CheckpointsClient
    agents: AgentClient
    kube: Kube
    # StorageLocations (cluster-scoped) and their Secrets in the operator's namespace.
    locations: Locations

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.agents.aclose()


def build_clients(config: OperatorSettings) -> Clients:
    kube = Kube(load_api_client())
    return Clients(
        api=CheckpointsClient(
            config.api_url, config.api_token.get_secret_value(), ca_file=config.api_ca_file,
            server_name=config.api_server_name,
        ),
        agents=AgentClient(
            config.agent_token_file, scheme=config.agent_scheme, ca_file=config.agent_ca_file,
            server_name=config.agent_server_name,
        ),
        kube=kube,
        locations=locations.from_kube(kube, config.credentials_namespace),
    )


def start_agent_index(config: OperatorSettings) -> AgentIndex:
    """The agent pods of the operator's namespace only (not a kopf index: kopf would watch
    pods in every namespace, and need list/watch on all of them)."""
    index = AgentIndex(
        load_api_client(),
        AgentIdentity(
            namespace=config.agent_namespace,
            service_account=config.agent_service_account,
            cpu_daemonset=config.agent_daemonset,
            gpu_daemonset=config.agent_gpu_daemonset,
        ),
        selector=config.agent_selector,
        default_port=config.agent_port,
    )
    index.start()
    return index


def serve_metrics(config: OperatorSettings) -> None:
    from ckpt.contract.scrape_auth import KubeReviewer, ScrapeGuard
    from ckpt.operator.metrics_server import start_metrics_server, tls_context

    guard = (ScrapeGuard(KubeReviewer(load_api_client()))
             if config.metrics_auth == "kubernetes" else None)
    tls = (tls_context(config.metrics_tls_cert_file, config.metrics_tls_key_file)
           if config.metrics_tls_cert_file and config.metrics_tls_key_file else None)
    start_metrics_server(config.listen_host, config.metrics_port, guard=guard, tls=tls)


class KopfReporter:
    """A flow's `Reporter` for the resource in `body` (of `plural`): status through the status
    subresource, Events through kopf (which posts them in the background), and the same lines
    in the operator's log."""

    def __init__(self, kube: Kube, body: kopf.Body, plural: str) -> None:
        self._kube, self._body, self._plural = kube, body, plural

    async def save(self, status: BaseModel) -> None:
        meta = self._body.metadata
        await self._kube.patch_status(self._plural, meta.namespace or "", meta.name or "", status)

    def event(self, kind: str, reason: str, message: str) -> None:
        kopf.event(self._body, type=kind, reason=reason, message=message)
        meta = self._body.metadata
        level = logging.INFO if kind == "Normal" else logging.WARNING
        log.log(level, "%s/%s %s: %s", meta.namespace, meta.name, reason, message)
