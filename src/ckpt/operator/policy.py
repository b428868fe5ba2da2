"""CheckpointPolicy: periodic checkpoints of the pods a policy selects, and keep-last pruning.

`plan` is a pure function of (policy, pods, the policy's Checkpoints, protected names, now) and
says which Checkpoints to create and which to delete, and when the next one falls due.
`PolicyRunner` is the loop around it (one per policy, run by a kopf daemon): list, plan, act,
write the status, sleep until the next due time or the next resync.

Timing. Each pod has its own slots, `every` apart, shifted by a hash of its uid so that the
pods of a policy spread over the period instead of dumping at once. Nothing is remembered
between rounds: a pod's next slot is the first one at least half a period after its latest
Checkpoint (any phase; creationTimestamp), or after its start when it has none, so a restarted
operator carries on where the Checkpoints say. The half period keeps a clock skew between the
operator and the apiserver (creationTimestamp) from making the slot just taken due again.
Slots that passed before the loop began (the operator was away, or the policy is new over pods
that have run for long) are not caught up: the pod takes its first slot after the loop began,
so the pods stay spread instead of all dumping at the start, and each gets one Checkpoint,
never one per missed period. A slot that passes while the loop runs but finds the pod busy (a
Checkpoint in flight: a pod gets no second one) is taken as soon as the pod is free, once.

Keep-last. Per lineage, the newest `keepLast` Ready Checkpoints stay, times the pods the
lineage runs now where it runs several at once (a ReplicaSet's replicas each keep their own
history instead of crowding each other out). A Failed Checkpoint stays only while it is the
newest finished one of a pod the policy covers (it says why that pod's checkpoints fail).
Deleting a Checkpoint deletes its archive (the policy's Checkpoints have `retainPolicy:
Delete`). A Checkpoint that an unfinished Restore names is never deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from ckpt.apis.checkpoint import GROUP, KIND, VERSION, CheckpointSpec, Phase, RetainPolicy
from ckpt.apis.policy import (
    LINEAGE_LABEL,
    MAX_POLICY_NAME,
    MAX_STATUS_LINEAGES,
    POLICY_KIND,
    POLICY_LABEL,
    WORKLOAD_ANNOTATION,
    CheckpointPolicySpec,
    CheckpointPolicyStatus,
    LineageStatus,
)
from ckpt.apis.restore import RestorePhase
from ckpt.operator.conditions import set_condition
from ckpt.operator.lineage import Lineage, lineage_of

log = logging.getLogger(__name__)

# Condition types on the policy's status.
READY = "Ready"
CHECKPOINTS_FAILING = "CheckpointsFailing"
# Seconds between rounds when nothing falls due sooner: how soon a new pod, a Ready checkpoint
# to prune or a spec edit is seen.
RESYNC_SECONDS = 10.0
# The shortest pause between rounds, so that the loop cannot spin; a slot less than this
# ahead is taken in the round at hand (a timer may also fire a hair before its time).
MIN_WAIT_SECONDS = 1.0
# The operator's ServiceAccount and the ClusterRole that lets it list a namespace's pods, as
# deploy/ names them (the role is bound per namespace: see deploy/base/operator-rbac.yaml).
OPERATOR_SERVICE_ACCOUNT = "ckpt-operator"
LIST_PODS_ROLE = "ckpt-operator-list-pods"
_RESTORE_DONE = {RestorePhase.Running.value, RestorePhase.Failed.value}


class ClusterError(Exception):
    """A Kubernetes call of the policy loop failed; the round is retried at the next resync.
    `status` is the apiserver's HTTP status, None when it did not answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    uid: str
    spec: CheckpointPolicySpec


@dataclass(frozen=True)
class PodView:
    """What the plan needs of a selected pod."""

    name: str
    uid: str
    phase: str
    node: str
    started: dt.datetime
    deleting: bool
    lineage: Lineage

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodView:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        started = status.get("startTime") or meta.get("creationTimestamp")
        return cls(
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            phase=str(status.get("phase", "")),
            node=str((pod.get("spec") or {}).get("nodeName") or ""),
            started=parse_time(started) if started else dt.datetime.min.replace(tzinfo=dt.UTC),
            deleting=meta.get("deletionTimestamp") is not None,
            lineage=lineage_of(pod),
        )

    @property
    def covered(self) -> bool:
        """Counted as the policy's: not finished and not going away."""
        return not self.deleting and self.phase not in ("Succeeded", "Failed")

    @property
    def checkpointable(self) -> bool:
        return self.covered and self.phase == "Running" and bool(self.node)


