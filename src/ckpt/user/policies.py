"""`policy status`: the story of a CheckpointPolicy, shared by `kubectl ckpt policy status` and
`ckpt policy status`.

The policy's own status, which the operator rewrites each round, says which pods it covers and
each lineage's latest Ready checkpoint. The rest comes from the Checkpoints the policy made
(labelled ckpt.dev/policy and ckpt.dev/lineage, annotated ckpt.dev/workload, owned by the
policy): their sizes, how many Ready ones each lineage keeps, which are in flight, which
failed. `PolicyReport` is that story as data (-o json|yaml); `story` tells it as text.

The next periodic checkpoint of a pod is estimated as its latest Checkpoint's time plus
`every`: the operator reads its schedule back from the Checkpoints in the same way (see
ckpt.operator.policy), so the estimate holds to a second or so, unless a slot was taken late
(the pod busy or not Running when it passed: the next one keeps to the pod's original spacing,
up to half a period sooner). A pod with no Checkpoint yet has no estimate: its first slot
depends on a hash of its uid and on when the operator's loop began.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ckpt.apis.checkpoint import GROUP, PLURAL, VERSION, Condition, Phase
from ckpt.apis.policy import (
    LINEAGE_LABEL,
    POLICY_KIND,
    POLICY_LABEL,
    POLICY_PLURAL,
    WORKLOAD_ANNOTATION,
    CheckpointPolicySpec,
    CheckpointPolicyStatus,
)
from ckpt.user.describe import conditions_section
from ckpt.user.printing import GetOutput, columns, dump, fields, kubectl_list
from ckpt.user.verbs import age

if TYPE_CHECKING:
    # Imported where used: the Kubernetes client takes about 0.7 s to import.
    from kubernetes import client

REPORT_KIND: Final = "CheckpointPolicyReport"
_INDENT = "  "


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CheckpointBrief(_Model):
    """One Checkpoint the policy made."""

    name: str
    pod: str
    phase: str = Field(description="Empty until the operator first writes its status.")
    created_at: str = Field(description="RFC 3339; the time the policy took it.")
    node_name: str | None = None
    size: str | None = Field(default=None, description="Archive size, human readable.")
    size_bytes: int | None = None
    message: str = ""


class NextDue(_Model):
    """When the next periodic checkpoint of a lineage, or of the whole policy, falls due."""

    at: str = Field(description="RFC 3339; the latest Checkpoint of the pod plus `every`.")
    pod: str
    workload: str


class LineageReport(_Model):
    lineage: str = Field(description="Value of the ckpt.dev/lineage label.")
    workload: str = Field(
        description="Job/NAME[/INDEX], ReplicaSet/NAME, StatefulSet/NAME/ORDINAL, "
        "another controller's KIND/NAME, or Pod/NAME (a bare pod)."
    )
    pods: list[str] = Field(default_factory=list, description="Its pods the policy covers now.")
    ready: int = Field(description="Ready checkpoints kept.")
    keep: int = Field(description="How many Ready ones it keeps: keepLast per pod it runs.")
    in_flight: int
    failed: int
    latest_ready: CheckpointBrief | None = None
    next_due: NextDue | None = None
    checkpoints: list[CheckpointBrief] = Field(
        default_factory=list, description="All of its Checkpoints, newest first."
    )


class PolicyReport(_Model):
    """What `policy status -o json|yaml` prints for one policy."""

    kind: Literal["CheckpointPolicyReport"] = REPORT_KIND
    namespace: str
    name: str
    created_at: str | None = None
    spec: CheckpointPolicySpec
    handled: bool = Field(description="Whether the operator has written a status yet.")
    generation: int | None = None
    observed_generation: int | None = Field(
        default=None, description="The generation of the spec the status was written for."
    )
    message: str = ""
    pods_covered: int | None = None
    lineage_count: int = 0
    last_checkpoint: CheckpointBrief | None = Field(
        default=None, description="The newest Ready Checkpoint of any lineage."
    )
    next_due: NextDue | None = Field(
        default=None, description="The soonest next periodic checkpoint, where it is known."
    )
    lineages: list[LineageReport] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


# -- the cluster --------------------------------------------------------------------------------


class Policies:
    """CheckpointPolicies and the Checkpoints they made, as the user's kubeconfig sees them."""

    def __init__(self, api: client.ApiClient) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)

    def get_policy(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes import client

        from ckpt.kubejson import json_object
        from ckpt.user.resources import UserError, explain

        try:
            return json_object(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, POLICY_PLURAL, name
            ))
        except client.ApiException as exc:
            raise UserError(explain(exc, f"read checkpointpolicy {namespace}/{name}")) from exc

    def list_policies(self, namespace: str | None) -> list[dict[str, Any]]:
        return self._list(namespace, POLICY_PLURAL, "checkpoint policies")

    def list_checkpoints(
        self, namespace: str | None, policy: str | None
    ) -> list[dict[str, Any]]:
        """The Checkpoints labelled with `policy` (None: with any policy)."""
        selector = POLICY_LABEL if policy is None else f"{POLICY_LABEL}={policy}"
        return self._list(namespace, PLURAL, "the policies' checkpoints", selector)

    def _list(
        self, namespace: str | None, plural: str, what: str, selector: str | None = None
    ) -> list[dict[str, Any]]:
        from kubernetes import client

        from ckpt.kubejson import json_object
        from ckpt.user.resources import UserError, explain

        try:
            if namespace is None:
                found = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, label_selector=selector
                )
            else:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, label_selector=selector
                )
        except client.ApiException as exc:
            raise UserError(explain(exc, f"list {what}")) from exc
        return list(json_object(found).get("items", []))


