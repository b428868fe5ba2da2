"""observedGeneration: each status ckpt writes names the metadata.generation of the spec it
acted on. The operator's handlers take it from the resource; a StorageLocation's check carries
it whatever the outcome, so a verdict on an edited spec can be told from one on the spec
before. (That the Checkpoint and Restore flows write it on every status: test_checkpointer,
test_restore_flow.)"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import kopf

from ckpt.operator import handlers
from ckpt.operator.locations import Locations, check, merge_condition


async def _never(*_: Any) -> Any:
    raise AssertionError("a node-local or invalid location needs no lookup")


LOCATIONS = Locations(_never, _never, _never)


async def test_each_check_names_the_generation_it_checked() -> None:
    status = await check(LOCATIONS, "local", {"type": "file"}, generation=5)
    assert (status.phase, status.observed_generation) == ("Available", 5)

    # Edited into something invalid (generation 6): the refusal says which spec it judged.
    refused = await check(LOCATIONS, "local", {"type": "file", "bucket": "B!"}, generation=6)
    assert refused.phase == "Unavailable"
    assert refused.conditions[0].reason == "InvalidStorageLocation"
    assert refused.observed_generation == 6


async def test_merging_with_the_previous_status_keeps_the_new_generation() -> None:
    old: Mapping[str, Any] = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Available", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
    }
    merged = merge_condition(old, await check(LOCATIONS, "local", {"type": "file"}, generation=2))
    assert merged.observed_generation == 2
    assert merged.conditions[0].last_transition_time == "2026-01-01T00:00:00Z"
    written = merged.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert written["observedGeneration"] == 2


class _Kube:
    get_storage_location = list_storage_locations = read_secret = namespace_labels = (
        staticmethod(_never)
    )

    def __init__(self) -> None:
        self.patched: list[tuple[str, Mapping[str, Any]]] = []

    async def patch_storage_location_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.patched.append((name, status))


async def test_the_operator_timer_writes_the_resources_generation() -> None:
    kube = _Kube()
    memo = SimpleNamespace(clients=SimpleNamespace(kube=kube, locations=LOCATIONS))
    await handlers.storage_location_available(
        name="local", spec={"type": "file"}, status={},
        meta={"name": "local", "generation": 4}, memo=memo,
    )
    [(name, status)] = kube.patched
    assert (name, status["phase"], status["observedGeneration"]) == ("local", "Available", 4)


def test_the_checkpoint_flow_gets_the_resources_generation() -> None:
    body = kopf.Body({
        "metadata": {
            "name": "db-ckpt", "namespace": "apps", "uid": "u-1", "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"podName": "db", "retainPolicy": "Delete"},
    })
    resource = handlers.checkpoint_resource(body)
    assert (resource.namespace, resource.name, resource.uid) == ("apps", "db-ckpt", "u-1")
    assert resource.generation == 3
    assert resource.spec.pod_name == "db" and resource.created.year == 2026
