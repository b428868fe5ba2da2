"""The CheckpointPolicy plan, a pure function of (policy, pods, its Checkpoints, protected
names, now): when each pod's checkpoint falls due, what is created, what is pruned."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from ckpt.apis.checkpoint import CheckpointSpec
from ckpt.apis.policy import CheckpointPolicySpec
from ckpt.operator.lineage import lineage_of
from ckpt.operator.policy import (
    CheckpointView,
    Plan,
    PodView,
    Policy,
    checkpoint_body,
    checkpoint_name,
    first_slot_after,
    next_slot,
    owned_by,
    plan,
    protected_names,
    rfc3339,
    slot_offset,
)

NS, POLICY, POLICY_UID = "team-a", "train", "policy-uid"
NOW = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def policy(every: str | None = "60s", keep: int = 2, **spec: Any) -> Policy:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": "train"}}, "keepLast": keep,
                            **spec}
    if every is not None:
        body["every"] = every
    return Policy(NS, POLICY, POLICY_UID, CheckpointPolicySpec.from_resource(body))


def pod(name: str, *, owner: tuple[str, str] | None = None, phase: str = "Running",
        node: str = "node-1", started: dt.datetime = NOW - dt.timedelta(hours=1),
        deleting: bool = False, uid: str | None = None) -> PodView:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": uid or f"uid-{name}",
                            "creationTimestamp": rfc3339(started)}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "uid": f"uid-{owner[1]}",
                                    "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = rfc3339(NOW)
    return PodView.of({"metadata": meta, "spec": {"nodeName": node},
                       "status": {"phase": phase, "startTime": rfc3339(started)}})


def checkpoint(of: PodView, created: dt.datetime, phase: str = "Ready", *,
               name: str | None = None, message: str = "",
               deleting: bool = False) -> CheckpointView:
    return CheckpointView.of(body(of, created, phase, name=name, message=message,
                                  deleting=deleting))


def body(of: PodView, created: dt.datetime, phase: str = "Ready", *, name: str | None = None,
         message: str = "", deleting: bool = False, owner_uid: str = POLICY_UID
         ) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name or f"{of.name}-{created:%H%M%S}",
        "uid": f"uid-{name or of.name}-{created:%H%M%S}",
        "creationTimestamp": rfc3339(created),
        "labels": {"ckpt.dev/policy": POLICY, "ckpt.dev/lineage": of.lineage.label_value},
        "annotations": {"ckpt.dev/workload": of.lineage.workload},
        "ownerReferences": [{"kind": "CheckpointPolicy", "name": POLICY, "uid": owner_uid,
                             "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = rfc3339(NOW)
    status = {"phase": phase, "message": message} if phase else {}
    return {"metadata": meta, "spec": {"podName": of.name}, "status": status}


# A loop that has run for long: every slot of the last hour is its to take.
LONG_RUNNING = NOW - dt.timedelta(hours=1)


def run(p: Policy, pods: list[PodView], cps: list[CheckpointView], now: dt.datetime = NOW,
        protected: set[str] | None = None, since: dt.datetime = NOW) -> Plan:
    """A round at `now` of a loop that began at `since` (by default: now)."""
    return plan(p, pods, cps, protected or set(), now, since)


def slot(of: PodView, at_or_after: dt.datetime, every: float = 60) -> dt.datetime:
    """The pod's first slot at or after the time given."""
    return first_slot_after(at_or_after - dt.timedelta(microseconds=1), every,
                            slot_offset(of.uid, every))


# -- when a checkpoint falls due ----------------------------------------------------------------