def gather(
    api: client.ApiClient, namespace: str | None, name: str | None,
    now: dt.datetime | None = None,
) -> list[PolicyReport]:
    """The report of policy `name` in `namespace`, or of every policy there (namespace None:
    in every namespace); a UserError when the named one cannot be read."""
    policies = Policies(api)
    if name is not None:
        if namespace is None:
            raise ValueError("a policy is named within a namespace")
        found = [policies.get_policy(namespace, name)]
        made = policies.list_checkpoints(namespace, name)
    else:
        found = policies.list_policies(namespace)
        # One list for all of them: a request per policy would be slow over many.
        made = policies.list_checkpoints(namespace, None) if found else []
    by_policy: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in made:
        meta = item.get("metadata") or {}
        label = str((meta.get("labels") or {}).get(POLICY_LABEL, ""))
        by_policy[(str(meta.get("namespace", "")), label)].append(item)
    reports = [
        report(policy, by_policy.get(_key(policy), []), now or utcnow()) for policy in found
    ]
    return sorted(reports, key=lambda r: (r.namespace, r.name))


def _key(resource: Mapping[str, Any]) -> tuple[str, str]:
    meta = resource.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


# -- the report (pure) --------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _owned_by(body: Mapping[str, Any], policy_uid: str) -> bool:
    # The label alone can be copied onto anyone's Checkpoint; the operator counts (and
    # prunes) only those that carry the policy's ownerReference, and so does the story.
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == POLICY_KIND and o.get("uid") == policy_uid for o in owners)


def _brief(body: Mapping[str, Any]) -> CheckpointBrief:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    size_bytes = status.get("sizeBytes")
    return CheckpointBrief(
        name=str(meta.get("name", "")),
        pod=str((body.get("spec") or {}).get("podName", "")),
        phase=str(status.get("phase") or ""),
        created_at=str(meta.get("creationTimestamp", "")),
        node_name=status.get("nodeName") or None,
        size=status.get("size") or None,
        size_bytes=size_bytes if isinstance(size_bytes, int) else None,
        message=str(status.get("message") or ""),
    )


def _read_spec(policy: Mapping[str, Any]) -> CheckpointPolicySpec:
    from ckpt.user.resources import unreadable

    try:
        return CheckpointPolicySpec.from_resource(policy.get("spec") or {})
    except ValidationError as exc:
        raise unreadable(exc, policy, "spec", "checkpointpolicy") from exc


