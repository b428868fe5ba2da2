"""The local cluster's object store: SeaweedFS (harness.s3) on the cluster's host address, so
archives in it are reachable from every node and a restore on another node works out of the
box.

It belongs to the cluster's lifecycle: `LocalKubeCluster.up()` starts it with the rest and
records its process in `state.json` like every other, `down()` stops it and removes its data
(the work folder's `s3/`; its log is `logs/seaweedfs.log`, with the others). What it serves
(endpoint, bucket, keys) is recorded there too, and `deploy_ckpt` turns that into ckpt's
StorageLocations (`storage_manifests`): `local-s3` on it, marked default, and `node-local`, a
`file` location for archives that should stay on their node.

Pods reach the host only at its cluster address (harness.cluster.cluster.API_ADDRESS, on `lo`
while the cluster runs), never at 127.0.0.1, so the server binds there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ckpt.apis import storagelocation as sl
from harness.s3 import SeaweedS3

# The name of its process in state.json's records.
PROCESS = "seaweedfs"
# Under the cluster's work folder: the server's data, configuration and (while it runs) log.
FOLDER = "s3"
LOG = "seaweedfs.log"
BUCKET = "ckpt-archives"
PREFIX = "archives"
# The StorageLocations deploy_ckpt makes, and the Secret (in the credentials namespace) with
# the keys.
S3_LOCATION = "local-s3"
FILE_LOCATION = "node-local"
CREDENTIALS_SECRET = f"{S3_LOCATION}-credentials"


@dataclass(frozen=True)
class ObjectStore:
    """What the running server serves, as recorded in state.json."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectStore:
        return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})


def start_object_store(workdir: Path, log: Path, weed: str,
                       bind: str) -> tuple[ObjectStore, int]:
    """Starts SeaweedFS with its data in `workdir` and its output in `log`, bound to `bind`,
    with the archive bucket; returns what it serves and its pid. The process outlives the
    caller (it runs in a session of its own)."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = SeaweedS3(workdir, weed=weed, bind=bind)
    server.log_path = log
    server.start()
    try:
        server.create_bucket(BUCKET)
    except BaseException:
        server.stop()
        raise
    store = ObjectStore(endpoint=server.endpoint, region=server.region, bucket=BUCKET,
                        access_key=server.access_key, secret_key=server.secret_key)
    return store, server.pid


def storage_manifests(store: ObjectStore, namespace: str) -> list[dict[str, Any]]:
    """The credentials Secret (in `namespace`, the credentials namespace, where the operator
    reads a location's Secrets), the default S3 location on `store`, and the node-local file
    location."""
    return [
        {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
            "type": "Opaque",
            "stringData": {sl.ACCESS_KEY_ID: store.access_key,
                           sl.SECRET_ACCESS_KEY: store.secret_key},
        },
        _location(S3_LOCATION, {
            "type": "s3", "bucket": store.bucket, "prefix": PREFIX,
            "endpoint": store.endpoint, "region": store.region, "pathStyle": True,
            "credentialsSecretRef": {"name": CREDENTIALS_SECRET},
            "default": True,
        }),
        _location(FILE_LOCATION, {"type": "file"}),
    ]


def _location(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{sl.GROUP}/{sl.VERSION}", "kind": sl.KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "ckpt-harness"}},
        "spec": spec,
    }
