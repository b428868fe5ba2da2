"""The CheckpointPolicy CRD on a real kube-apiserver: it is accepted (its CEL rules compile
within the cost budget), defaults apply, the rules refuse what the model refuses with the same
messages, and the status subresource takes what the operator writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ckpt.apis.checkpoint import GROUP, VERSION
from ckpt.apis.policy import POLICY_PLURAL, CheckpointPolicyStatus, LineageStatus
from harness.controlplane import Cluster

# Needs the test apiserver.
pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "crds" / "checkpointpolicy.yaml"


@pytest.fixture(scope="module")
def crd(kube: Cluster) -> None:
    kube.kubectl("apply", "--server-side", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 f"crd/{POLICY_PLURAL}.{GROUP}")


@pytest.fixture
def custom(kube: Cluster, crd: None) -> Iterator[client.CustomObjectsApi]:
    with kube.api_client() as api:
        yield client.CustomObjectsApi(api)


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CheckpointPolicy",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": "train"}}, **spec},
    }


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_defaults_apply_and_the_short_name_works(kube: Cluster,
                                                 custom: client.CustomObjectsApi) -> None:
    name = _name("defaults")
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", POLICY_PLURAL, _policy(name, every="5m")
    )
    assert created["spec"] == {
        "selector": {"matchLabels": {"app": "train"}}, "every": "5m", "keepLast": 3,
        "checkpointOnEviction": True, "evictionDeadlineSeconds": 120,
        "resumeReplacements": True,
    }
    listed = kube.kubectl("get", "cpol", name, "-o", "name").stdout.strip()
    assert listed == f"checkpointpolicy.ckpt.dev/{name}"
    header = kube.kubectl("get", "cpol", name).stdout.splitlines()[0].split()
    assert header == ["NAME", "PODS", "EVERY", "KEEP", "LAST-CHECKPOINT", "AGE"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"every": "5x"}, "every must be a duration in h, m and s, largest unit first"),
        ({"every": "1m1h"}, "every must be a duration in h, m and s"),
        ({"every": "5s"}, "every must be between 10s and 720h (30 days)"),
        ({"every": "721h"}, "every must be between 10s and 720h (30 days)"),
        ({"selector": {}}, "an empty selector would cover every pod of the namespace"),
        ({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists",
                                             "values": ["x"]}]}},
         "values must be non-empty for In and NotIn and empty for Exists"),
        ({"keepLast": 0}, "spec.keepLast: Invalid value: 0"),
        ({"storage": "s3://bucket/x"}, "spec.storage"),
        ({"bogus": True}, 'unknown field "spec.bogus"'),
    ],
)
def test_invalid_specs_are_refused_with_the_models_message(
    kube: Cluster, crd: None, spec: dict[str, Any], message: str
) -> None:
    refused = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        _policy(_name("bad"), **spec)), check=False)
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr


def test_a_name_too_long_for_the_label_is_refused(kube: Cluster, crd: None) -> None:
    refused = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        _policy("p" * 64, every="1m")), check=False)
    assert refused.returncode != 0
    assert "the name may have at most 63 characters" in refused.stderr
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(_policy("p" * 63, every="1h30m")))


def test_the_status_the_operator_writes_is_kept_whole(custom: client.CustomObjectsApi) -> None:
    name = _name("status")
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", POLICY_PLURAL,
                                           _policy(name, every="1m"))
    status = CheckpointPolicyStatus(
        pods_covered=1, last_checkpoint="w-20261207-120000-abcde",
        last_checkpoint_at="2026-12-07T12:00:00Z", lineage_count=1,
        lineages=[LineageStatus(lineage="pod-w-0123456789", workload="Pod/w", pods=["w"],
                                ready=1, latest_ready="w-20261207-120000-abcde",
                                latest_ready_at="2026-12-07T12:00:00Z")],
        message="1 pod covered",
    ).model_dump(mode="json", by_alias=True)
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", POLICY_PLURAL,
                                                 name, {"status": status})
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, "default", POLICY_PLURAL,
                                                 name)["status"]
    # Nulls are removed by the merge patch, nothing else is pruned.
    assert stored == {k: v for k, v in status.items() if v is not None}
