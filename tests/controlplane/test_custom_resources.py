"""The Checkpoint CRD on a real kube-apiserver: create, watch, status subresource, validation."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch

from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION
from harness.controlplane import Cluster

# Needs the test apiserver.
pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "crds" / "checkpoint.yaml"


@pytest.fixture(scope="module")
def crd(kube: Cluster) -> None:
    kube.kubectl("apply", "--server-side", "-f", str(CRD))
    kube.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        f"crd/{PLURAL}.{GROUP}",
    )


@pytest.fixture
def custom(kube: Cluster, crd: None) -> Iterator[client.CustomObjectsApi]:
    with kube.api_client() as api:
        yield client.CustomObjectsApi(api)


def _checkpoint(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Checkpoint",
        "metadata": {"name": name},
        "spec": {"podName": "web", **spec},
    }


def test_created_resource_gets_schema_defaults(custom: client.CustomObjectsApi) -> None:
    name = f"defaults-{uuid.uuid4().hex[:6]}"
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _checkpoint(name)
    )
    assert created["spec"] == {
        "podName": "web",
        "gpu": "auto",
        "leaveRunning": True,
        "retainPolicy": "Retain",
        "timeoutSeconds": 900,
    }


def test_watch_sees_status_patched_through_the_subresource(
    custom: client.CustomObjectsApi,
) -> None:
    name = f"watched-{uuid.uuid4().hex[:6]}"
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _checkpoint(name)
    )
    seen: list[tuple[str, str | None]] = []
    done = threading.Event()

    def follow() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ):
            obj = event["object"]
            seen.append((event["type"], obj.get("status", {}).get("phase")))
            if obj.get("status", {}).get("phase") == "Ready":
                stream.stop()
        done.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, name,
        {"status": {"phase": "Ready", "sizeBytes": 1024, "size": "1.0Ki"}},
    )
    assert patched["status"]["phase"] == "Ready"
    assert done.wait(20), f"watch never saw the status change; saw {seen}"
    assert ("MODIFIED", "Ready") in seen

    # The main resource endpoint ignores status; only the subresource writes it.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": "Failed"}}
    )
    current = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
    assert current["status"]["phase"] == "Ready"


def test_status_schema_rejects_an_unknown_phase(custom: client.CustomObjectsApi) -> None:
    name = f"badphase-{uuid.uuid4().hex[:6]}"
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _checkpoint(name))
    with pytest.raises(client.ApiException) as caught:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, name, {"status": {"phase": "Done"}}
        )
    assert caught.value.status == 422
    assert "status.phase" in caught.value.body


def test_spec_is_immutable_once_accepted(kube: Cluster, crd: None) -> None:
    name = f"immutable-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "-f", "-", input=_yaml(_checkpoint(name)))
    refused = kube.kubectl(
        "patch", "checkpoint", name, "--type=merge", "-p", '{"spec":{"podName":"other"}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "spec is immutable once accepted" in refused.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"podName": "Web_1"}, "spec.podName"),
        ({"gpu": "maybe"}, 'spec.gpu: Unsupported value: "maybe"'),
        ({"timeoutSeconds": 1}, "spec.timeoutSeconds: Invalid value: 1"),
        ({"retainPolicy": "Keep"}, 'spec.retainPolicy: Unsupported value: "Keep"'),
        ({"containers": ["Not A Label"]}, "spec.containers[0]"),
        ({"bogus": True}, 'unknown field "spec.bogus"'),
    ],
)
def test_invalid_specs_are_refused_with_the_schema_message(
    kube: Cluster, crd: None, spec: dict[str, object], message: str
) -> None:
    refused = kube.kubectl(
        "apply", "-f", "-", input=_yaml(_checkpoint(f"bad-{uuid.uuid4().hex[:6]}", **spec)),
        check=False,
    )
    assert refused.returncode != 0
    assert message in refused.stderr


def test_missing_pod_name_is_refused(kube: Cluster, crd: None) -> None:
    document = _checkpoint("nopod")
    document["spec"] = {"gpu": "none"}
    refused = kube.kubectl("apply", "-f", "-", input=_yaml(document), check=False)
    assert refused.returncode != 0
    assert "spec.podName: Required value" in refused.stderr


def _yaml(document: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(document)
