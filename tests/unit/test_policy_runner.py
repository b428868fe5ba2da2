"""The CheckpointPolicy loop (`PolicyRunner`) in process: a small fake of the apiserver whose
Checkpoints go Ready (or Failed) a few seconds after they are created, as the operator's
Checkpoint flow would take them, and looptime's virtual clock, so minutes of periods run in
milliseconds and the times Checkpoints are created at can be asserted exactly."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest

from ckpt.operator.policy import (
    CHECKPOINTS_FAILING,
    MIN_WAIT_SECONDS,
    READY,
    RESYNC_SECONDS,
    ClusterError,
    PolicyRunner,
    rfc3339,
    slot_offset,
)

pytestmark = pytest.mark.looptime

NS = "team-a"
T0 = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    """Wall time on the loop's (virtual) clock."""
    return T0 + dt.timedelta(seconds=asyncio.get_running_loop().time())


def elapsed(when: dt.datetime) -> float:
    return (when - T0).total_seconds()


def slots(pod: str, every: float, after: float, until: float) -> list[float]:
    """The pod's slots (seconds since T0, a whole number of periods after the epoch)."""
    assert T0.timestamp() % every == 0
    offset = slot_offset(f"uid-{pod}", every)
    return [k * every + offset for k in range(int(until // every) + 1)
            if after < k * every + offset <= until]


def on_slots(times: list[float], expected: list[float]) -> bool:
    """Created at the slots, each on time or early by less than the loop's shortest pause (a
    slot that close is taken in the round at hand)."""
    return len(times) == len(expected) and all(
        -MIN_WAIT_SECONDS < t - s <= 1e-5 for t, s in zip(times, expected, strict=True))


class FakeCluster:
    """The apiserver as the loop sees it. A created Checkpoint gets a creationTimestamp and a
    uid, and `flow_seconds` later the phase the Checkpoint flow would give it."""

    def __init__(self, flow_seconds: float = 3.0) -> None:
        self.flow_seconds = flow_seconds
        self.pods: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.restores: list[dict[str, Any]] = []
        self.created: list[tuple[float, str, str]] = []  # (seconds since T0, name, pod)
        self.deleted: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.selectors: list[str] = []
        self.failing_pods: set[str] = set()
        self.fail: dict[str, list[ClusterError]] = defaultdict(list)
        self.failed_at: list[float] = []
        self._serial = 0

    def add_pod(self, name: str, labels: Mapping[str, str] | None = None,
                owner: tuple[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}",
                                "labels": dict(labels or {"app": "train"}),
                                "creationTimestamp": rfc3339(clock())}
        if owner:
            meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1],
                                        "uid": f"uid-{owner[1]}", "controller": True}]
        self.pods[name] = {"metadata": meta, "spec": {"nodeName": "node-1"},
                           "status": {"phase": "Running", "startTime": rfc3339(clock())}}

    def _enter(self, method: str) -> None:
        if self.fail[method]:
            self.failed_at.append(elapsed(clock()))
            raise self.fail[method].pop(0)

    async def list_pods(self, namespace: str, selector: str) -> list[Mapping[str, Any]]:
        self._enter("list_pods")
        self.selectors.append(selector)
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        return [p for p in self.pods.values()
                if wanted.items() <= p["metadata"]["labels"].items()]

    async def list_checkpoints(self, namespace: str, policy: str) -> list[Mapping[str, Any]]:
        self._enter("list_checkpoints")
        return [c for c in self.checkpoints.values()
                if c["metadata"]["labels"].get("ckpt.dev/policy") == policy]

    async def list_restores(self, namespace: str) -> list[Mapping[str, Any]]:
        self._enter("list_restores")
        return self.restores

    async def create_checkpoint(self, namespace: str, body: Mapping[str, Any]) -> None:
        self._enter("create_checkpoint")
        name, pod = body["metadata"]["name"], body["spec"]["podName"]
        if name in self.checkpoints:
            return
        assert not self.in_flight(pod), f"a second Checkpoint of {pod} while one is in flight"
        self._serial += 1
        made = {**body, "metadata": {**body["metadata"], "uid": f"uid-{self._serial}",
                                     "creationTimestamp": rfc3339(clock())}, "status": {}}
        self.checkpoints[name] = made
        self.created.append((elapsed(clock()), name, pod))
        asyncio.get_running_loop().call_later(self.flow_seconds, self._finish, name)

    def _finish(self, name: str) -> None:
        made = self.checkpoints.get(name)
        if made is not None:
            failed = made["spec"]["podName"] in self.failing_pods
            made["status"] = ({"phase": "Failed", "message": "DumpFailed: no reason"}
                              if failed else {"phase": "Ready"})

    async def delete_checkpoint(self, namespace: str, name: str, uid: str) -> None:
        self._enter("delete_checkpoint")
        found = self.checkpoints.get(name)
        if found is not None and found["metadata"]["uid"] == uid:
            del self.checkpoints[name]
            self.deleted.append(name)

    async def patch_policy_status(self, namespace: str, name: str,
                                  status: Mapping[str, Any]) -> None:
        self._enter("patch_policy_status")
        self.statuses.append(dict(status))

    def in_flight(self, pod: str) -> bool:
        return any(c["spec"]["podName"] == pod and c["status"].get("phase") not in
                   ("Ready", "Failed") for c in self.checkpoints.values())

    def ready_of(self, pod: str) -> list[str]:
        return sorted(n for n, c in self.checkpoints.items()
                      if c["spec"]["podName"] == pod and c["status"].get("phase") == "Ready")

    def created_at(self, pod: str) -> list[float]:
        return [t for t, _, p in self.created if p == pod]

    @property
    def status(self) -> dict[str, Any]:
        return self.statuses[-1]