@dataclass(frozen=True)
class CheckpointView:
    """What the plan needs of one of the policy's Checkpoints."""

    name: str
    uid: str
    pod: str
    lineage: str
    workload: str
    phase: str  # empty until the operator's flow writes a status
    created: dt.datetime
    deleting: bool
    message: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> CheckpointView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        return cls(
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            pod=str((body.get("spec") or {}).get("podName", "")),
            lineage=str((meta.get("labels") or {}).get(LINEAGE_LABEL, "")),
            workload=str((meta.get("annotations") or {}).get(WORKLOAD_ANNOTATION, "")),
            phase=str(status.get("phase") or ""),
            created=parse_time(str(meta.get("creationTimestamp", ""))),
            deleting=meta.get("deletionTimestamp") is not None,
            message=str(status.get("message") or ""),
        )

    @property
    def ready(self) -> bool:
        return self.phase == Phase.Ready.value

    @property
    def failed(self) -> bool:
        return self.phase == Phase.Failed.value

    @property
    def in_flight(self) -> bool:
        return not self.deleting and not self.ready and not self.failed

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (self.created, self.name)


def owned_by(body: Mapping[str, Any], policy_uid: str) -> bool:
    """Whether the policy's ownerReference is on the Checkpoint: a label alone can be copied
    onto anyone's Checkpoint, and the policy deletes only its own."""
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == POLICY_KIND and o.get("uid") == policy_uid for o in owners)


@dataclass(frozen=True)
class NewCheckpoint:
    name: str
    pod: PodView
    slot: dt.datetime


@dataclass(frozen=True)
class Doomed:
    name: str
    uid: str
    why: str


@dataclass
class Plan:
    create: list[NewCheckpoint] = field(default_factory=list)
    delete: list[Doomed] = field(default_factory=list)
    # The earliest slot still ahead (None: nothing periodic to do).
    next_due: dt.datetime | None = None
    pods_covered: int = 0
    lineages: list[LineageStatus] = field(default_factory=list)
    # "pod: why its latest checkpoint failed", for the CheckpointsFailing condition.
    failing: list[str] = field(default_factory=list)


# -- time ---------------------------------------------------------------------------------------


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def slot_offset(pod_uid: str, every: float) -> float:
    """Where in each period the pod's slot lies: a hash of its uid, spread evenly."""
    fraction = int.from_bytes(hashlib.sha256(pod_uid.encode()).digest()[:8], "big") / 2**64
    return fraction * every


def first_slot_after(when: dt.datetime, every: float, offset: float) -> dt.datetime:
    """The first of the slots `offset + k * every` (seconds of the Unix epoch) after `when`."""
    k = math.floor((when.timestamp() - offset) / every) + 1
    return dt.datetime.fromtimestamp(k * every + offset, dt.UTC)


def next_slot(
    pod: PodView, latest: dt.datetime | None, every: float, since: dt.datetime
) -> dt.datetime:
    """The pod's due time (see the module's docstring): its first slot at least half a period
    after its latest checkpoint (or its start), and after `since`, when the loop began."""
    anchor = latest if latest is not None else pod.started
    floor = max(anchor + dt.timedelta(seconds=every / 2), since)
    return first_slot_after(floor, every, slot_offset(pod.uid, every))


# -- names and bodies ---------------------------------------------------------------------------


def checkpoint_name(policy_uid: str, pod: PodView, slot: dt.datetime) -> str:
    """<pod>-<slot, UTC>-<hash of policy and pod>: at most 63 characters (the name is also a
    label value on a restored Pod), the same for the same slot (a repeated create is refused
    as AlreadyExists, never duplicated), and distinct between policies and between pods."""
    stamp = slot.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{policy_uid}\n{pod.uid}".encode()).hexdigest()[:5]
    head = pod.name[: 63 - len(stamp) - len(digest) - 2].rstrip("-.")
    return f"{head}-{stamp}-{digest}"


