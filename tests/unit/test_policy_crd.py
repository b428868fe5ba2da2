"""The CheckpointPolicy CRD is generated from the pydantic models, the committed file is
current, and the model refuses what the CRD refuses, with messages that say what to write."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ckpt.apis import policy_crd
from ckpt.apis.policy import (
    DURATION,
    CheckpointPolicySpec,
    CheckpointPolicyStatus,
    duration_seconds,
)

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "checkpointpolicy.yaml"
KUSTOMIZATION = CRD_FILE.parent / "kustomization.yaml"
SELECTOR = {"matchLabels": {"app": "train"}}


def _schema() -> dict[str, Any]:
    crd = policy_crd.policy_crd()
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_is_what_the_models_generate() -> None:
    assert CRD_FILE.read_text() == policy_crd.render(), (
        "crds/checkpointpolicy.yaml is stale: run "
        "`python -m ckpt.apis.policy_crd > crds/checkpointpolicy.yaml` (or `make crd`)"
    )
    assert "checkpointpolicy.yaml" in KUSTOMIZATION.read_text()


def test_spec_and_status_fields_match_the_models() -> None:
    schema = _schema()
    spec = schema["properties"]["spec"]
    assert set(spec["properties"]) == {
        f.alias for f in CheckpointPolicySpec.model_fields.values()
    }
    assert spec["required"] == ["selector"]
    # Mutable, unlike a Checkpoint's spec.
    assert "x-kubernetes-validations" not in spec
    defaults = {k: v.get("default") for k, v in spec["properties"].items()}
    assert defaults == {
        "selector": None, "every": None, "keepLast": 3, "storage": None,
        "checkpointOnEviction": True, "evictionDeadlineSeconds": 120,
        "resumeReplacements": True,
    }
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {f.alias for f in CheckpointPolicyStatus.model_fields.values()}
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert set(status["lineages"]["items"]["properties"]) == {
        "lineage", "workload", "pods", "ready", "latestReady", "latestReadyAt"
    }


def test_what_is_not_built_yet_says_so() -> None:
    schema = _schema()
    spec = schema["properties"]["spec"]["properties"]
    for field in ("checkpointOnEviction", "evictionDeadlineSeconds", "resumeReplacements"):
        assert spec[field]["description"].startswith("Not yet acted on"), field
    assert "not yet acted on" in schema["description"]


def test_names_and_printer_columns() -> None:
    crd = policy_crd.policy_crd()
    assert crd["metadata"]["name"] == "checkpointpolicies.ckpt.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "CheckpointPolicy"
    assert crd["spec"]["names"]["shortNames"] == ["cpol"]
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"]) for c in columns if "priority" not in c] == [
        ("Pods", ".status.podsCovered"),
        ("Every", ".spec.every"),
        ("Keep", ".spec.keepLast"),
        ("Last-Checkpoint", ".status.lastCheckpointAt"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_the_apiserver_gets_the_models_rules() -> None:
    schema = _schema()
    every = schema["properties"]["spec"]["properties"]["every"]
    assert "pattern" not in every  # the apiserver would quote the regex; CEL says what to write
    rules = [r["rule"] for r in every["x-kubernetes-validations"]]
    assert rules[0] == f"self.matches('{DURATION}')"
    assert "duration('10s')" in rules[1] and "duration('720h')" in rules[1]
    selector = schema["properties"]["spec"]["properties"]["selector"]
    assert "empty selector" in selector["x-kubernetes-validations"][0]["message"]
    assert schema["x-kubernetes-validations"][0]["rule"] == "size(self.metadata.name) <= 63"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400),
     ("2h0m15s", 7215), ("90s", 90), ("720h", 2592000)],
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds
    assert CheckpointPolicySpec.from_resource(
        {"selector": SELECTOR, "every": text}
    ).every_seconds == seconds


@pytest.mark.parametrize(
    ("every", "message"),
    [
        ("5x", "'5x' is not a duration in h, m and s, largest unit first, such as 30s, 5m"),
        ("30", "'30' is not a duration"),
        ("1m1h", "'1m1h' is not a duration"),
        ("1.5h", "'1.5h' is not a duration"),
        ("-5m", "'-5m' is not a duration"),
        ("5s", "every must be between 10s and 720h (30 days), not 5s"),
        ("721h", "every must be between 10s and 720h (30 days), not 721h"),
    ],
)
def test_a_wrong_every_says_what_to_write(every: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CheckpointPolicySpec.from_resource({"selector": SELECTOR, "every": every})
    assert message in str(caught.value)
    # The CRD's format rule agrees with the model's.
    assert (re.fullmatch(DURATION, every) is not None) == (message.startswith("every"))


def test_defaults_and_what_is_optional() -> None:
    spec = CheckpointPolicySpec.from_resource({"selector": SELECTOR})
    assert (spec.every, spec.every_seconds, spec.keep_last, spec.storage) == (None, None, 3, None)
    assert (spec.checkpoint_on_eviction, spec.eviction_deadline_seconds,
            spec.resume_replacements) == (True, 120, True)
    # A null for a defaulted field is absent (the apiserver drops it and defaults).
    spec = CheckpointPolicySpec.from_resource(
        {"selector": SELECTOR, "keepLast": None, "every": None}
    )
    assert spec.keep_last == 3
    # JSON has one number type: 2.0 is the integer 2, as the apiserver takes it.
    spec = CheckpointPolicySpec.from_resource({"selector": SELECTOR, "keepLast": 2.0})
    assert spec.keep_last == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "selector"),
        ({"selector": {}}, "an empty selector would cover every pod of the namespace"),
        ({"selector": {"matchLabels": {}, "matchExpressions": []}}, "empty selector"),
        ({"selector": SELECTOR, "keepLast": 0}, "greater than or equal to 1"),
        ({"selector": SELECTOR, "keepLast": "3"}, "keepLast"),
        ({"selector": SELECTOR, "checkpointOnEviction": "true"}, "checkpointOnEviction"),
        ({"selector": SELECTOR, "storage": "s3://bucket"}, "storage"),
        ({"selector": SELECTOR, "evictionDeadlineSeconds": 5}, "evictionDeadlineSeconds"),
        ({"selector": SELECTOR, "extra": 1}, "extra"),
        ({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
         "values must be non-empty for In"),
        ({"selector": {"matchLabels": {"bad key!": "x"}}}, "not label keys: bad key!"),
    ],
)
def test_the_model_refuses_what_the_crd_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CheckpointPolicySpec.from_resource(spec)
    assert message in str(caught.value)


def test_expressions_alone_are_a_selector() -> None:
    spec = CheckpointPolicySpec.from_resource(
        {"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}
    )
    assert spec.selector.matches({"tier": "gpu"})
    assert not spec.selector.matches({"app": "x"})
