"""ckpt on the local cluster: its images loaded, `deploy/local` applied, its pods Ready.

The images come from tools/images/build.sh (buildah, from the project's Dockerfile), which
prints the folder holding `ckpt.tar` and `ckpt-agent.tar`, each named as `deploy/` names it.
The one manual step of deploy/README.md, the operator's token of the checkpoints API, is done
here the same way a user does it. Then the cluster's StorageLocations are made on its object
store (harness.cluster.object_store): `local-s3`, marked default, so archives reach every node
and a restore on another node works out of the box, and `node-local` (type file).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cluster.cluster import ClusterError, LocalKubeCluster
from harness.cluster.object_store import S3_LOCATION, storage_manifests
from harness.controlplane import Cluster
from harness.tools import REPO_ROOT, run_tool

NAMESPACE = "ckpt-system"
# Where StorageLocations' Secrets go (deploy/credentials): the only Secrets the operator reads.
CREDENTIALS_NAMESPACE = "ckpt-credentials"
OVERLAY = REPO_ROOT / "deploy" / "local"
IMAGE_ARCHIVES = ("ckpt.tar", "ckpt-agent.tar")
AGENT_TLS_SECRET = "ckpt-agent-tls"  # noqa: S105 - the name of a Secret, not a secret
# The serving certificates README's install steps make, by hand: Secret -> the name (CN) its
# self-signed certificate is for, as <name>.<namespace>.svc, the name its clients check.
SERVING_CERTIFICATES = {
    AGENT_TLS_SECRET: "ckpt-agent",
    "ckpt-api-tls": "ckpt-api",
    "ckpt-operator-tls": "ckpt-operator",
}
# The Secret holding the operator's API token, as deploy/README.md names it, and the
# annotation saying the harness made it an operator token (older Secrets hold a tenant token).
OPERATOR_API_SECRET = "ckpt-api-token"  # noqa: S105 - the name of a Secret, not a secret
OPERATOR_TOKEN_ROLE = "ckpt.dev/api-token-role"  # noqa: S105 - an annotation
# On the ckpt-system namespace: the image set (tools/images/build.sh's cache key) running now.
IMAGES_ANNOTATION = "ckpt.dev/local-images"
_KEY_PATH = IMAGES_ANNOTATION.replace(".", "\\.")


def ckpt_image_archives(folder: Path | None = None) -> list[Path]:
    """ckpt's OCI archives in `folder`, or built (or found cached) by tools/images/build.sh."""
    folder = folder or Path(run_tool("images/build.sh", timeout=3600))
    archives = [folder / name for name in IMAGE_ARCHIVES]
    missing = [str(a) for a in archives if not a.exists()]
    if missing:
        raise ClusterError(f"tools/images/build.sh printed {folder}, without {missing}")
    return archives


def deploy_ckpt(
    cluster: LocalKubeCluster,
    timeout: float = 600.0,
    log: Callable[[str], None] = lambda message: None,
    images: Path | None = None,
) -> None:
    """Loads the images (from the folder `images`, default: tools/images/build.sh's) into
    every node, applies deploy/local and waits until every ckpt pod is Ready.

    The images keep their tag (deploy/ names 0.1.0) when the sources change, so a kubelet
    never notices new contents by itself: when the loaded set differs from the one recorded
    on the namespace, every ckpt workload is restarted onto it."""
    archives = ckpt_image_archives(images)
    for archive in archives:
        log(f"loading {archive.name} into {', '.join(cluster.load_image(archive))}")
    kube = cluster.cluster()
    ensure_serving_certificates(kube, log)
    log("applying deploy/local")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(OVERLAY))
    # `apply` prunes nothing: an install from before the credentials namespace still grants
    # `get` on ckpt-system's Secrets (deploy/README.md, upgrading).
    kube.kubectl("-n", NAMESPACE, "delete", "role,rolebinding", "ckpt-operator-storage",
                 "--ignore-not-found")
    images_key = archives[0].parent.name
    recorded = kube.kubectl(
        "get", "namespace", NAMESPACE, "-o", f"jsonpath={{.metadata.annotations.{_KEY_PATH}}}"
    ).stdout.strip()
    if recorded and recorded != images_key:
        log(f"images changed ({recorded} -> {images_key}): restarting ckpt's workloads")
        kube.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment,daemonset")
        for kind in ("deployment", "daemonset"):
            names = kube.kubectl("-n", NAMESPACE, "get", kind, "-o", "name").stdout.split()
            for name in names:
                kube.kubectl("-n", NAMESPACE, "rollout", "status", name,
                             f"--timeout={int(timeout)}s")
    if recorded != images_key:
        kube.kubectl("annotate", "--overwrite", "namespace", NAMESPACE,
                     f"{IMAGES_ANNOTATION}={images_key}")
    kube.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/ckpt-api",
                 f"--timeout={int(timeout)}s")
    ensure_operator_token(kube, log, timeout)
    wait_pods_ready(cluster, NAMESPACE, timeout)
    ensure_storage_locations(cluster, log, timeout)


