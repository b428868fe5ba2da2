"""`ckpt prune`: which Checkpoints go, by count per pod and by age; specs and statuses are
read through the operator's models."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ckpt.user.prune import parse_duration, plan
from ckpt.user.resources import UserError

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _ck(name: str, pod: str, hours_ago: float, phase: str = "Ready",
        retain: str = "Delete", ns: str = "team") -> dict[str, Any]:
    created = (NOW - dt.timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": {"podName": pod, "retainPolicy": retain},
        "status": {"phase": phase, "restorePath": f"s3://b/{ns}/{name}.tar.zst"},
    }


ITEMS = [
    _ck("a1", "a", 1), _ck("a2", "a", 2), _ck("a3", "a", 30, retain="Retain"),
    _ck("a4", "a", 50, phase="Failed"), _ck("a5", "a", 0.1, phase="Checkpointing"),
    _ck("b1", "b", 100), _ck("c1", "a", 100, ns="other"),
]


def test_keep_n_newest_ready_per_pod() -> None:
    chosen = plan(ITEMS, keep=1, now=NOW)
    assert [(p.namespace, p.name) for p in chosen] == [("team", "a2"), ("team", "a3"),
                                                        ("team", "a4")]
    assert {p.name: p.deletes_archive for p in chosen} == {"a2": True, "a3": False, "a4": True}


def test_older_than_and_never_in_progress() -> None:
    chosen = plan(ITEMS, older_than=parse_duration("1d"), now=NOW)
    assert sorted(p.name for p in chosen) == ["a3", "a4", "b1", "c1"]
    both = plan(ITEMS, keep=1, older_than=parse_duration("1d"), now=NOW)
    # b1 and c1 are the newest Ready of their pods: kept whatever their age.
    assert sorted(p.name for p in both) == ["a3", "a4"]
    assert plan(ITEMS, keep=0, pod="b", now=NOW)[0].name == "b1"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="say what to prune"):
        plan(ITEMS)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("7 days")
    assert parse_duration("2w") == dt.timedelta(days=14)


def test_defaults_come_from_the_models() -> None:
    # As the apiserver may hold them: no retainPolicy (the model's default is Retain), a
    # Checkpoint the operator has not written a status for yet, one with a status but no phase.
    bare = _ck("d1", "d", 10)
    del bare["spec"]["retainPolicy"]
    unseen = _ck("d2", "d", 20)
    del unseen["status"]
    no_phase = _ck("d3", "d", 30)
    del no_phase["status"]["phase"]
    chosen = plan([bare, unseen, no_phase], keep=0, now=NOW)
    assert [(p.name, p.deletes_archive, p.archive) for p in chosen] == [
        ("d1", False, "s3://b/team/d1.tar.zst")
    ]


def test_a_checkpoint_the_models_refuse_is_named() -> None:
    bad_status = _ck("e1", "e", 10)
    bad_status["status"]["sizeBytes"] = "large"
    with pytest.raises(UserError, match="cannot read the status of checkpoint team/e1"):
        plan([_ck("e0", "e", 5), bad_status], keep=0, now=NOW)
    bad_spec = _ck("e2", "e", 10, retain="Sometimes")
    with pytest.raises(UserError, match="cannot read the spec of checkpoint team/e2"):
        plan([bad_spec], older_than=parse_duration("1h"), now=NOW)
