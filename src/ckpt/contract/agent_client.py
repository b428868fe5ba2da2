"""Client of the node agent's v1 HTTP API, for the operator (and tests).

Error answers become the typed errors of `ckpt.errors`: `NotFound` (no such job or archive),
`Conflict` (the same key with another request, or a job still running), `Rejected` (other 4xx:
an invalid request or a refused token) and `Unavailable` (5xx, or no answer: retry later).
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any, Protocol

import httpx

from ckpt.apis.storagelocation import REVEAL_SECRETS
from ckpt.contract.agent import CheckpointJob, CheckpointRequest, StageJob, StageRequest
from ckpt.errors import NotFound, Unavailable, error_for

__all__ = ["AgentAddress", "AgentClient"]


class AgentAddress(Protocol):
    """Where one agent listens; the operator's `AgentPod` is one."""

    @property
    def ref(self) -> str: ...

    def base_url(self, scheme: str = "http") -> str: ...


class AgentClient:
    """Calls agents' v1 API with the operator's projected token (audience `ckpt-agent`)."""

    def __init__(
        self,
        token_file: Path,
        *,
        scheme: str = "https",
        ca_file: Path | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._token_file = token_file
        self._scheme = scheme
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        # Agents are called at their pod IPs, which their certificate cannot name (they
        # change with every pod): the certificate names the agents' service identity, and
        # the handshake checks that name (SNI and hostname verification) instead.
        self._extensions = {"sni_hostname": server_name} if server_name else None
        # Agents run a couple of jobs each; a small pool bounds sockets and the per-request
        # scan of pooled connections when hundreds of checkpoints are followed at once.
        self._http = httpx.AsyncClient(
            timeout=timeout, verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, agent: AgentAddress, path: str, body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        # Read per call: kubelet rotates projected ServiceAccount tokens in place.
        token = self._token_file.read_text().strip()
        try:
            response = await self._http.request(
                method, agent.base_url(self._scheme) + path, json=body, params=params,
                headers={"Authorization": f"Bearer {token}"}, extensions=self._extensions,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"agent {agent.ref} unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            message, code = _message(response)
            raise error_for(
                response.status_code,
                f"agent {agent.ref} answered {response.status_code}: {message}",
                code=code,
            )
        return response

    async def start_checkpoint(
        self, agent: AgentAddress, request: CheckpointRequest
    ) -> CheckpointJob:
        """Starts the job, or answers the job already there for this checkpoint id."""
        response = await self._call(
            "POST", agent, "/v1/checkpoints",
            request.model_dump(mode="json", context={REVEAL_SECRETS: True}),
        )
        return CheckpointJob.model_validate_json(response.content)

    async def checkpoint_job(
        self, agent: AgentAddress, checkpoint_id: str, *, wait: float = 0,
        phase: str | None = None,
    ) -> CheckpointJob:
        """The job; with `wait`, the agent answers once its phase is no longer `phase`."""
        params = {"wait": wait, "phase": phase} if wait and phase is not None else None
        response = await self._call(
            "GET", agent, f"/v1/checkpoints/{checkpoint_id}", params=params
        )
        return CheckpointJob.model_validate_json(response.content)

    async def cancel_checkpoint(self, agent: AgentAddress, checkpoint_id: str) -> None:
        """Stops a running job (the agent thaws its containers and removes partial files)."""
        await self._call("DELETE", agent, f"/v1/checkpoints/{checkpoint_id}")

    async def delete_archive(self, agent: AgentAddress, checkpoint_id: str) -> None:
        """Deletes the archive the agent's job `checkpoint_id` stored. A 404 is raised with
        the agent's code, which the caller must tell apart: `gone` (the job is known, its
        archive is not there), `not_found` (this agent does not know the job: another agent
        pod wrote it, or its record expired), `no_archive` (the job stored none)."""
        await self._call("DELETE", agent, f"/v1/archives/{checkpoint_id}")

    # -- staging a Restore's archive (`/v1/restores`) ---------------------------------------

    async def start_staging(self, agent: AgentAddress, request: StageRequest) -> StageJob:
        """Starts staging, or answers the job already there for this restore id."""
        response = await self._call(
            "POST", agent, "/v1/restores",
            request.model_dump(mode="json", context={REVEAL_SECRETS: True}),
        )
        return StageJob.model_validate_json(response.content)

    async def staging_job(
        self, agent: AgentAddress, restore_id: str, *, wait: float = 0,
        phase: str | None = None,
    ) -> StageJob:
        """The staging job; with `wait`, answered once its phase is no longer `phase`."""
        params = {"wait": wait, "phase": phase} if wait and phase is not None else None
        response = await self._call("GET", agent, f"/v1/restores/{restore_id}", params=params)
        return StageJob.model_validate_json(response.content)

    async def delete_staging(self, agent: AgentAddress, restore_id: str) -> None:
        # Already gone is what we wanted.
        with contextlib.suppress(NotFound):
            await self._call("DELETE", agent, f"/v1/restores/{restore_id}")


def _message(response: httpx.Response) -> tuple[str, str | int | None]:
    try:
        body = response.json()
        return str(body.get("message", response.text))[:500], body.get("code")
    except (ValueError, AttributeError):
        return response.text[:500], None
