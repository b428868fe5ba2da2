"""Credentials as deploy/ gives them to ckpt's parts, for processes the harness runs outside
a kubelet: the operator's agent-audience token and the agents' serving certificate."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from kubernetes import client

from ckpt.agent.settings import AGENT_AUDIENCE
from harness.controlplane import Cluster

# The name the operator checks in the agents' certificate (CKPT_OPERATOR_AGENT_SERVER_NAME).
AGENT_SERVER_NAME = "ckpt-agent.ckpt-system.svc"


def token_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    audiences: Sequence[str] = (AGENT_AUDIENCE,),
    expiration_seconds: int = 3600,
) -> str:
    """A TokenRequest for `namespace/name` bound to `audiences`: what the projected volume of
    deploy/base/operator.yaml mounts (the ServiceAccount must exist)."""
    with cluster.api_client() as api:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=list(audiences), expiration_seconds=expiration_seconds
            )
        )
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(
            name, namespace, request
        )
        if answer.status is None:
            raise RuntimeError(f"no token issued for {namespace}/{name}")
        return str(answer.status.token)


def agent_certificate(directory: Path, names: Sequence[str] = (AGENT_SERVER_NAME,)) -> tuple[
    Path, Path
]:
    """A self-signed serving certificate and key for the agents, as the install's openssl
    command makes the Secret ckpt-agent-tls (README, Install)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "agent-tls.crt", directory / "agent-tls.key"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=ckpt-agent", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    key.chmod(0o600)
    return cert, key
