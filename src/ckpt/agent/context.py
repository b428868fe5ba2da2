"""Builds the pipeline's context (runtimes, store, CRIU, GPU) from the agent's settings."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import time
from dataclasses import replace
from pathlib import Path

from ckpt.agent import cgroups, proc
from ckpt.agent.criu import find_criu, kernel_features
from ckpt.agent.gpu import GpuDriver
from ckpt.agent.pipeline import PipelineContext
from ckpt.agent.runtimes.base import ContainerRef, ContainerRuntimeError, Runtime
from ckpt.agent.runtimes.kubelet import SA_CA, KubeletRuntime
from ckpt.agent.runtimes.process import ProcessRuntime
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.settings import AgentSettings
from ckpt.agent.store import FileStore, open_store
from ckpt.contract.agent import CheckpointRequest

log = logging.getLogger(__name__)


def build_context(settings: AgentSettings) -> PipelineContext:
    """Everything a job needs; fails at start-up (not at the first job) without a CRIU >= 4.2."""
    found = find_criu(settings.criu_binary)
    criu = replace(found, features=kernel_features(found.path))
    runc = RuncRuntime(
        settings.runc_root,
        runc=settings.runc_binary,
        criu=criu.path,
        timeout_s=settings.job_timeout_seconds,
    )
    # Only the configured backend (and runc, which restores every archive, the kubelet's
    # included): an archive's metadata names the runtime it was dumped with, and the
    # `process` backend (CRIU on a bare host process tree, as root) must never be chosen by
    # an archive on an agent not configured for it.
    runtimes: dict[str, Runtime] = {"runc": runc}
    if settings.runtime == "process":
        runtimes["process"] = ProcessRuntime(criu.path, timeout_s=settings.job_timeout_seconds)
    if settings.runtime == "kubelet":
        runtimes["kubelet"] = KubeletRuntime(
            settings.kubelet_url,
            verify=kubelet_verify(settings),
            timeout_s=settings.job_timeout_seconds,
            restore_runtime=runc,
        )
    store = open_store(settings.store)
    if isinstance(store, FileStore):
        # Temporary files of dumps that a crashed agent never finished. The store may be a
        # volume other agents write to as well: only files idle for longer than any job may
        # run are certainly abandoned.
        removed = store.clean_partials(older_than_s=settings.job_timeout_seconds)
        if removed:
            log.warning("removed %d partial archive(s) left by an interrupted agent", removed)
    _clean_work_dir(settings.work_dir)
    return PipelineContext(
        runtimes=runtimes,
        default_runtime=settings.runtime,
        store=store,
        work_dir=settings.work_dir,
        node_name=settings.node_name,
        criu=criu,
        gpu=GpuDriver.load(),
        zstd_level=settings.zstd_level,
        zstd_threads=settings.zstd_threads,
        capture_max_bytes=settings.capture_max_bytes,
    )


def kubelet_verify(settings: AgentSettings) -> ssl.SSLContext | bool:
    """How the kubelet's serving certificate is checked: the configured CA, else the cluster
    CA of the ServiceAccount mount (kubeadm-style clusters sign kubelet serving certs with
    it), else the system CAs. The agent's token goes with every call, so never unverified
    unless explicitly asked."""
    if settings.kubelet_insecure_skip_verify:
        log.warning("the kubelet's certificate is not verified (kubelet_insecure_skip_verify)")
        return False
    ca = settings.kubelet_ca_file
    if ca is None and SA_CA.is_file():
        ca = SA_CA
    return ssl.create_default_context(cafile=str(ca)) if ca is not None else True


def _clean_work_dir(work_dir: Path) -> None:
    """Remove the CRIU image folders of jobs a killed agent left behind (often GiBs).

    The work dir is this agent's own scratch space and no job runs before start-up ends.
    """
    if not work_dir.is_dir():
        return
    for entry in work_dir.iterdir():
        if entry.is_dir() and entry.name.startswith(("ckpt-", "restore-")):
            log.warning("removing %s left by an interrupted job", entry.name)
            shutil.rmtree(entry, ignore_errors=True)


async def thaw_interrupted(
    ctx: PipelineContext, requests: list[CheckpointRequest], *, straggler_wait_s: float = 600
) -> None:
    """Resume containers that an agent killed mid-dump left frozen.

    runc and CRIU run in sessions of their own, so a dump may outlive the agent process that
    started it (a crash of the agent alone, not of its pod). Such a dump is left to finish,
    never killed (see `proc.run`), and the container is thawed after it.

    The dead agent paused them for a consistent cut and never got to resume them; a paused
    container of an interrupted job is taken to be ours. CRIU killed while it was freezing
    leaves a half-frozen cgroup that runc reports as running: that freezer is thawed
    directly (see `cgroups`). Failures are logged, not raised: start-up must not depend on
    containers that may be gone.
    """
    runtime = ctx.runtime
    for request in requests:
        for target in request.containers:
            ref = ContainerRef(
                target.name, target.container_id, request.namespace, request.pod,
                request.pod_uid,
            )
            try:
                await _wait_for_stragglers(target.container_id, straggler_wait_s)
                container = await runtime.resolve(ref)
                if container.extra.get("status") == "paused":
                    container.extra["paused_by_ckpt"] = True
                    await runtime.thaw(container)
                elif not _thaw_half_frozen(container.pid):
                    continue
                log.warning(
                    "resumed container %s left frozen by interrupted job %s",
                    target.container_id, request.checkpoint_id,
                )
            except (ContainerRuntimeError, OSError) as exc:
                log.info("container %s of job %s: %s", target.container_id,
                         request.checkpoint_id, exc)


async def _wait_for_stragglers(container_id: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while pids := proc.processes_running("checkpoint", container_id):
        if time.monotonic() > deadline:
            log.error("dump of %s by %s still running; thawing anyway", container_id, pids)
            return
        log.warning("waiting for the dump of %s left by the previous agent (%s)",
                    container_id, pids)
        await asyncio.sleep(0.5)


def _thaw_half_frozen(pid: int | None) -> bool:
    freezer = cgroups.freezer_file(pid) if pid else None
    if freezer is None or not cgroups.is_frozen(freezer):
        return False
    cgroups.thaw(freezer)
    return True
