"""The node agent's HTTP service (API v1): checkpoint jobs, the staging of restores, info,
health, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ckpt.agent import pipeline
from ckpt.agent.auth import Authenticator, AuthFirst, TokenReviewer, api_client
from ckpt.agent.context import build_context, thaw_interrupted
from ckpt.agent.errors import AgentError, ErrorBody
from ckpt.agent.gpu import GpuError
from ckpt.agent.gpu_restore import GpuRestoreServer
from ckpt.agent.jobs import CANCELLED, JobManager
from ckpt.agent.metrics import AgentMetrics
from ckpt.agent.platform import platform_string
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.settings import AgentSettings
from ckpt.agent.staging import StagingCaps, Stagings
from ckpt.agent.store import store_for_location
from ckpt.contract.agent import (
    AgentInfo,
    CheckpointJob,
    CheckpointRequest,
    CheckpointResult,
    GpuMode,
    JobState,
    StageJob,
    StageRequest,
)
from ckpt.errors import error_response

log = logging.getLogger(__name__)

ContextFactory = Callable[[AgentSettings], pipeline.PipelineContext]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or invalid bearer token"},
    403: {"model": ErrorBody, "description": "The token's identity may not call the agent"},
    413: {"model": ErrorBody, "description": "Request body over CKPT_AGENT_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "Invalid request (the message names the field)"},
    503: {"model": ErrorBody, "description": "The apiserver could not verify the token"},
}


@dataclass
class Agent:
    """What the routes need, created at start-up and kept on ``app.state.agent``."""

    settings: AgentSettings
    ctx: pipeline.PipelineContext
    jobs: JobManager
    auth: Authenticator
    metrics: AgentMetrics


def _agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent


def caller(request: Request) -> str:
    """The identity `AuthFirst` authenticated; every route but /healthz has one."""
    name = request.scope.get("state", {}).get("caller")
    if not name:
        # Unreachable while AuthFirst wraps the app; refuse rather than serve anonymously.
        raise AgentError(401, "unauthenticated", "missing Authorization: Bearer token")
    return str(name)


AgentDep = Annotated[Agent, Depends(_agent)]

v1 = APIRouter(prefix="/v1", dependencies=[Depends(caller)], responses=_ERRORS)


def _refuse_gpu_required(mode: GpuMode, ctx: pipeline.PipelineContext) -> None:
    # Refused up front rather than as a failed job: no job on this node could ever succeed.
    if mode == GpuMode.required and not ctx.gpu.available():
        raise AgentError(
            422,
            "gpu_unavailable",
            "gpu: required, but this node cannot checkpoint GPU state: "
            f"{ctx.gpu.unavailable_reason()}",
        )


@v1.post("/checkpoints", status_code=202, response_model=CheckpointJob)
async def create_checkpoint(body: CheckpointRequest, agent: AgentDep) -> CheckpointJob:
    """Start a checkpoint job; the same checkpoint_id again answers the same job."""
    if body.checkpoint_id not in agent.jobs.checkpoints.entries:
        _refuse_gpu_required(body.gpu, agent.ctx)
    return agent.jobs.checkpoints.submit(body)


Wait = Annotated[
    float, Query(ge=0, le=60, description="Long poll: answer when the phase differs from `phase`")
]


@v1.get("/checkpoints/{checkpoint_id}", response_model=CheckpointJob)
async def get_checkpoint(
    checkpoint_id: str, agent: AgentDep, wait: Wait = 0, phase: str | None = None
) -> CheckpointJob:
    return await agent.jobs.checkpoints.watch(checkpoint_id, phase, wait)


@v1.delete("/checkpoints/{checkpoint_id}", response_model=CheckpointJob)
async def cancel_checkpoint(checkpoint_id: str, agent: AgentDep) -> CheckpointJob:
    """Cancel a queued or running job (containers are thawed, partial files removed)."""
    return await agent.jobs.checkpoints.cancel(checkpoint_id, CANCELLED)


@v1.delete("/archives/{checkpoint_id}", status_code=204)
async def delete_archive(checkpoint_id: str, agent: AgentDep) -> Response:
    """Delete the archive a finished checkpoint job stored (`retainPolicy: Delete`).

    Only archives this agent's own jobs wrote can be deleted, so a caller cannot name an
    arbitrary path on the node.
    """
    job = agent.jobs.checkpoints.get(checkpoint_id)
    if job.state is JobState.running:
        raise AgentError(409, "running", f"checkpoint {checkpoint_id} is still running")
    if job.result is None:
        raise AgentError(404, "no_archive", f"checkpoint {checkpoint_id} stored no archive")
    location = job.result.restore_path
    deleted = await asyncio.to_thread(store_for_location(location).delete, location)
    if not deleted:
        raise AgentError(404, "gone", f"archive {location} does not exist (already deleted?)")
    log.info("deleted archive %s of checkpoint %s", location, checkpoint_id)
    return Response(status_code=204)


def _stagings(request: Request) -> Stagings:
    stagings: Stagings = request.app.state.stagings
    return stagings


StagingsDep = Annotated[Stagings, Depends(_stagings)]


@v1.post("/restores", status_code=202, response_model=StageJob)
async def create_restore(body: StageRequest, stagings: StagingsDep) -> StageJob:
    """Stage a checkpoint for a Restore: fetch, verify, extract into the folder the
    ckpt-runc wrapper reads; the same restore_id again answers the same job."""
    return stagings.submit(body)


@v1.get("/restores/{restore_id}", response_model=StageJob)
async def get_restore(
    restore_id: str, stagings: StagingsDep, wait: Wait = 0, phase: str | None = None
) -> StageJob:
    return await stagings.watch(restore_id, phase, wait)


@v1.delete("/restores/{restore_id}", status_code=204)
async def cancel_restore(restore_id: str, stagings: StagingsDep) -> Response:
    """Stop a staging and remove its files (404 when nothing was there)."""
    if not await stagings.remove(restore_id):
        raise AgentError(404, "not_found", f"no restore {restore_id!r} on this node")
    return Response(status_code=204)


@v1.get("/info", response_model=AgentInfo)
async def info(agent: AgentDep) -> AgentInfo:
    gpu = agent.ctx.gpu
    try:
        models = gpu.models()
        driver = gpu.driver_version()
    except GpuError as exc:
        # No GPU (or no driver) is a normal node; /v1/info says so instead of failing.
        log.debug("no GPU facts: %s", exc)
        models, driver = [], None
    return AgentInfo(
        node=agent.settings.node_name,
        runtimes=sorted(agent.ctx.runtimes),
        criu_version=agent.ctx.criu.version,
        criu_features=agent.ctx.criu.features,
        gpus=models,
        driver_version=driver,
        cuda_checkpoint=gpu.available(),
        platform=platform_string(),
    )


def _metrics_route(app: FastAPI) -> None:
    # Authenticated like the API (AuthFirst): the job counters and names of a privileged
    # agent are nobody else's business, and its port admits only the operator anyway.
    @app.get("/metrics", dependencies=[Depends(caller)], responses=_ERRORS)
    async def metrics(agent: AgentDep) -> Response:
        return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return error_response(status, message, code, jsonable_encoder(details))


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "containers", 0, "container_id") -> "containers[0].container_id"
    parts = [p for p in loc if p not in ("body", "path", "query", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AgentError)
    async def agent_error(_: Request, exc: AgentError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The submitted values are left out: they may be large, and echoing them is pointless.
        details = [
            {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", ""),
             "type": e.get("type", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return _error(422, "validation_error", f"invalid request: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal", "internal error in the node agent (see its log)")


def create_app(
    settings: AgentSettings, context_factory: ContextFactory = build_context
) -> FastAPI:
    """The agent's ASGI app; its resources start and stop with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context_factory(settings)
        metrics = AgentMetrics()
        metrics.describe_criu(ctx.criu.version, ctx.criu.features)

        async def checkpoint(
            req: CheckpointRequest, progress: pipeline.ProgressFn
        ) -> CheckpointResult:
            return await pipeline.run_checkpoint(req, ctx, progress)

        jobs = JobManager(
            settings.state_dir,
            max_concurrent=settings.max_concurrent_jobs,
            timeout_seconds=settings.job_timeout_seconds,
            run_checkpoint=checkpoint,
            metrics=metrics,
            retention=timedelta(hours=settings.job_retention_hours),
        )
        await thaw_interrupted(ctx, jobs.load())
        kube = api_client(settings.kubeconfig)
        auth = Authenticator(
            TokenReviewer(kube, settings.token_audiences),
            settings.allowed_identities,
            settings.auth_cache_seconds,
            metrics_only=settings.metrics_identities,
        )
        app.state.agent = Agent(settings, ctx, jobs, auth, metrics)
        app.state.stagings = Stagings(
            settings.restores_dir, jobs.slots, archive_root=ctx.store.root, metrics=metrics,
            caps=StagingCaps(settings.staging_max_bytes, settings.staging_reserve_bytes),
        )
        gpu_restores = None
        if settings.gpu_restore_socket is not None:
            # The wrapper restores through runc under containerd's state root: the runc
            # backend's records are what the request is checked against.
            runc = ctx.runtimes.get("runc")
            if not isinstance(runc, RuncRuntime):
                raise RuntimeError("CKPT_AGENT_GPU_RESTORE_SOCKET needs the runc backend")
            gpu_restores = GpuRestoreServer(
                settings.gpu_restore_socket, restores_dir=settings.restores_dir,
                runc_state=runc.state, gpu=ctx.gpu,
            )
            await gpu_restores.start()
        log.info(
            "node agent for %s: runtimes %s, CRIU %s (%s), GPU %s",
            settings.node_name, ", ".join(sorted(ctx.runtimes)), ctx.criu.version,
            ", ".join(f"{name} {'yes' if ok else 'no'}"
                      for name, ok in ctx.criu.features.items()) or "kernel not probed",
            "available" if ctx.gpu.available() else "unavailable",
        )
        try:
            yield
        finally:
            if gpu_restores is not None:
                await gpu_restores.stop()
            await app.state.stagings.shutdown()
            await jobs.shutdown()
            kube.close()

    # No unauthenticated docs: every route but /healthz needs the operator's token, the
    # OpenAPI document included (served under /v1).
    app = FastAPI(
        title="ckpt node agent",
        version="1",
        lifespan=lifespan,
        description="Checkpoints and restores this node's containers with CRIU.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _install_error_handlers(app)
    app.include_router(v1)
    _metrics_route(app)

    @app.get("/v1/openapi.json", dependencies=[Depends(caller)], include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    # Outermost of the app's own layers: no route, parser or validator sees a request
    # before its caller is authenticated.
    app.add_middleware(
        AuthFirst,
        authenticator=lambda: _authenticator(app),
        max_body_bytes=settings.max_body_bytes,
    )
    return app


def _authenticator(app: FastAPI) -> Authenticator:
    agent: Agent = app.state.agent
    return agent.auth
