"""The local cluster's object store, its pure parts: what is recorded in state.json and the
StorageLocations `deploy_ckpt` makes on it (valid for ckpt's own models, one default, the keys
only in the Secret). Starting and stopping it with the cluster is shown by the cluster tests
(test_cluster_down's leftovers check sees its process while it runs)."""

from __future__ import annotations

import base64
import json

from ckpt.apis import storagelocation as sl
from ckpt.operator.locations import Locations, secret_values
from harness.cluster.object_store import (
    CREDENTIALS_SECRET,
    FILE_LOCATION,
    S3_LOCATION,
    ObjectStore,
    storage_manifests,
)

STORE = ObjectStore(endpoint="http://198.18.0.1:8333", region="us-east-1",
                    bucket="ckpt-archives", access_key="ckptAK1", secret_key="s3cr3t-value")


def test_the_record_round_trips_through_json() -> None:
    assert ObjectStore.from_json(json.loads(json.dumps(STORE.to_json()))) == STORE


def test_locations_are_valid_one_default_s3_on_the_store_and_a_file_one() -> None:
    secret, *locations = storage_manifests(STORE, "ckpt-credentials")
    specs = {m["metadata"]["name"]: sl.StorageLocationSpec.model_validate_json(
        json.dumps(m["spec"])) for m in locations}
    assert [m["kind"] for m in locations] == [sl.KIND, sl.KIND]
    assert {m["apiVersion"] for m in locations} == {f"{sl.GROUP}/{sl.VERSION}"}
    s3, file = specs[S3_LOCATION], specs[FILE_LOCATION]
    assert (s3.type, s3.bucket, s3.endpoint, s3.region, s3.path_style) == (
        sl.LocationType.s3, STORE.bucket, STORE.endpoint, STORE.region, True)
    assert s3.credentials_secret_ref == sl.SecretRef(name=CREDENTIALS_SECRET)
    assert [name for name, spec in specs.items() if spec.default] == [S3_LOCATION]
    assert file.type is sl.LocationType.file and not file.default
    # The keys are in the Secret of ckpt's namespace, under the names the operator reads,
    # and nowhere in the cluster-scoped locations.
    assert (secret["kind"], secret["metadata"]) == (
        "Secret", {"name": CREDENTIALS_SECRET, "namespace": "ckpt-credentials"})
    assert secret["stringData"] == {sl.ACCESS_KEY_ID: STORE.access_key,
                                    sl.SECRET_ACCESS_KEY: STORE.secret_key}
    assert STORE.secret_key not in json.dumps(locations)


async def test_the_operator_resolves_the_default_with_the_secrets_keys() -> None:
    """A Checkpoint naming no storage gets local-s3 with the recorded keys."""
    secret, *locations = storage_manifests(STORE, "ckpt-credentials")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}

    async def get(name: str) -> dict[str, object] | None:
        return next((m for m in locations if m["metadata"]["name"] == name), None)

    async def list_all() -> list[dict[str, object]]:
        return locations

    async def read_secret(name: str) -> dict[str, str] | None:
        return secret_values({"data": data}) if name == CREDENTIALS_SECRET else None

    dest = await Locations(get, list_all, read_secret).destination(None)  # type: ignore[arg-type]
    assert (dest.location, dest.endpoint, dest.bucket) == (S3_LOCATION, STORE.endpoint,
                                                           STORE.bucket)
    assert dest.credentials is not None
    assert dest.credentials.secret_access_key.get_secret_value() == STORE.secret_key