def checkpoint_body(policy: Policy, new: NewCheckpoint) -> dict[str, Any]:
    """A leave-running Checkpoint of the pod, owned by the policy; its archive goes with it."""
    spec = CheckpointSpec(
        pod_name=new.pod.name, leave_running=True, storage=policy.spec.storage,
        retain_policy=RetainPolicy.Delete,
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": new.name,
            "namespace": policy.namespace,
            "labels": {POLICY_LABEL: policy.name, LINEAGE_LABEL: new.pod.lineage.label_value},
            "annotations": {WORKLOAD_ANNOTATION: new.pod.lineage.workload},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": POLICY_KIND,
                "name": policy.name,
                "uid": policy.uid,
                "controller": True,
            }],
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def protected_names(restores: Iterable[Mapping[str, Any]]) -> set[str]:
    """The Checkpoints that unfinished Restores name: deleting one would fail the Restore."""
    return {
        str((r.get("spec") or {}).get("checkpointName", ""))
        for r in restores
        if (r.get("status") or {}).get("phase") not in _RESTORE_DONE
        and (r.get("metadata") or {}).get("deletionTimestamp") is None
    }


# -- the plan -----------------------------------------------------------------------------------


def plan(
    policy: Policy,
    pods: Iterable[PodView],
    checkpoints: Iterable[CheckpointView],
    protected: set[str],
    now: dt.datetime,
    since: dt.datetime,
) -> Plan:
    """What one round of the policy does at `now`, in a loop that began at `since`: pure, so
    that every timing rule is a unit test."""
    result = Plan()
    covered = [p for p in pods if p.covered]
    result.pods_covered = len(covered)
    live = [c for c in checkpoints if not c.deleting]
    mine: dict[tuple[str, str], list[CheckpointView]] = defaultdict(list)
    for c in live:
        mine[(c.lineage, c.pod)].append(c)

    every = policy.spec.every_seconds
    soon = now + dt.timedelta(seconds=MIN_WAIT_SECONDS)
    if every is not None:
        for pod in covered:
            if not pod.checkpointable:
                continue
            history = mine.get((pod.lineage.label_value, pod.name), [])
            if any(c.in_flight for c in history):
                continue  # at most one in flight per pod
            latest = max((c.created for c in history), default=None)
            due = next_slot(pod, latest, every, since)
            if due < soon:
                result.create.append(
                    NewCheckpoint(checkpoint_name(policy.uid, pod, due), pod, due)
                )
                due = next_slot(pod, max(now, due), every, since)
            if result.next_due is None or due < result.next_due:
                result.next_due = due

    _keep_last(policy, covered, live, protected, result)
    return result


def _keep_last(
    policy: Policy, covered: list[PodView], live: list[CheckpointView], protected: set[str],
    result: Plan,
) -> None:
    """Keep-last per lineage (see the module's docstring), and each lineage's status line."""
    pods_of: dict[str, list[PodView]] = defaultdict(list)
    for pod in covered:
        pods_of[pod.lineage.label_value].append(pod)
    by_lineage: dict[str, list[CheckpointView]] = defaultdict(list)
    for c in live:
        by_lineage[c.lineage].append(c)

    lineages: list[LineageStatus] = []
    for lineage in sorted(set(by_lineage) | set(pods_of)):
        group = sorted(by_lineage.get(lineage, []), key=lambda c: c.order, reverse=True)
        pods = pods_of.get(lineage, [])
        quota = policy.spec.keep_last * max(1, len(pods))
        ready = [c for c in group if c.ready]
        kept = ready[:quota]
        for c in ready[quota:]:
            if c.name in protected:
                kept.append(c)
            else:
                result.delete.append(Doomed(c.name, c.uid, f"beyond keepLast ({quota})"))
        # A Failed one stays while it is the newest finished checkpoint of a covered pod.
        newest_finished: dict[str, CheckpointView] = {}
        for c in group:
            if (c.ready or c.failed) and c.pod not in newest_finished:
                newest_finished[c.pod] = c
        pod_names = {p.name for p in pods}
        for c in group:
            if not c.failed:
                continue
            if c.pod in pod_names and newest_finished.get(c.pod) is c:
                result.failing.append(f"{c.pod}: {c.name} failed: {c.message or 'no message'}")
            elif c.name not in protected:
                result.delete.append(Doomed(c.name, c.uid, "failed, and superseded"))
        workload = pods[0].lineage.workload if pods else next(
            (c.workload for c in group if c.workload), lineage
        )
        newest = kept[0] if kept else None
        lineages.append(LineageStatus(
            lineage=lineage, workload=workload, pods=sorted(p.name for p in pods),
            ready=len(kept), latest_ready=newest.name if newest else None,
            latest_ready_at=rfc3339(newest.created) if newest else None,
        ))
    # The most recently checkpointed first, then by workload: a stable order for status.
    lineages.sort(key=lambda s: s.workload)
    lineages.sort(key=lambda s: s.latest_ready_at or "", reverse=True)
    result.lineages = lineages