def ensure_operator_token(kube: Cluster, log: Callable[[str], None], timeout: float) -> None:
    """The operator's token of the checkpoints API, made as deploy/README.md makes it: an
    operator token of the tenant `local`. A Secret from before token roles holds a tenant
    token, which the operator can no longer use: it is replaced by an operator token of the
    same tenant (whose records the operator then moves to their namespaces), and the operator
    restarted onto it. The old token is revoked: users read their namespace's own now."""
    found = kube.kubectl("-n", NAMESPACE, "get", "secret", OPERATOR_API_SECRET, "-o", "json",
                         check=False)
    if found.returncode == 0:
        annotations = json.loads(found.stdout)["metadata"].get("annotations") or {}
        if annotations.get(OPERATOR_TOKEN_ROLE) == "operator":
            return
    log("creating the operator's API token (deploy/README.md)")
    token = kube.kubectl("-n", NAMESPACE, "exec", "deployment/ckpt-api", "--", "ckpt", "api",
                         "token", "create", "--tenant", "local", "--role", "operator").stdout
    secret = json.loads(kube.kubectl(
        "-n", NAMESPACE, "create", "secret", "generic", OPERATOR_API_SECRET,
        f"--from-literal=token={token.strip()}", "--dry-run=client", "-o", "json",
    ).stdout)
    secret["metadata"]["annotations"] = {OPERATOR_TOKEN_ROLE: "operator"}
    # Server-side: a client-side apply would copy the token into its last-applied annotation.
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                 input=json.dumps(secret))
    if found.returncode == 0:
        old = base64.b64decode(json.loads(found.stdout)["data"]["token"]).decode().strip()
        kube.kubectl("-n", NAMESPACE, "exec", "deployment/ckpt-api", "--", "ckpt", "api",
                     "token", "revoke", old, check=False)
        kube.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/ckpt-operator")
        kube.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/ckpt-operator",
                     f"--timeout={int(timeout)}s")


def ensure_storage_locations(cluster: LocalKubeCluster, log: Callable[[str], None],
                             timeout: float = 180.0) -> None:
    """The cluster's object store (started if a cluster older than it runs none), its keys in
    a Secret of ckpt's namespace, and the StorageLocations on it (object_store.
    storage_manifests), until the default one is Available. Server-side apply: a client-side
    apply would copy the Secret's keys into its last-applied annotation."""
    store = cluster.ensure_object_store(log)
    kube = cluster.cluster()
    log(f"storage locations: {S3_LOCATION} (default, {store.endpoint}) and node-local")
    manifests = storage_manifests(store, CREDENTIALS_NAMESPACE)
    (spec,) = [m["spec"] for m in manifests if m["metadata"]["name"] == S3_LOCATION]
    found = kube.kubectl("get", "storagelocation", S3_LOCATION, "-o", "json", check=False)
    old = (json.loads(found.stdout).get("spec") or {}) if found.returncode == 0 else {}
    # A changed location keeps its old status until the operator's next periodic check.
    unchanged = all(old.get(key) == value for key, value in spec.items())
    applied = None if unchanged else dt.datetime.now(dt.UTC)
    for manifest in manifests:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input=json.dumps(manifest))
    wait_location_available(kube, S3_LOCATION, timeout, since=applied)


def wait_location_available(kube: Cluster, location: str, timeout: float = 120.0,
                            since: dt.datetime | None = None) -> None:
    """Until the StorageLocation's status says Available from a check made at or after
    `since` (the operator checks a new location at once, a changed one at its next periodic
    check), failing with the last status seen."""
    deadline = time.monotonic() + timeout
    since = (since or dt.datetime.min.replace(tzinfo=dt.UTC)).replace(microsecond=0)
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        found = kube.kubectl("get", "storagelocation", location, "-o", "json", check=False)
        if found.returncode == 0:
            status = json.loads(found.stdout).get("status") or {}
            checked = str(status.get("lastChecked") or "")
            if status.get("phase") == "Available" and checked and \
                    dt.datetime.fromisoformat(checked) >= since:
                return
        time.sleep(1)
    raise ClusterError(f"StorageLocation {location} not Available after {timeout:.0f}s: "
                       f"{status}")


