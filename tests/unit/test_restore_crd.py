"""The Restore CRD is generated from the pydantic models, and the committed file is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ckpt.apis import restore_crd
from ckpt.apis.restore import RestoreSpec, RestoreStatus

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "restore.yaml"


def _schema() -> dict:
    return restore_crd.restore_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_what_the_models_generate() -> None:
    assert CRD_FILE.read_text() == restore_crd.render(), (
        "crds/restore.yaml is stale: run "
        "`python -m ckpt.apis.restore_crd > crds/restore.yaml`"
    )


def test_spec_and_status_fields_match_the_models() -> None:
    schema = _schema()
    spec = schema["properties"]["spec"]
    assert set(spec["properties"]) == {f.alias for f in RestoreSpec.model_fields.values()}
    assert spec["required"] == ["checkpointName"]
    assert spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {f.alias for f in RestoreStatus.model_fields.values()}
    assert status["phase"]["enum"] == ["Pending", "Staging", "Restoring", "Running", "Failed"]
    assert set(status["timings"]["properties"]) == {
        "fetch", "verify", "extract", "restore", "total"
    }
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_names_and_printer_columns() -> None:
    crd = restore_crd.restore_crd()
    assert crd["metadata"]["name"] == "restores.ckpt.dev"
    assert crd["spec"]["names"]["shortNames"] == ["rst"]
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns if "priority" not in c] == [
        "Phase", "Checkpoint", "Pod", "Node", "Age"
    ]


@pytest.mark.parametrize(
    "spec",
    [{}, {"checkpointName": "Bad_Name"}, {"checkpointName": "c", "nodeName": ""},
     {"checkpointName": "c", "extra": 1}, {"checkpointName": 5}],
)
def test_the_model_refuses_what_the_crd_refuses(spec: dict) -> None:
    with pytest.raises(ValidationError):
        RestoreSpec.from_resource(spec)


def test_default_pod_name() -> None:
    assert RestoreSpec.from_resource({"checkpointName": "c1"}).target_pod() == "c1-restored"
    spec = RestoreSpec.from_resource({"checkpointName": "c1", "podName": "p", "nodeName": None})
    assert (spec.target_pod(), spec.node_name) == ("p", None)
