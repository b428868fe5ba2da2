"""Restoring a Ready checkpoint through the agent on its node."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ckpt.agent.models import JobState, RestoreJob, RestoreRequest
from ckpt.operator.agents import agent_from_pod
from ckpt.user.resources import Checkpoints, UserError


def agent_url(checkpoints: Checkpoints, status: dict[str, Any], default_port: int = 8443) -> str:
    """The address of the agent that holds the archive (from the checkpoint's status)."""
    ref = status.get("agent") or ""
    namespace, _, name = ref.partition("/")
    if not name:
        raise UserError("the checkpoint names no agent; is it Ready?")
    agent = agent_from_pod(
        checkpoints.pod(namespace, name), kind_label="ckpt.dev/agent-kind",
        default_port=default_port,
    )
    if agent is None:
        raise UserError(f"agent pod {ref} has no IP; is it running? (or pass --agent-url)")
    return agent.base_url()


def restore(
    url: str, token: str, request: RestoreRequest, *, timeout: float = 600
) -> RestoreJob:
    """Starts the restore (idempotent by container id) and waits for it to finish."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        try:
            response = http.post("/v1/restores", json=request.model_dump(mode="json"))
            deadline = time.monotonic() + timeout
            while response.status_code < 400:
                job = RestoreJob.model_validate_json(response.content)
                if job.state is not JobState.running:
                    return job
                if time.monotonic() > deadline:
                    raise UserError(f"restore still running at the deadline (phase {job.phase})")
                # A long poll: the agent answers when the phase moves on.
                response = http.get(
                    f"/v1/restores/{request.container_id}",
                    params={"wait": 10, "phase": job.phase},
                )
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the agent at {url}: {exc}") from exc
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text
    raise UserError(f"the agent refused the restore ({response.status_code}): {message}")
