"""StorageLocation.spec.allowedNamespaces (issue 21, finding 9): the model, its CRD (generated
from the model, the committed file current) and how the operator's `Locations` enforces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ckpt.apis import crd
from ckpt.apis.storagelocation import LabelSelector, StorageLocationSpec
from ckpt.operator.locations import NOT_ALLOWED, LocationError, Locations

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "storagelocation.yaml"


def test_committed_crd_is_what_the_models_generate() -> None:
    assert CRD_FILE.read_text() == crd.render_storage_location(), (
        "crds/storagelocation.yaml is stale: run `make crd`"
    )


def test_the_crd_keeps_the_selectors_maps_and_rules() -> None:
    spec = crd.storage_location_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]
    assert set(spec["properties"]) == {
        f.alias for f in StorageLocationSpec.model_fields.values()
    }
    selector = spec["properties"]["allowedNamespaces"]
    assert selector["nullable"] is True
    # matchLabels is a map: without its values' schema the apiserver prunes every label.
    labels = selector["properties"]["matchLabels"]
    assert labels["type"] == "object" and labels["additionalProperties"]["type"] == "string"
    requirement = selector["properties"]["matchExpressions"]["items"]
    assert requirement["properties"]["operator"]["enum"] == [
        "In", "NotIn", "Exists", "DoesNotExist"
    ]
    assert "size(self.values) > 0" in requirement["x-kubernetes-validations"][0]["rule"]


def _selector(body: dict[str, Any]) -> LabelSelector:
    return LabelSelector.model_validate_json(json.dumps(body))


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        ({"matchLabels": {"team": "a"}}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
         {"team": "b"}, True),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
         {}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
         {"team": "a"}, False),
        ({"matchExpressions": [{"key": "ckpt.dev/allowed", "operator": "Exists"}]},
         {"ckpt.dev/allowed": ""}, True),
        ({"matchExpressions": [{"key": "sandbox", "operator": "DoesNotExist"}]},
         {"sandbox": "1"}, False),
        # Every part must hold.
        ({"matchLabels": {"team": "a"},
          "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
         {"team": "a", "env": "dev"}, False),
    ],
)
def test_selector_semantics_are_kubernetes_own(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert _selector(selector).matches(labels) is matches


@pytest.mark.parametrize(
    "selector",
    [
        {"matchExpressions": [{"key": "team", "operator": "In"}]},
        {"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]},
        {"matchExpressions": [{"key": "team", "operator": "Near", "values": ["a"]}]},
        {"matchLabels": {"not a key": "a"}},
        {"matchLabels": {"team": "not a value"}},
        {"matchNames": ["team-a"]},
    ],
)
def test_invalid_selectors_are_refused(selector: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _selector(selector)


def _locations(spec: dict[str, Any], labels: dict[str, dict[str, str]] | None) -> Locations:
    body = {"metadata": {"name": "shared"}, "spec": spec}

    async def get(name: str) -> dict[str, Any] | None:
        return body if name == "shared" else None

    async def list_all() -> list[dict[str, Any]]:
        return [body]

    async def read_secret(name: str) -> dict[str, str] | None:
        return None

    async def namespace_labels(name: str) -> dict[str, str] | None:
        assert labels is not None
        return labels.get(name)

    return Locations(get, list_all, read_secret, namespace_labels if labels is not None else None)


RESTRICTED = {"type": "file", "default": True, "allowedNamespaces": {"matchLabels": {"team": "a"}}}


async def test_locations_admit_only_the_selected_namespaces() -> None:
    locations = _locations(RESTRICTED, {"team-a": {"team": "a"}, "team-b": {"team": "b"}})
    assert (await locations.choose("shared", "team-a"))[0] == "shared"
    assert (await locations.destination(None, namespace="team-a")).location == "shared"
    for namespace in ("team-b", "gone"):
        with pytest.raises(LocationError) as refused:
            await locations.destination("shared", namespace=namespace)
        assert refused.value.reason == NOT_ALLOWED
        assert f"namespace {namespace!r}" in refused.value.message
    # Without a namespace (the periodic reachability check) the selector does not apply.
    assert (await locations.choose("shared"))[0] == "shared"


async def test_a_location_without_a_selector_admits_every_namespace() -> None:
    locations = _locations({"type": "file"}, {})
    assert (await locations.choose("shared", "anywhere"))[0] == "shared"


async def test_a_restricted_location_is_refused_when_labels_cannot_be_read() -> None:
    with pytest.raises(LocationError) as refused:
        await _locations(RESTRICTED, None).choose("shared", "team-a")
    assert refused.value.reason == NOT_ALLOWED
