"""An S3 StorageLocation that every node of the local cluster reaches: SeaweedFS on the
cluster's host address, a bucket, the credentials Secret and the StorageLocation, all removed
again at the end.

Pods reach the host at API_ADDRESS (on `lo` while the cluster runs), never at its 127.0.0.1,
so the server binds there. Archives in it are what a restore on another node needs: a `file`
location stays on the node that wrote it. `s3_location` makes one on a server and bucket the
caller runs (tests that stop the server, or give the location wrong credentials).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.cluster.cluster import API_ADDRESS
from harness.cluster.deploy import CREDENTIALS_NAMESPACE, wait_location_available
from harness.controlplane import Cluster
from harness.s3 import SeaweedS3

# The operator checks a new location at once (its timer's initial delay is 1 s); a location
# that is not Available within this is misconfigured, and tests would fail later and vaguer.
AVAILABLE_TIMEOUT = 120.0
# Object keys: PREFIX/<namespace>/<checkpoint-id>.tar.zst[.age]
PREFIX = "archives"


@contextmanager
def shared_s3_location(kube: Cluster, workdir: Path, *,
                       bind: str = API_ADDRESS) -> Iterator[str]:
    """Yields the name of an Available s3 StorageLocation on a fresh SeaweedFS."""
    with SeaweedS3(workdir, bind=bind) as server:
        bucket = f"ckpt-shared-{secrets.token_hex(3)}"
        server.create_bucket(bucket)
        with s3_location(kube, server, bucket) as location:
            yield location


@contextmanager
def s3_location(kube: Cluster, server: SeaweedS3, bucket: str, *,
                secret_key: str | None = None, prefix: str = PREFIX) -> Iterator[str]:
    """Yields the name of an s3 StorageLocation on `server`'s `bucket` (which must exist),
    with its credentials Secret; both removed again, after the Checkpoints archived in it.

    With `secret_key`, the Secret holds that instead of the server's own (a location with
    wrong credentials): it is not waited for, as it never becomes Available."""
    location = f"shared-s3-{secrets.token_hex(3)}"
    secret = f"{location}-credentials"
    kube.kubectl(
        "-n", CREDENTIALS_NAMESPACE, "create", "secret", "generic", secret,
        f"--from-literal=accessKeyId={server.access_key}",
        f"--from-literal=secretAccessKey={secret_key or server.secret_key}",
    )
    try:
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "ckpt.dev/v1alpha1", "kind": "StorageLocation",
            "metadata": {"name": location},
            "spec": {
                "type": "s3", "bucket": bucket, "prefix": prefix,
                "endpoint": server.endpoint, "region": server.region,
                "pathStyle": True, "credentialsSecretRef": {"name": secret},
            },
        }))
        try:
            if secret_key is None:
                wait_location_available(kube, location, AVAILABLE_TIMEOUT)
            yield location
        finally:
            _delete_checkpoints_in(kube, location)
            kube.kubectl("delete", "storagelocation", location, "--ignore-not-found",
                         "--timeout=60s", check=False)
    finally:
        kube.kubectl("-n", CREDENTIALS_NAMESPACE, "delete", "secret", secret,
                     "--ignore-not-found", check=False)


def _delete_checkpoints_in(kube: Cluster, location: str) -> None:
    """Deletes the Checkpoints archived in the location while it and its server still exist:
    their finalizer deletes the archive through it, and would be stuck once it is gone."""
    found = kube.kubectl("get", "checkpoints", "-A", "-o", "json", check=False)
    if found.returncode != 0:
        return
    for item in json.loads(found.stdout).get("items", []):
        storage = (item.get("status") or {}).get("storageLocation") or \
            (item.get("spec") or {}).get("storage")
        if storage == location:
            meta = item["metadata"]
            kube.kubectl("-n", meta["namespace"], "delete", "checkpoint", meta["name"],
                         "--ignore-not-found", "--timeout=120s", check=False)
