"""ckpt on the local cluster: its images loaded, `deploy/local` applied, its pods Ready.

The images come from tools/images/build.sh (buildah, from the project's Dockerfile), which
prints the folder holding `ckpt.tar` and `ckpt-agent.tar`, each named as `deploy/` names it.
The one manual step of deploy/README.md, the operator's token of the checkpoints API, is done
here the same way a user does it. Then the cluster's StorageLocations are made on its object
store (harness.cluster.object_store): `local-s3`, marked default, so archives reach every node
and a restore on another node works out of the box, and `node-local` (type file).
"""

from __future__ import annotations

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
OVERLAY = REPO_ROOT / "deploy" / "local"
IMAGE_ARCHIVES = ("ckpt.tar", "ckpt-agent.tar")
AGENT_TLS_SECRET = "ckpt-agent-tls"  # noqa: S105 - the name of a Secret, not a secret
# The Secret holding the operator's API token, as deploy/README.md names it.
OPERATOR_API_SECRET = "ckpt-api-token"  # noqa: S105 - the name of a Secret, not a secret
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
    ensure_agent_tls(kube, log)
    log("applying deploy/local")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(OVERLAY))
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
    secret = kube.kubectl("-n", NAMESPACE, "get", "secret", OPERATOR_API_SECRET, check=False)
    if secret.returncode != 0:
        log("creating the operator's API token (deploy/README.md)")
        token = kube.kubectl("-n", NAMESPACE, "exec", "deployment/ckpt-api", "--",
                             "ckpt", "api", "token", "create", "--tenant", "local").stdout
        kube.kubectl("-n", NAMESPACE, "create", "secret", "generic", OPERATOR_API_SECRET,
                     f"--from-literal=token={token.strip()}")
    wait_pods_ready(cluster, NAMESPACE, timeout)
    ensure_storage_locations(cluster, log, timeout)


def ensure_storage_locations(cluster: LocalKubeCluster, log: Callable[[str], None],
                             timeout: float = 180.0) -> None:
    """The cluster's object store (started if a cluster older than it runs none), its keys in
    a Secret of ckpt's namespace, and the StorageLocations on it (object_store.
    storage_manifests), until the default one is Available. Server-side apply: a client-side
    apply would copy the Secret's keys into its last-applied annotation."""
    store = cluster.ensure_object_store(log)
    kube = cluster.cluster()
    log(f"storage locations: {S3_LOCATION} (default, {store.endpoint}) and node-local")
    manifests = storage_manifests(store, NAMESPACE)
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


def ensure_agent_tls(kube: Cluster, log: Callable[[str], None]) -> None:
    """The agents' serving certificate, made as README's install steps make it: one
    self-signed certificate for the name the operator checks, in the Secret ckpt-agent-tls."""
    kube.ensure_namespace(NAMESPACE)
    if kube.kubectl("-n", NAMESPACE, "get", "secret", AGENT_TLS_SECRET,
                    check=False).returncode == 0:
        return
    log("creating the agents' serving certificate (README: Install on a cluster)")
    with tempfile.TemporaryDirectory(prefix="ckpt-agent-tls-") as folder:
        key, cert = Path(folder) / "tls.key", Path(folder) / "tls.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "825", "-subj", "/CN=ckpt-agent",
             "-addext", f"subjectAltName=DNS:ckpt-agent.{NAMESPACE}.svc",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        kube.kubectl("-n", NAMESPACE, "create", "secret", "tls", AGENT_TLS_SECRET,
                     f"--cert={cert}", f"--key={key}")


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