def test_a_new_policy_spreads_the_first_checkpoints_over_one_period() -> None:
    """Pods that have run for long are not all checkpointed the moment a policy appears: each
    waits for its own slot, and the slots spread over the period."""
    pods = [pod(f"w{i}") for i in range(100)]
    first = run(policy(), pods, [])
    dues = [next_slot(p, None, 60, NOW) for p in pods]
    assert all(NOW < d <= NOW + dt.timedelta(seconds=60) for d in dues)
    # Only the pods whose slot is less than a second away are taken in this round.
    soon = NOW + dt.timedelta(seconds=1)
    assert {c.pod.name for c in first.create} == {p.name for p, d in zip(pods, dues,
                                                                          strict=True)
                                                   if d < soon}
    assert len(first.create) <= 10  # of 100
    assert first.next_due == min(d for d in dues if d >= soon)
    # Spread: every tenth of the period has some of them, none more than twice its share.
    tenths = [int((d - NOW).total_seconds() // 6) for d in dues]
    assert sorted(set(tenths)) == list(range(10))
    assert max(tenths.count(t) for t in range(10)) <= 20
    # At each pod's slot, that pod gets its checkpoint, and not a second earlier.
    for p, due in zip(pods[:10], dues[:10], strict=True):
        created = run(policy(), [p], [], now=due).create
        assert [c.pod.name for c in created] == [p.name]
        assert run(policy(), [p], [], now=due - dt.timedelta(seconds=1)).create == []


def test_the_next_checkpoint_is_one_period_after_the_last() -> None:
    p = pod("w")
    taken = slot(p, NOW)
    # The apiserver's creationTimestamp is a little after the slot, or (clock skew) a little
    # before it: either way the next one is a whole period later, never the same slot again.
    for created in (taken + dt.timedelta(seconds=1), taken - dt.timedelta(seconds=2)):
        last = checkpoint(p, created)
        result = run(policy(), [p], [last], now=taken + dt.timedelta(seconds=3),
                     since=LONG_RUNNING)
        assert result.create == []
        assert result.next_due == taken + dt.timedelta(seconds=60)
        assert run(policy(), [p], [last], now=taken + dt.timedelta(seconds=60),
                   since=LONG_RUNNING).create


def test_a_new_pod_waits_at_least_half_a_period() -> None:
    p = pod("w", started=NOW - dt.timedelta(seconds=10))
    result = run(policy(), [p], [], since=LONG_RUNNING)
    assert result.create == []
    assert result.next_due == slot(p, NOW + dt.timedelta(seconds=20))


def test_a_checkpoint_in_flight_blocks_the_next() -> None:
    p = pod("w")
    for phase in ("", "Pending", "Checkpointing", "Uploading"):
        stuck = checkpoint(p, NOW - dt.timedelta(minutes=5), phase)
        result = run(policy(), [p], [stuck], since=LONG_RUNNING)
        assert result.create == [] and result.next_due is None, phase
    # Once it is over, the slots it kept the pod from are made up by one checkpoint, now.
    done = checkpoint(p, NOW - dt.timedelta(minutes=5), "Failed")
    result = run(policy(), [p], [done], since=LONG_RUNNING)
    assert [c.slot for c in result.create] == [slot(p, NOW - dt.timedelta(seconds=270))]
    assert result.next_due == slot(p, NOW + dt.timedelta(seconds=30))


def test_a_slot_passed_while_the_loop_runs_is_taken_late_once() -> None:
    p = pod("w")
    last_slot = slot(p, NOW - dt.timedelta(minutes=10))
    missed = last_slot + dt.timedelta(seconds=60)
    last = checkpoint(p, last_slot + dt.timedelta(seconds=1))
    result = run(policy(), [p], [last], now=missed + dt.timedelta(seconds=40),
                 since=LONG_RUNNING)
    assert [(c.pod.name, c.slot) for c in result.create] == [("w", missed)]
    assert result.create[0].name == checkpoint_name(POLICY_UID, p, missed)
    # Taken now, the next one comes a period after it.
    assert result.next_due == missed + dt.timedelta(seconds=120)


def test_missed_periods_are_not_piled_up() -> None:
    """After an operator restart the schedule comes from the Checkpoints: one checkpoint per
    pod at most, at the pod's next slot (the spread kept), never one per missed period."""
    pods = [pod(f"w{i}") for i in range(10)]
    long_ago = NOW - dt.timedelta(minutes=30)
    history = [checkpoint(p, slot(p, long_ago)) for p in pods]
    result = run(policy(), pods, history)
    assert result.create == []
    assert result.next_due is not None
    assert NOW < result.next_due <= NOW + dt.timedelta(seconds=60)
    later = [run(policy(), pods, history, now=slot(p, NOW), since=NOW).create for p in pods]
    assert all(len([c for c in created if c.pod.name == p.name]) == 1
               for p, created in zip(pods, later, strict=True))


def test_only_running_pods_on_a_node_are_checkpointed() -> None:
    pods = [
        pod("running"),
        pod("pending", phase="Pending", node=""),
        pod("scheduled", phase="Pending"),
        pod("going", deleting=True),
        pod("done", phase="Succeeded"),
        pod("crashed", phase="Failed"),
    ]
    result = run(policy(), pods, [], now=slot(pods[0], NOW))
    assert [c.pod.name for c in result.create] == ["running"]
    # Covered: not finished and not going away.
    assert result.pods_covered == 3


def test_without_every_nothing_is_created_and_pruning_goes_on() -> None:
    p = pod("w")
    old = [checkpoint(p, NOW - dt.timedelta(minutes=m)) for m in (1, 2, 3)]
    result = run(policy(every=None, keep=1), [p], old, since=LONG_RUNNING)
    assert result.create == [] and result.next_due is None
    assert sorted(d.name for d in result.delete) == sorted(c.name for c in old[1:])


# -- what is created ----------------------------------------------------------------------------


def test_the_checkpoint_is_leave_running_labelled_owned_and_deletes_its_archive() -> None:
    p = pod("train-x7k2q", owner=("Job", "train"))
    p_policy = policy(storage="node-local")
    new = run(p_policy, [p], [], now=slot(p, NOW)).create[0]
    made = checkpoint_body(p_policy, new)
    assert made["apiVersion"] == "ckpt.dev/v1alpha1" and made["kind"] == "Checkpoint"
    meta = made["metadata"]
    assert meta["name"] == new.name and meta["namespace"] == NS
    assert meta["labels"] == {"ckpt.dev/policy": POLICY,
                              "ckpt.dev/lineage": p.lineage.label_value}
    assert meta["annotations"] == {"ckpt.dev/workload": "Job/train"}
    assert meta["ownerReferences"] == [{
        "apiVersion": "ckpt.dev/v1alpha1", "kind": "CheckpointPolicy", "name": POLICY,
        "uid": POLICY_UID, "controller": True,
    }]
    spec = CheckpointSpec.from_resource(made["spec"])
    assert (spec.pod_name, spec.leave_running, spec.retain_policy.value, spec.storage) == (
        "train-x7k2q", True, "Delete", "node-local")
    # It reads back as the policy's own, in flight.
    back = CheckpointView.of({**made, "metadata": {**meta, "creationTimestamp": rfc3339(NOW)}})
    assert owned_by(made, POLICY_UID) and back.in_flight
    assert (back.pod, back.lineage, back.workload) == (p.name, p.lineage.label_value,
                                                        "Job/train")


def test_names_fit_a_label_are_stable_and_distinct() -> None:
    long = pod("x" * 200)
    at = dt.datetime(2026, 12, 7, 9, 5, 3, 700000, tzinfo=dt.UTC)
    name = checkpoint_name(POLICY_UID, long, at)
    assert len(name) <= 63 and DNS_LABEL.match(name)
    assert re.search(r"-20261207-090503-[0-9a-f]{5}$", name)
    assert name == checkpoint_name(POLICY_UID, long, at)
    short = pod("web-0")
    assert checkpoint_name(POLICY_UID, short, at).startswith("web-0-20261207-090503-")
    # Another policy over the same pod, another pod of the same name: other names.
    assert checkpoint_name("other-policy", short, at) != checkpoint_name(POLICY_UID, short, at)
    assert checkpoint_name(POLICY_UID, pod("web-0", uid="new"), at) != checkpoint_name(
        POLICY_UID, short, at)
    dotted = pod("a.b-" + "c" * 36 + ".d")
    assert DNS_LABEL.match(checkpoint_name(POLICY_UID, dotted, at).replace(".", "-"))


# -- keep-last ----------------------------------------------------------------------------------


def test_ready_checkpoints_beyond_keep_last_are_deleted_oldest_first() -> None:
    p = pod("w")
    ready = [checkpoint(p, NOW - dt.timedelta(minutes=m)) for m in (1, 2, 3, 4, 5)]
    in_flight = checkpoint(p, NOW - dt.timedelta(seconds=5), "Checkpointing")
    going = checkpoint(p, NOW - dt.timedelta(minutes=9), deleting=True)
    result = run(policy(keep=2), [p], [*ready, in_flight, going])
    assert [d.name for d in result.delete] == [c.name for c in ready[2:]]
    assert {d.uid for d in result.delete} == {c.uid for c in ready[2:]}
    [lineage] = result.lineages
    assert (lineage.ready, lineage.latest_ready, lineage.latest_ready_at) == (
        2, ready[0].name, rfc3339(ready[0].created))
    assert (lineage.workload, lineage.pods) == ("Pod/w", ["w"])


def test_a_checkpoint_an_unfinished_restore_names_is_kept() -> None:
    p = pod("w")
    ready = [checkpoint(p, NOW - dt.timedelta(minutes=m)) for m in (1, 2, 3)]
    result = run(policy(keep=1), [p], ready, protected={ready[2].name})
    assert [d.name for d in result.delete] == [ready[1].name]
    restores = [
        {"metadata": {"name": "r1"}, "spec": {"checkpointName": "a"}},
        {"metadata": {"name": "r2"}, "spec": {"checkpointName": "b"},
         "status": {"phase": "Staging"}},
        {"metadata": {"name": "r3"}, "spec": {"checkpointName": "c"},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "r4"}, "spec": {"checkpointName": "d"},
         "status": {"phase": "Failed"}},
        {"metadata": {"name": "r5", "deletionTimestamp": rfc3339(NOW)},
         "spec": {"checkpointName": "e"}},
    ]
    assert protected_names(restores) == {"a", "b"}


def test_a_replacement_continues_its_lineage_history() -> None:
    """A Job's pod replaced by another: one lineage, so the old pod's checkpoints count
    towards keepLast and go first."""
    gone = pod("train-aaaaa", owner=("Job", "train"))
    new = pod("train-bbbbb", owner=("Job", "train"))
    assert gone.lineage == new.lineage
    old = [checkpoint(gone, NOW - dt.timedelta(minutes=m)) for m in (10, 11, 12)]
    fresh = [checkpoint(new, NOW - dt.timedelta(minutes=m)) for m in (1, 2)]
    result = run(policy(keep=3), [new], [*old, *fresh])
    assert sorted(d.name for d in result.delete) == sorted(c.name for c in old[1:])
    [lineage] = result.lineages
    assert (lineage.workload, lineage.pods, lineage.ready) == ("Job/train", [new.name], 3)


def test_a_lineage_of_several_pods_keeps_keep_last_per_pod() -> None:
    """A ReplicaSet's replicas share a lineage; each keeps its own history instead of the
    newest replica's checkpoints pushing out the others'."""
    replicas = [pod(f"web-{i}", owner=("ReplicaSet", "web-5d4f9")) for i in range(3)]
    history = [checkpoint(r, NOW - dt.timedelta(minutes=m, seconds=i))
               for m in (1, 2, 3) for i, r in enumerate(replicas)]
    result = run(policy(keep=2), replicas, history)
    deleted = {d.name for d in result.delete}
    assert deleted == {c.name for c in history if c.created <= NOW - dt.timedelta(minutes=3)}
    assert result.lineages[0].ready == 6
    # Scaled down to one replica: the lineage shrinks to keepLast.
    assert len(run(policy(keep=2), replicas[:1], history).delete) == 7


def test_failed_checkpoints_stay_only_to_say_why_a_pod_fails() -> None:
    p, gone = pod("w"), pod("gone")
    newest_failed = checkpoint(p, NOW - dt.timedelta(minutes=1), "Failed",
                               message="DumpFailed: unix: External socket is used")
    older_failed = checkpoint(p, NOW - dt.timedelta(minutes=3), "Failed")
    ready = checkpoint(p, NOW - dt.timedelta(minutes=2))
    gone_failed = checkpoint(gone, NOW - dt.timedelta(minutes=1), "Failed")
    result = run(policy(keep=3), [p], [newest_failed, older_failed, ready, gone_failed])
    assert sorted(d.name for d in result.delete) == sorted([older_failed.name,
                                                            gone_failed.name])
    assert result.failing == [
        f"w: {newest_failed.name} failed: DumpFailed: unix: External socket is used"
    ]
    # A Ready one after it: the failure is history, deleted, and nothing is failing.
    recovered = checkpoint(p, NOW - dt.timedelta(seconds=10))
    result = run(policy(keep=3), [p], [newest_failed, ready, recovered])
    assert [d.name for d in result.delete] == [newest_failed.name]
    assert result.failing == []


def test_lineages_without_pods_keep_their_history_and_workload() -> None:
    gone = pod("db-0", owner=("StatefulSet", "db"))
    live = pod("w")
    history = [checkpoint(gone, NOW - dt.timedelta(minutes=m)) for m in (5, 6, 7, 8)]
    mine = [checkpoint(live, NOW - dt.timedelta(minutes=1))]
    result = run(policy(keep=3), [live], [*history, *mine])
    assert [d.name for d in result.delete] == [history[3].name]
    # The most recently checkpointed first.
    assert [(s.workload, s.pods, s.ready) for s in result.lineages] == [
        ("Pod/w", ["w"], 1), ("StatefulSet/db/0", [], 3)]


def test_only_the_policys_own_checkpoints_are_its_own() -> None:
    p = pod("w")
    assert owned_by(body(p, NOW), POLICY_UID)
    assert not owned_by(body(p, NOW, owner_uid="another-policy"), POLICY_UID)
    copied = body(p, NOW)
    copied["metadata"].pop("ownerReferences")
    assert not owned_by(copied, POLICY_UID)


# -- selectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "query"),
    [
        ({"matchLabels": {"app": "train", "tier": "gpu"}}, "app=train,tier=gpu"),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
         "app in (a,b)"),
        ({"matchLabels": {"app": "x"},
          "matchExpressions": [
              {"key": "env", "operator": "NotIn", "values": ["dev"]},
              {"key": "ckpt.dev/opt-in", "operator": "Exists"},
              {"key": "legacy", "operator": "DoesNotExist"}]},
         "app=x,env notin (dev),ckpt.dev/opt-in,!legacy"),
    ],
)
def test_selector_query(selector: dict[str, Any], query: str) -> None:
    spec = CheckpointPolicySpec.from_resource({"selector": selector})
    assert spec.selector.query() == query


def test_lineage_of_the_pod_view_is_the_lineage_module() -> None:
    raw = {"metadata": {"name": "db-1", "uid": "u", "creationTimestamp": rfc3339(NOW),
                        "ownerReferences": [{"kind": "StatefulSet", "name": "db",
                                             "uid": "s", "controller": True}]},
           "status": {"phase": "Running"}, "spec": {"nodeName": "n"}}
    view = PodView.of(raw)
    assert view.lineage == lineage_of(raw)
    assert view.started == NOW  # no startTime yet: its creation