def policy(name: str = "train", namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "policy-uid",
                     "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "train"}}, **spec},
    }


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


async def run_for(runner: PolicyRunner, seconds: float) -> None:
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def runner(cluster: FakeCluster, body: Mapping[str, Any]) -> PolicyRunner:
    return PolicyRunner(cluster, body, operator_namespace="ckpt-system", clock=clock)


async def test_pods_are_checkpointed_every_period_spread_and_pruned_to_keep_last() -> None:
    cluster = FakeCluster()
    for name in ("w0", "w1", "w2"):
        cluster.add_pod(name)
    cluster.add_pod("other", labels={"app": "web"})
    await run_for(runner(cluster, policy(every="20s", keepLast=2)), 200)

    assert cluster.selectors[0] == "app=train"
    assert cluster.created_at("other") == []
    firsts = []
    for name in ("w0", "w1", "w2"):
        times = cluster.created_at(name)
        # Each pod at its own slots, a period apart, from half a period after it started.
        expected = slots(name, 20, 10, 200)
        assert on_slots(times, expected), (times, expected)
        firsts.append(times[0])
        # keepLast Ready ones are left (and the newest, still in flight, if any).
        assert len(cluster.ready_of(name)) == 2
        # The oldest went: all but the newest Ready ones.
        deleted = [n for n in cluster.deleted if cluster.created[[c[1] for c in
                                                                  cluster.created].index(n)][2]
                   == name]
        ready_at_end = len(times) - (1 if cluster.in_flight(name) else 0)
        assert len(deleted) == ready_at_end - 2
    assert len(set(firsts)) == 3  # spread, not at one moment
    assert set(cluster.deleted).isdisjoint(cluster.checkpoints)

    status = cluster.status
    assert status["podsCovered"] == 3 and status["lineageCount"] == 3
    assert {s["workload"]: s["ready"] for s in status["lineages"]} == {
        "Pod/w0": 2, "Pod/w1": 2, "Pod/w2": 2}
    newest = max(cluster.ready_of("w0") + cluster.ready_of("w1") + cluster.ready_of("w2"),
                 key=lambda n: cluster.checkpoints[n]["metadata"]["creationTimestamp"])
    assert status["lastCheckpoint"] == newest
    assert condition(status, READY)["status"] == "True"
    assert condition(status, CHECKPOINTS_FAILING)["status"] == "False"
    assert status["message"] == "3 pods covered; checkpointed every 20s, keeping 2 per lineage"
    assert status["observedGeneration"] == 1


async def test_at_most_one_checkpoint_in_flight_per_pod() -> None:
    # The flow takes longer than the period: the pod's next checkpoint waits for the last.
    cluster = FakeCluster(flow_seconds=50)
    cluster.add_pod("w0")
    await run_for(runner(cluster, policy(every="20s", keepLast=5)), 300)
    times = cluster.created_at("w0")
    assert len(times) >= 4
    # The next one as soon as the last is over, seen within one resync, and one only.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(50 <= gap <= 50 + RESYNC_SECONDS for gap in gaps), gaps