def report(
    policy: Mapping[str, Any], checkpoints: Sequence[Mapping[str, Any]], now: dt.datetime
) -> PolicyReport:
    """The story of `policy` as data, from it and the Checkpoints labelled with its name."""
    from ckpt.user.resources import read_status

    meta = policy.get("metadata") or {}
    spec = _read_spec(policy)
    status = read_status(CheckpointPolicyStatus, policy, "checkpointpolicy")
    every = spec.every_seconds
    uid = str(meta.get("uid", ""))

    # Those being deleted (pruned, their archives going) are no longer the policy's, as for
    # the operator.
    live = [
        c for c in checkpoints
        if _owned_by(c, uid) and (c.get("metadata") or {}).get("deletionTimestamp") is None
    ]
    by_lineage: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for c in live:
        by_lineage[str(((c.get("metadata") or {}).get("labels") or {}).get(LINEAGE_LABEL, ""))
                   ].append(c)
    known = {s.lineage: s for s in status.lineages}

    lineages = []
    for lineage in sorted(set(by_lineage) | set(known)):
        group = sorted(by_lineage.get(lineage, []), key=_order, reverse=True)
        briefs = [_brief(c) for c in group]
        written = known.get(lineage)
        pods = list(written.pods) if written else []
        workload = written.workload if written else next(
            (str(((c.get("metadata") or {}).get("annotations") or {}).get(WORKLOAD_ANNOTATION))
             for c in group
             if ((c.get("metadata") or {}).get("annotations") or {}).get(WORKLOAD_ANNOTATION)),
            lineage,
        )
        ready = [b for b in briefs if b.phase == Phase.Ready.value]
        lineages.append(LineageReport(
            lineage=lineage, workload=workload, pods=pods, ready=len(ready),
            keep=spec.keep_last * max(1, len(pods)),
            in_flight=sum(b.phase not in (Phase.Ready.value, Phase.Failed.value)
                          for b in briefs),
            failed=sum(b.phase == Phase.Failed.value for b in briefs),
            latest_ready=ready[0] if ready else None,
            next_due=_next_due(workload, pods, briefs, every),
            checkpoints=briefs,
        ))
    # As the operator orders them in status: the most recently checkpointed first.
    lineages.sort(key=lambda s: s.workload)
    lineages.sort(key=lambda s: s.latest_ready.created_at if s.latest_ready else "",
                  reverse=True)
    newest = next((s.latest_ready for s in lineages if s.latest_ready), None)
    due = [s.next_due for s in lineages if s.next_due is not None]
    return PolicyReport(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        created_at=meta.get("creationTimestamp"),
        spec=spec,
        handled=bool(policy.get("status")),
        generation=meta.get("generation"),
        observed_generation=status.observed_generation,
        message=status.message,
        pods_covered=status.pods_covered,
        lineage_count=max(len(lineages), status.lineage_count or 0),
        last_checkpoint=newest,
        next_due=min(due, key=lambda d: d.at) if due else None,
        lineages=lineages,
        conditions=status.conditions,
    )


