"""Lineage: the identity of a pod that survives its replacement, read from its controller."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ckpt.operator.lineage import Lineage, lineage_of

LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def pod(name: str, *owners: dict[str, Any], labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "labels": labels or {},
                            "annotations": annotations or {}}
    if owners:
        meta["ownerReferences"] = list(owners)
    return {"metadata": meta}


def owner(kind: str, name: str, uid: str = "owner-uid", controller: bool = True) -> dict[str, Any]:
    api = {"Job": "batch/v1", "Node": "v1"}.get(kind, "apps/v1")
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": controller}


def test_a_job_pod_belongs_to_its_job() -> None:
    found = lineage_of(pod("train-x7k2q", owner("Job", "train", "job-1")))
    assert found == Lineage(kind="Job", name="train", uid="job-1")
    assert found.workload == "Job/train"
    # The replacement pod (another name, same Job) has the same lineage.
    assert lineage_of(pod("train-p9z4m", owner("Job", "train", "job-1"))) == found


def test_an_indexed_job_pod_belongs_to_its_job_and_index() -> None:
    index = "batch.kubernetes.io/job-completion-index"
    by_label = lineage_of(pod("train-2-abc", owner("Job", "train"), labels={index: "2"}))
    by_annotation = lineage_of(pod("train-2-def", owner("Job", "train"),
                                   annotations={index: "2"}))
    assert by_label == by_annotation == Lineage(kind="Job", name="train", uid="owner-uid",
                                                ordinal=2)
    assert by_label.workload == "Job/train/2"
    other = lineage_of(pod("train-0-abc", owner("Job", "train"), labels={index: "0"}))
    assert other.label_value != by_label.label_value


def test_a_replicaset_pod_belongs_to_its_replicaset() -> None:
    found = lineage_of(pod("web-5d4f9-abcde", owner("ReplicaSet", "web-5d4f9", "rs-1")))
    assert found == Lineage(kind="ReplicaSet", name="web-5d4f9", uid="rs-1")
    # A rollout is a new ReplicaSet: a new lineage.
    rolled = lineage_of(pod("web-77c8b-fghij", owner("ReplicaSet", "web-77c8b", "rs-2")))
    assert rolled.label_value != found.label_value


def test_a_statefulset_pod_belongs_to_its_set_and_ordinal() -> None:
    revision = {"controller-revision-hash": "db-6f7c9"}
    zero = lineage_of(pod("db-0", owner("StatefulSet", "db"), labels=revision))
    assert zero == Lineage(kind="StatefulSet", name="db", uid="owner-uid", ordinal=0,
                           revision="db-6f7c9")
    assert zero.workload == "StatefulSet/db/0"
    one = lineage_of(pod("db-1", owner("StatefulSet", "db"), labels=revision))
    assert one.ordinal == 1 and one.label_value != zero.label_value
    # The ordinal label (Kubernetes >= 1.28) wins over the name.
    labelled = lineage_of(pod("db-0", owner("StatefulSet", "db"),
                              labels={**revision, "apps.kubernetes.io/pod-index": "7"}))
    assert labelled.ordinal == 7
    # A rolling update (a new template) is a new lineage for the same ordinal.
    updated = lineage_of(pod("db-0", owner("StatefulSet", "db"),
                             labels={"controller-revision-hash": "db-88a1b"}))
    assert updated.ordinal == 0 and updated.label_value != zero.label_value


def test_a_bare_pod_is_its_own_lineage_by_name() -> None:
    first = lineage_of(pod("counter"))
    assert first == Lineage(kind="Pod", name="counter")
    assert first.workload == "Pod/counter"
    # Made again under its name (another uid): the same lineage.
    again = pod("counter")
    again["metadata"]["uid"] = "another"
    assert lineage_of(again) == first


def test_only_the_controller_reference_counts() -> None:
    # An owner that is not the controller (e.g. a garbage-collection parent) makes no lineage.
    assert lineage_of(pod("p", owner("ReplicaSet", "rs", controller=False))).kind == "Pod"
    found = lineage_of(pod("p", owner("ConfigMap", "cm", controller=False),
                           owner("ReplicaSet", "rs")))
    assert (found.kind, found.name) == ("ReplicaSet", "rs")


def test_another_controller_is_the_lineage() -> None:
    found = lineage_of(pod("agent-x", owner("DaemonSet", "agent", "ds-1")))
    assert found == Lineage(kind="DaemonSet", name="agent", uid="ds-1")


def test_the_controller_uid_separates_runs_of_the_same_name() -> None:
    first = lineage_of(pod("train-a", owner("Job", "train", "job-1")))
    rerun = lineage_of(pod("train-b", owner("Job", "train", "job-2")))
    assert first.workload == rerun.workload
    assert first.label_value != rerun.label_value


@pytest.mark.parametrize(
    "found",
    [
        Lineage(kind="Pod", name="a"),
        Lineage(kind="Job", name="j" * 63, uid="u", ordinal=123456),
        Lineage(kind="StatefulSet", name="s-" + "x" * 240, uid="u", ordinal=3, revision="r"),
        Lineage(kind="ReplicaSet", name="web.v2." + "y" * 200, uid="u"),
    ],
)
def test_the_label_value_fits_a_label_and_is_stable(found: Lineage) -> None:
    value = found.label_value
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert value.startswith(found.kind.lower() + "-")
    assert value == Lineage(**found.__dict__).label_value


def test_long_names_that_differ_only_at_the_end_keep_distinct_values() -> None:
    a = Lineage(kind="ReplicaSet", name="x" * 100 + "a", uid="u")
    b = Lineage(kind="ReplicaSet", name="x" * 100 + "b", uid="u")
    assert a.label_value != b.label_value