async def test_a_restarted_loop_does_not_pile_up_missed_periods() -> None:
    cluster = FakeCluster()
    for name in ("w0", "w1", "w2", "w3"):
        cluster.add_pod(name)
    body = policy(every="20s", keepLast=3)
    await run_for(runner(cluster, body), 60)
    before = len(cluster.created)
    # The operator is away for 15 periods, then a new loop starts with nothing remembered.
    await asyncio.sleep(300)
    restart = asyncio.get_running_loop().time()
    await run_for(runner(cluster, body), 20)
    after = [(t, pod) for t, _, pod in cluster.created[before:]]
    # One checkpoint per pod in the first period, each at its own slot (the spread kept), not
    # fifteen, and not all at the restart.
    assert sorted(pod for _, pod in after) == ["w0", "w1", "w2", "w3"]
    assert all(t >= restart for t, _ in after)
    assert len({t for t, _ in after}) == 4
    # The slots are the ones the first loop used: a period apart from its checkpoints.
    for t, pod in after:
        assert abs((t - cluster.created_at(pod)[0]) % 20) < 1e-6


async def test_a_pod_whose_checkpoints_fail_is_named_and_its_failures_do_not_pile_up() -> None:
    cluster = FakeCluster()
    cluster.add_pod("good")
    cluster.add_pod("bad")
    cluster.failing_pods.add("bad")
    await run_for(runner(cluster, policy(every="20s", keepLast=2)), 120)
    status = cluster.status
    failing = condition(status, CHECKPOINTS_FAILING)
    assert failing["status"] == "True" and failing["reason"] == "CheckpointFailed"
    assert failing["message"].startswith("bad: bad-") and "DumpFailed: no reason" in failing[
        "message"]
    # Only the newest failure is kept; every slot was still tried (no retry storm, no stop).
    bad = [c for c in cluster.checkpoints.values() if c["spec"]["podName"] == "bad"]
    assert len(bad) <= 2 and sum(c["status"].get("phase") == "Failed" for c in bad) == 1
    assert on_slots(cluster.created_at("bad"), slots("bad", 20, 10, 120))
    assert condition(status, READY)["status"] == "True"


async def test_a_failed_list_is_reported_and_retried() -> None:
    cluster = FakeCluster()
    cluster.add_pod("w0")
    cluster.fail["list_pods"].append(ClusterError("listing pods: 500 boom", status=500))
    task = asyncio.create_task(runner(cluster, policy(every="20s")).run())
    await asyncio.sleep(1)
    ready = condition(cluster.status, READY)
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ListFailed", "listing pods: 500 boom")
    await asyncio.sleep(RESYNC_SECONDS)
    assert condition(cluster.status, READY)["status"] == "True"
    assert cluster.status["message"].startswith("1 pod covered")
    task.cancel()


async def test_a_namespace_without_the_pod_list_grant_says_how_to_give_it() -> None:
    cluster = FakeCluster()
    cluster.fail["list_pods"].append(
        ClusterError("listing pods 'app=train': 403 Forbidden: pods is forbidden", status=403))
    await runner(cluster, policy(every="20s")).round()
    ready = condition(cluster.status, READY)
    assert (ready["status"], ready["reason"]) == ("False", "PodsForbidden")
    assert ("kubectl -n team-a create rolebinding ckpt-operator-list-pods "
            "--clusterrole=ckpt-operator-list-pods "
            "--serviceaccount=ckpt-system:ckpt-operator") in ready["message"]


async def test_only_a_refused_pod_list_asks_for_the_pod_list_grant() -> None:
    cluster = FakeCluster()
    cluster.fail["list_checkpoints"].append(
        ClusterError("listing the policy's Checkpoints: 403 Forbidden", status=403))
    await runner(cluster, policy(every="20s")).round()
    ready = condition(cluster.status, READY)
    assert (ready["reason"], ready["message"]) == (
        "ListFailed", "listing the policy's Checkpoints: 403 Forbidden")


async def test_a_failed_create_is_reported_and_the_slot_taken_at_the_next_round() -> None:
    cluster = FakeCluster()
    cluster.add_pod("w0")
    cluster.fail["create_checkpoint"].append(ClusterError("creating a Checkpoint: 500 etcd"))
    first = slots("w0", 20, 10, 30)[0]
    await run_for(runner(cluster, policy(every="20s")), first + RESYNC_SECONDS + 1)
    statuses = [condition(s, READY) for s in cluster.statuses]
    assert any(c["reason"] == "ApiError" and "creating Checkpoint w0-" in c["message"]
               and "500 etcd" in c["message"] for c in statuses)
    [failed] = cluster.failed_at
    assert first - MIN_WAIT_SECONDS < failed <= first + 1e-5
    assert cluster.created_at("w0") == [pytest.approx(failed + RESYNC_SECONDS)]
    assert condition(cluster.status, READY)["status"] == "True"