# -- the loop -----------------------------------------------------------------------------------


class PolicyCluster(Protocol):
    """The Kubernetes calls of the policy loop (ckpt.operator.policy_kube); ClusterError when
    one fails. Creating a Checkpoint that exists and deleting one that is gone succeed."""

    async def list_pods(self, namespace: str, selector: str) -> list[Mapping[str, Any]]: ...

    async def list_checkpoints(self, namespace: str, policy: str) -> list[Mapping[str, Any]]:
        ...

    async def list_restores(self, namespace: str) -> list[Mapping[str, Any]]: ...

    async def create_checkpoint(self, namespace: str, body: Mapping[str, Any]) -> None: ...

    async def delete_checkpoint(self, namespace: str, name: str, uid: str) -> None: ...

    async def patch_policy_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PolicyRunner:
    """One policy's loop. `body` is the policy as kopf keeps it (updated in place as the
    apiserver's events arrive), so every round reads the current spec."""

    def __init__(
        self,
        cluster: PolicyCluster,
        body: Mapping[str, Any],
        *,
        operator_namespace: str,
        clock: Callable[[], dt.datetime] = utcnow,
        resync: float = RESYNC_SECONDS,
    ) -> None:
        self._cluster = cluster
        self._body = body
        self._operator_namespace = operator_namespace
        self._clock = clock
        self._resync = resync
        self._written: dict[str, Any] | None = None
        # Slots before this are not caught up (see the module's docstring).
        self._since = clock()

    async def run(self) -> None:
        """Rounds until cancelled (kopf cancels the daemon when the policy goes)."""
        while True:
            wait = await self.round()
            await asyncio.sleep(wait)

    async def round(self) -> float:
        """One round; returns the seconds to wait before the next."""
        now = self._clock()
        meta = self._body.get("metadata") or {}
        namespace, name = self._where()
        status = self._previous_status()
        status.observed_generation = meta.get("generation")
        try:
            spec = CheckpointPolicySpec.from_resource(self._body.get("spec") or {})
        except ValidationError as exc:
            return await self._stop(status, "InvalidSpec", _validation_message(exc))
        if len(name) > MAX_POLICY_NAME:
            return await self._stop(status, "InvalidName", f"the name has {len(name)} "
                                    f"characters; at most {MAX_POLICY_NAME} fit the "
                                    "ckpt.dev/policy label")
        if namespace == self._operator_namespace:
            return await self._stop(status, "OperatorNamespace", f"{namespace} is ckpt's own "
                                    "namespace: its pods are never checkpointed by a policy")
        policy = Policy(namespace, name, str(meta.get("uid", "")), spec)
        try:
            pods = await self._cluster.list_pods(namespace, spec.selector.query())
        except ClusterError as exc:
            if exc.status == 403:
                return await self._stop(status, "PodsForbidden", self._forbidden(exc))
            return await self._stop(status, "ListFailed", str(exc))
        try:
            found = await self._cluster.list_checkpoints(namespace, name)
            restores = await self._cluster.list_restores(namespace)
        except ClusterError as exc:
            return await self._stop(status, "ListFailed", str(exc))
        checkpoints = [CheckpointView.of(c) for c in found if owned_by(c, policy.uid)]
        result = plan(policy, [PodView.of(p) for p in pods], checkpoints,
                      protected_names(restores), now, self._since)
        errors = await self._act(policy, result)
        self._fill(status, policy, result, errors)
        await self._write(status)
        if errors or result.next_due is None:
            return self._resync
        return max(MIN_WAIT_SECONDS,
                   min(self._resync, (result.next_due - self._clock()).total_seconds()))

    async def _act(self, policy: Policy, result: Plan) -> list[str]:
        errors: list[str] = []
        for new in result.create:
            try:
                await self._cluster.create_checkpoint(policy.namespace,
                                                      checkpoint_body(policy, new))
            except ClusterError as exc:
                errors.append(f"creating Checkpoint {new.name} of pod {new.pod.name}: {exc}")
                continue
            log.info("%s/%s: Checkpoint %s of pod %s (%s), slot %s", policy.namespace,
                     policy.name, new.name, new.pod.name, new.pod.lineage.workload,
                     rfc3339(new.slot))
        for doomed in result.delete:
            try:
                await self._cluster.delete_checkpoint(policy.namespace, doomed.name, doomed.uid)
            except ClusterError as exc:
                errors.append(f"deleting Checkpoint {doomed.name}: {exc}")
                continue
            log.info("%s/%s: deleted Checkpoint %s (%s)", policy.namespace, policy.name,
                     doomed.name, doomed.why)
        return errors

    def _fill(
        self, status: CheckpointPolicyStatus, policy: Policy, result: Plan, errors: list[str]
    ) -> None:
        status.pods_covered = result.pods_covered
        status.lineage_count = len(result.lineages)
        status.lineages = result.lineages[:MAX_STATUS_LINEAGES]
        newest = next((s for s in result.lineages if s.latest_ready), None)
        status.last_checkpoint = newest.latest_ready if newest else None
        status.last_checkpoint_at = newest.latest_ready_at if newest else None
        pods = f"{result.pods_covered} pod{'' if result.pods_covered == 1 else 's'} covered"
        if policy.spec.every is None:
            status.message = f"{pods}; no periodic checkpoints (spec.every is not set)"
        else:
            status.message = (f"{pods}; checkpointed every {policy.spec.every}, "
                              f"keeping {policy.spec.keep_last} per lineage")
        if errors:
            self._not_ready(status, "ApiError", "; ".join(errors))
        else:
            set_condition(status, READY, True, "Reconciled")
        if result.failing:
            set_condition(status, CHECKPOINTS_FAILING, True, "CheckpointFailed",
                          "; ".join(result.failing[:5])
                          + (f" (and {len(result.failing) - 5} more)"
                             if len(result.failing) > 5 else ""))
        else:
            set_condition(status, CHECKPOINTS_FAILING, False, "NoneFailing")

    async def _stop(self, status: CheckpointPolicyStatus, reason: str, message: str) -> float:
        """Ends a round that cannot plan: Ready is False with why; the next try at resync."""
        self._not_ready(status, reason, message)
        await self._write(status)
        return self._resync

    def _forbidden(self, exc: ClusterError) -> str:
        namespace = self._where()[0]
        return (
            f"{exc}. The operator lists pods only in namespaces where ClusterRole "
            f"{LIST_PODS_ROLE} is bound to it; a namespace admin enables policies here with: "
            f"kubectl -n {namespace} create rolebinding {LIST_PODS_ROLE} "
            f"--clusterrole={LIST_PODS_ROLE} "
            f"--serviceaccount={self._operator_namespace}:{OPERATOR_SERVICE_ACCOUNT}"
        )

    @staticmethod
    def _not_ready(status: CheckpointPolicyStatus, reason: str, message: str) -> None:
        status.message = message
        set_condition(status, READY, False, reason, message)

    def _previous_status(self) -> CheckpointPolicyStatus:
        previous = self._written if self._written is not None else self._body.get("status")
        try:
            return CheckpointPolicyStatus.model_validate(dict(previous or {}))
        except ValidationError:
            return CheckpointPolicyStatus()

    def _where(self) -> tuple[str, str]:
        meta = self._body.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    async def _write(self, status: CheckpointPolicyStatus) -> None:
        """Patches status when it changed. Every field is written, nulls too (a JSON merge
        patch removes a field given as null), so nothing stale is left behind."""
        namespace, name = self._where()
        written = status.model_dump(mode="json", by_alias=True)
        if written == self._written:
            return
        try:
            await self._cluster.patch_policy_status(namespace, name, written)
        except ClusterError as exc:
            log.warning("%s/%s: status not written: %s", namespace, name, exc)
            return
        self._written = written


def _validation_message(exc: ValidationError) -> str:
    """`spec.every: every must be between 10s and 720h (30 days)`: field and reason, no
    pydantic boilerplate."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in ("spec", *error["loc"]))
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
