"""The CRD and the pydantic models agree: the CRD is generated from them, and the apiserver
accepts exactly the specs the models accept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubernetes import client
from pydantic import ValidationError

from ckpt.apis import crd
from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION, CheckpointSpec
from harness.controlplane import Cluster

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "checkpoint.yaml"


def test_committed_crd_is_what_the_models_generate() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/checkpoint.yaml is stale: run `python -m ckpt.apis.crd > crds/checkpoint.yaml`"
    )


def test_every_model_field_is_in_the_crd_and_back() -> None:
    schema = crd.checkpoint_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec_props = schema["properties"]["spec"]["properties"]
    assert set(spec_props) == {f.alias for f in CheckpointSpec.model_fields.values()}
    assert schema["properties"]["spec"]["required"] == ["podName"]


@pytest.fixture(scope="module")
def custom(kube: Cluster) -> Iterator[client.CustomObjectsApi]:
    kube.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    with kube.api_client() as api:
        yield client.CustomObjectsApi(api)


def _apiserver_accepts(custom: client.CustomObjectsApi, spec: dict[str, Any]) -> bool:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Checkpoint",
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }
    try:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            body,
            dry_run="All",
            field_validation="Strict",
        )
    except client.ApiException as exc:
        assert exc.status in (400, 422), exc.body
        return False
    return True


def _model_accepts(spec: dict[str, Any]) -> bool:
    try:
        CheckpointSpec.from_resource(spec)
    except ValidationError:
        return False
    return True


label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
# Look-alikes of the right type ("true", "100", 100.0) are where lax validators disagree.
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100_000),
    st.text(max_size=12),
    st.sampled_from(["true", "100", 100.0, 30.5, [], {}]),
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "podName": st.one_of(label, st.text(max_size=12)),
        "containers": st.one_of(
            st.lists(label, max_size=3), st.lists(st.text(max_size=5), max_size=2)
        ),
        "leaveRunning": st.one_of(st.booleans(), anything),
        "gpu": st.one_of(st.sampled_from(["auto", "required", "none"]), st.text(max_size=8)),
        "timeoutSeconds": st.one_of(st.integers(0, 100_000), anything),
        "retainPolicy": st.one_of(st.sampled_from(["Retain", "Delete"]), st.text(max_size=8)),
        "storage": st.one_of(st.none(), st.text(max_size=20)),
        "unknownField": anything,
    },
)


@pytest.mark.e2e  # the test apiserver
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=specs)
@example(spec={"podName": "web", "leaveRunning": "true"})
@example(spec={"podName": "web", "timeoutSeconds": 100.0})
@example(spec={"podName": "web", "timeoutSeconds": "100"})
@example(spec={"podName": "web", "storage": None, "containers": ["a", "b-2"]})
@example(spec={"podName": "web.v2", "gpu": "required", "retainPolicy": "Delete"})
@example(spec={"podName": "-web"})
@example(spec={})
def test_apiserver_and_models_accept_the_same_specs(
    custom: client.CustomObjectsApi, spec: dict[str, Any]
) -> None:
    assert _apiserver_accepts(custom, spec) == _model_accepts(spec), spec