async def test_ckpts_own_namespace_is_refused() -> None:
    cluster = FakeCluster()
    await runner(cluster, policy(namespace="ckpt-system", every="20s")).round()
    ready = condition(cluster.status, READY)
    assert (ready["status"], ready["reason"]) == ("False", "OperatorNamespace")
    assert cluster.selectors == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"every": "5s"}, "spec.every: every must be between 10s and 720h (30 days), not 5s"),
        ({"every": "5 minutes"}, "spec.every: '5 minutes' is not a duration in h, m and s"),
        ({"selector": {}}, "an empty selector would cover every pod of the namespace"),
    ],
)
async def test_an_invalid_spec_is_reported(spec: dict[str, Any], message: str) -> None:
    cluster = FakeCluster()
    wait = await runner(cluster, policy(**spec)).round()
    ready = condition(cluster.status, READY)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert message in ready["message"]
    assert cluster.status["message"] == ready["message"]
    assert wait == RESYNC_SECONDS and cluster.selectors == []


async def test_a_name_too_long_for_the_label_is_reported() -> None:
    cluster = FakeCluster()
    await runner(cluster, policy(name="p" * 64, every="20s")).round()
    assert condition(cluster.status, READY)["reason"] == "InvalidName"


async def test_spec_edits_apply_at_the_next_round() -> None:
    cluster = FakeCluster()
    cluster.add_pod("w0")
    body = policy(every="20s", keepLast=3)
    task = asyncio.create_task(runner(cluster, body).run())
    await asyncio.sleep(100)
    assert len(cluster.ready_of("w0")) == 3
    # kopf updates the body in place; the loop reads it every round.
    body["spec"] = {**body["spec"], "keepLast": 1}
    del body["spec"]["every"]
    made = len(cluster.created)
    await asyncio.sleep(RESYNC_SECONDS + 1)
    assert len(cluster.ready_of("w0")) == 1
    await asyncio.sleep(100)
    assert len(cluster.created) == made
    assert cluster.status["message"] == (
        "1 pod covered; no periodic checkpoints (spec.every is not set)")
    task.cancel()


async def test_status_is_written_only_when_it_changes() -> None:
    cluster = FakeCluster()
    cluster.add_pod("w0")
    await run_for(runner(cluster, policy()), 10 * RESYNC_SECONDS)
    assert len(cluster.statuses) == 1


async def test_a_checkpoint_a_restore_is_staging_from_is_not_pruned() -> None:
    cluster = FakeCluster()
    cluster.add_pod("w0")
    body = policy(every="20s", keepLast=1)
    task = asyncio.create_task(runner(cluster, body).run())
    await asyncio.sleep(30)
    [first] = cluster.ready_of("w0")
    cluster.restores.append({"metadata": {"name": "r"}, "spec": {"checkpointName": first},
                             "status": {"phase": "Staging"}})
    await asyncio.sleep(60)
    assert first in cluster.checkpoints and first not in cluster.deleted
    cluster.restores[0]["status"]["phase"] = "Running"
    await asyncio.sleep(RESYNC_SECONDS + 1)
    assert first in cluster.deleted
    task.cancel()


async def test_a_job_replacement_continues_the_lineage() -> None:
    cluster = FakeCluster()
    cluster.add_pod("train-aaaaa", owner=("Job", "train"))
    body = policy(every="20s", keepLast=2)
    task = asyncio.create_task(runner(cluster, body).run())
    await asyncio.sleep(70)
    old = cluster.ready_of("train-aaaaa")
    assert len(old) == 2
    # The pod dies; the Job's replacement is another pod of the same lineage.
    del cluster.pods["train-aaaaa"]
    cluster.add_pod("train-bbbbb", owner=("Job", "train"))
    await asyncio.sleep(60)
    assert cluster.ready_of("train-bbbbb")
    assert len(cluster.ready_of("train-aaaaa") + cluster.ready_of("train-bbbbb")) == 2
    [lineage] = cluster.status["lineages"]
    assert (lineage["workload"], lineage["pods"], lineage["ready"]) == (
        "Job/train", ["train-bbbbb"], 2)
    labels = {c["metadata"]["labels"]["ckpt.dev/lineage"] for c in cluster.checkpoints.values()}
    assert len(labels) == 1
    task.cancel()