def _order(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    # RFC 3339 UTC times order as strings; the name breaks ties, as for the operator.
    return str(meta.get("creationTimestamp", "")), str(meta.get("name", ""))


def _next_due(
    workload: str, pods: list[str], briefs: list[CheckpointBrief], every: int | None
) -> NextDue | None:
    """The soonest of the lineage's covered pods' next slots that can be told (see the
    module's docstring): the latest Checkpoint of the pod, in any phase, plus `every`."""
    if every is None:
        return None
    soonest: NextDue | None = None
    for pod in pods:
        latest = next((b for b in briefs if b.pod == pod and b.created_at), None)
        if latest is None:
            continue
        at = rfc3339(parse_time(latest.created_at) + dt.timedelta(seconds=every))
        if soonest is None or at < soonest.at:
            soonest = NextDue(at=at, pod=pod, workload=workload)
    return soonest


# -- printing -----------------------------------------------------------------------------------


def render(reports: Sequence[PolicyReport], output: GetOutput | None, *, one: bool,
           now: dt.datetime | None = None) -> str:
    """What stdout gets: the story of each (wide: with every Checkpoint), their names, or the
    report as json or yaml (one report for a named policy, else a List)."""
    if output in (GetOutput.json, GetOutput.yaml):
        documents = [r.model_dump(mode="json", by_alias=True) for r in reports]
        document = documents[0] if one and documents else kubectl_list(documents)
        return dump(document, output.value)
    if output is GetOutput.name:
        return "".join(f"{POLICY_KIND.lower()}.{GROUP}/{r.name}\n" for r in reports)
    when = now or utcnow()
    # Several stories apart by a blank line, as `kubectl describe` prints several resources.
    return "\n".join(story(r, when, wide=output is GetOutput.wide) for r in reports)


def nothing_found(namespace: str | None) -> str:
    where = "any namespace" if namespace is None else f"the {namespace} namespace"
    return f"No checkpoint policies found in {where}."


def story(report: PolicyReport, now: dt.datetime, *, wide: bool = False) -> str:
    """One policy's story, as `kubectl describe` tells a resource's."""
    spec = report.spec
    parts = [
        fields([
            ("Name", report.name),
            ("Namespace", report.namespace),
            ("Kind", POLICY_KIND),
            ("Created", _when(report.created_at, now)),
        ]),
        "Spec:\n" + fields([
            ("Selector", spec.selector.query()),
            ("Every", spec.every or "not set: no periodic checkpoints"),
            ("Keep Last", f"{spec.keep_last} Ready checkpoints per lineage"),
            ("Storage", spec.storage or "the default location"),
            ("Checkpoint On Eviction", f"{_bool(spec.checkpoint_on_eviction)}, deadline "
             f"{spec.eviction_deadline_seconds}s (stored, not acted on yet)"),
            ("Resume Replacements",
             f"{_bool(spec.resume_replacements)} (stored, not acted on yet)"),
        ], _INDENT),
        _status(report, now),
        _lineages(report, now, wide),
        _failures(report, now),
        _checkpoints(report, now) if wide else "",
        conditions_section(report.conditions, now),
    ]
    return "".join(parts)


def _bool(value: bool) -> str:
    return str(value).lower()


def _when(timestamp: str | None, now: dt.datetime) -> str | None:
    return f"{timestamp} ({age(timestamp, now)} ago)" if timestamp else None


def _status(report: PolicyReport, now: dt.datetime) -> str:
    if not report.handled:
        return "Status:  not yet handled by the operator (is it running?)\n"
    stale = None
    if (report.generation is not None and report.observed_generation is not None
            and report.observed_generation < report.generation):
        stale = (f"{report.observed_generation}; the spec is at {report.generation}: the "
                 "operator has not acted on the last edit yet")
    last = report.last_checkpoint
    return "Status:\n" + fields([
        ("Message", report.message),
        ("Pods Covered", report.pods_covered),
        ("Lineages", report.lineage_count),
        ("Last Checkpoint",
         f"{last.name} ({age(last.created_at, now)} ago)" if last else "none Ready yet"),
        ("Next Checkpoint", _next_text(report, now)),
        ("Observed Generation", stale),
    ], _INDENT)


def _next_text(report: PolicyReport, now: dt.datetime) -> str:
    due = report.next_due
    if due is not None:
        return f"{_relative(due.at, now)} ({due.at}, pod {due.pod})"
    if report.spec.every is None:
        return "none: spec.every is not set"
    if not any(s.pods for s in report.lineages) and not report.pods_covered:
        return "none: no pod is covered"
    return "not known until a covered pod's first checkpoint"


def _relative(timestamp: str, now: dt.datetime) -> str:
    """`in 4m` or `due 2m ago` (the operator away, or the pod not Running at its slot)."""
    when = parse_time(timestamp)
    if when >= now:
        return f"in {age(rfc3339(now), when)}"
    return f"due {age(timestamp, now)} ago"


def _size(brief: CheckpointBrief | None) -> str:
    # "1.5 MiB" as one word, as in `ls`: scripts split rows on whitespace.
    return ((brief.size if brief else None) or "").replace(" ", "")


def _lineages(report: PolicyReport, now: dt.datetime, wide: bool) -> str:
    if not report.lineages:
        return "Lineages:  <none>\n"
    headers = ["Workload", "Pods", "Latest-Ready", "Age", "Size", "Kept", "In-Flight",
               "Failed", "Next-Due"]
    if wide:
        headers.insert(1, "Lineage")
    rows = []
    for s in report.lineages:
        latest = s.latest_ready
        cells = [
            s.workload, ",".join(s.pods), latest.name if latest else "",
            age(latest.created_at, now) if latest else "", _size(latest),
            f"{s.ready}/{s.keep}", str(s.in_flight), str(s.failed),
            _relative(s.next_due.at, now) if s.next_due else "",
        ]
        if wide:
            cells.insert(1, s.lineage)
        rows.append(cells)
    more = ""
    if report.lineage_count > len(report.lineages):
        more = (f"{_INDENT}(and {report.lineage_count - len(report.lineages)} more "
                "without Checkpoints, beyond those the status lists)\n")
    return "Lineages:\n" + columns(headers, rows, _INDENT) + more


def _failures(report: PolicyReport, now: dt.datetime) -> str:
    # The operator keeps a Failed Checkpoint only while it is a covered pod's latest, so
    # those still here are the recent failures that matter.
    failed = [
        (s, b) for s in report.lineages for b in s.checkpoints if b.phase == Phase.Failed.value
    ]
    if not failed:
        return "Failed Checkpoints:  <none>\n"
    rows = [[b.name, b.pod, s.workload, age(b.created_at, now), b.message or "no message"]
            for s, b in sorted(failed, key=lambda f: f[1].created_at, reverse=True)]
    return "Failed Checkpoints:\n" + columns(
        ["Name", "Pod", "Workload", "Age", "Message"], rows, _INDENT
    )


def _checkpoints(report: PolicyReport, now: dt.datetime) -> str:
    every = [(s, b) for s in report.lineages for b in s.checkpoints]
    if not every:
        return "Checkpoints:  <none>\n"
    rows = [[b.name, b.phase, b.pod, s.workload, b.node_name or "", _size(b),
             age(b.created_at, now)]
            for s, b in sorted(every, key=lambda f: f[1].created_at, reverse=True)]
    return "Checkpoints:\n" + columns(
        ["Name", "Phase", "Pod", "Workload", "Node", "Size", "Age"], rows, _INDENT
    )