def ensure_serving_certificates(kube: Cluster, log: Callable[[str], None]) -> None:
    """The agents', the API's and the operator's metrics serving certificates, made as
    README's install steps make them: each one self-signed certificate for the name its
    clients check, in its Secret (SERVING_CERTIFICATES). An existing Secret is kept."""
    kube.ensure_namespace(NAMESPACE)
    for secret, name in SERVING_CERTIFICATES.items():
        if kube.kubectl("-n", NAMESPACE, "get", "secret", secret, check=False).returncode == 0:
            continue
        log(f"creating the serving certificate {secret} (README: Install on a cluster)")
        with tempfile.TemporaryDirectory(prefix=f"{secret}-") as folder:
            key, cert = Path(folder) / "tls.key", Path(folder) / "tls.crt"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "825", "-subj", f"/CN={name}",
                 "-addext", f"subjectAltName=DNS:{name}.{NAMESPACE}.svc",
                 "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )
            kube.kubectl("-n", NAMESPACE, "create", "secret", "tls", secret,
                         f"--cert={cert}", f"--key={key}")


def serving_certificate(kube: Cluster, secret: str) -> str:
    """The PEM certificate (never the key) of one of SERVING_CERTIFICATES' Secrets: what a
    client of that server trusts."""
    encoded = kube.kubectl("-n", NAMESPACE, "get", "secret", secret, "-o",
                           "jsonpath={.data.tls\\.crt}").stdout
    return base64.b64decode(encoded).decode()


def wait_pods_ready(cluster: LocalKubeCluster, namespace: str, timeout: float) -> None:
    """Until every pod of `namespace` is Ready (and there is at least one)."""
    kube = cluster.cluster()
    deadline = time.monotonic() + timeout
    waiting: list[str] = ["(no pods yet)"]
    pods: dict[str, Any] = {"items": []}
    while time.monotonic() < deadline:
        pods = json.loads(kube.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
        waiting = [pod["metadata"]["name"] for pod in pods["items"] if not _pod_ready(pod)]
        if pods["items"] and not waiting:
            return
        time.sleep(2)
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)
    described = kube.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
    raise ClusterError(f"pods not Ready after {timeout:.0f}s: {waiting}\n"
                       + "\n".join(not_ready_reasons(pods["items"], nodes["items"]))
                       + f"\n{described}")


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions", []))


def not_ready_reasons(pods: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> list[str]:
    """Why pods are not Ready, a line each, from what the kubelet recorded (an eviction's
    message, a container's waiting or termination reason), then any node under pressure with
    what to do about it: `kubectl get pods` shows "Evicted" or "ImagePullBackOff", never that
    the disk ran low."""
    lines = []
    for pod in pods:
        if _pod_ready(pod):
            continue
        status = pod.get("status", {})
        why = [f"{status['reason']}: {status.get('message', '').strip()}"] if status.get(
            "reason") else []
        for container in status.get("containerStatuses", []) + status.get(
                "initContainerStatuses", []):
            for state in ("waiting", "terminated"):
                detail = container.get("state", {}).get(state)
                if detail and detail.get("reason") not in (None, "Completed"):
                    message = (detail.get("message") or "").strip().splitlines()
                    why.append(f"{container['name']} {state} {detail['reason']}"
                               + (f": {message[-1]}" if message else ""))
        if why:
            lines.append(f"  {pod['metadata']['name']}: " + "; ".join(why))
    for node in nodes:
        for condition in node.get("status", {}).get("conditions", []):
            if condition["type"].endswith("Pressure") and condition["status"] == "True":
                hint = _PRESSURE_HINTS.get(condition["type"], "")
                lines.append(f"  node {node['metadata']['name']}: {condition['type']}"
                             f" ({condition.get('message', '')}){hint}")
    return lines


# The local nodes share this machine's disk and memory with everything else on it.
_PRESSURE_HINTS = {
    "DiskPressure": (
        "; the local nodes' disk is this machine's: free some (`df -h .cache`; old image "
        "builds go with `buildah --root .cache/images/storage --runroot .cache/images/run "
        "--storage-driver vfs rmi --prune`)"
    ),
    "MemoryPressure": "; free memory on this machine, then retry",
}
