"""The kubelet backend: the kubelet checkpoint API, then the archive the kubelet wrote.

``POST https://NODE:10250/checkpoint/{namespace}/{pod}/{container}`` with a bearer token of an
identity allowed ``nodes/checkpoint``; the kubelet (through the CRI runtime) dumps the container
with CRIU, leaves it running, and answers ``{"items": ["<path of the .tar>"]}``: an
uncompressed tar, mode 0600, under ``/var/lib/kubelet/checkpoints/`` on the node,
which the agent reads through its host mount. Its CRIU images sit under ``checkpoint/``; the
ckpt-runc wrapper restores them with runc, as the archive records.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from urllib.parse import quote

import httpx

from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerRef,
    ContainerRuntimeError,
    DumpedContainer,
    ResolvedContainer,
    Runtime,
)

log = logging.getLogger(__name__)

SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
SA_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


class KubeletRuntime(Runtime):
    """Checkpoints through the kubelet; its archives name ``restore_runtime`` (runc) as the
    runtime that restores their images."""

    name = "kubelet"
    # The kubelet checkpoints one container per call, each paused only during its own dump.
    consistent_cut = False

    def __init__(
        self,
        url: str = "https://127.0.0.1:10250",
        *,
        token: str | None = None,
        token_file: Path = SA_TOKEN,
        verify: ssl.SSLContext | str | bool = True,
        timeout_s: float = 1800,
        restore_runtime: Runtime | None = None,
        checkpoints_dir: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.token_file = token_file
        self.verify = verify
        self.timeout_s = timeout_s
        self.restore_runtime = restore_runtime
        # Where the kubelet's paths are visible to the agent if mounted elsewhere
        # (None: the paths as the kubelet reports them).
        self.checkpoints_dir = checkpoints_dir

    def _token_value(self) -> str:
        # Re-read every call: projected ServiceAccount tokens rotate.
        if self._token is not None:
            return self._token
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise ContainerRuntimeError(f"no token for the kubelet: {exc}") from exc

    async def resolve(self, ref: ContainerRef) -> ResolvedContainer:
        if not (ref.namespace and ref.pod and ref.name):
            raise ContainerNotFound("the kubelet backend needs namespace, pod and container")
        # The kubelet API names containers, not processes: no pid is visible from here.
        return ResolvedContainer(ref=ref, pid=None, extra={"kubelet": self.url})

    async def dump(
        self, container: ResolvedContainer, work_dir: Path, *, leave_running: bool
    ) -> DumpedContainer:
        if not leave_running:
            raise ContainerRuntimeError(
                "the kubelet checkpoint API always leaves the container running; "
                "use the runc backend for leave_running=false"
            )
        ref = container.ref
        path = "/".join(quote(p, safe="") for p in (ref.namespace, ref.pod, ref.name))
        url = f"{self.url}/checkpoint/{path}"
        headers = {"Authorization": f"Bearer {self._token_value()}"}
        try:
            async with httpx.AsyncClient(verify=self.verify, timeout=self.timeout_s) as client:
                resp = await client.post(
                    url, headers=headers, params={"timeout": int(self.timeout_s)}
                )
        except httpx.HTTPError as exc:
            log.error("kubelet checkpoint %s: %r", url, exc)
            raise ContainerRuntimeError(
                f"the kubelet's checkpoint API is unreachable: {exc!r}"
            ) from exc
        if resp.status_code == 404:
            raise ContainerNotFound(f"kubelet: {ref.namespace}/{ref.pod}/{ref.name} not found")
        if resp.status_code != 200:
            # The kubelet's answer carries CRIU's messages and host paths: log them only.
            log.error("kubelet checkpoint %s: HTTP %s: %s", url, resp.status_code,
                      resp.text[:2000])
            raise ContainerRuntimeError(
                f"the kubelet refused the checkpoint of {ref.namespace}/{ref.pod}/{ref.name} "
                f"(HTTP {resp.status_code}); the node agent's log has its answer"
            )
        try:
            items = resp.json()["items"]
            reported = Path(items[0])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ContainerRuntimeError(
                f"kubelet checkpoint: unexpected answer {resp.text[:200]!r}"
            ) from exc
        tar = self.checkpoints_dir / reported.name if self.checkpoints_dir else reported
        if not tar.is_file():
            log.error("kubelet reported %s, but %s is not readable here", reported, tar)
            raise ContainerRuntimeError(
                "the kubelet's checkpoint archive is not readable by the agent"
            )
        return DumpedContainer(
            container=container,
            source_tar=tar,
            delete_source_after=True,
            images_subdir="checkpoint",
            restore_runtime=self.restore_runtime.name if self.restore_runtime else None,
        )
