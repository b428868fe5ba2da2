"""Lineage: the identity of a pod that survives its replacement.

A Job's replacement pod, a ReplicaSet's new replica, a StatefulSet's recreated `db-0` carry on
the work of the pod they replace; the checkpoints of that work belong to the lineage, not to
one pod. The lineage is read from the pod's controller ownerReference:

- a Job: the Job (an Indexed Job: the Job and the pod's completion index, which, like a
  StatefulSet's ordinal, names the share of the work a replacement takes over);
- a ReplicaSet: the ReplicaSet (a Deployment's rollout makes a new ReplicaSet, so a new
  template, which is new code, starts a new lineage);
- a StatefulSet: the StatefulSet and the pod's ordinal, at the pod's revision (a rolling update
  is a new template, so a new lineage, as for a ReplicaSet);
- any other controller: that controller (its pods are taken as interchangeable);
- no controller (a bare pod): the pod's name, so a bare pod made again under its name continues.

The controller's uid is part of the identity: a Job deleted and created again under the same
name is another run, not the same work.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Labels and annotations the controllers set on their pods.
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
STATEFULSET_POD_INDEX = "apps.kubernetes.io/pod-index"
CONTROLLER_REVISION = "controller-revision-hash"

# A label value: at most 63 characters, alphanumeric at both ends.
_LABEL_VALUE_MAX = 63
_HASH_LENGTH = 10
_ORDINAL = re.compile(r"^(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Lineage:
    kind: str  # Job, ReplicaSet, StatefulSet, another controller's kind, or Pod (bare pod)
    name: str
    # The controller's uid; empty for a bare pod (its name is its identity).
    uid: str = ""
    # A StatefulSet pod's ordinal, an Indexed Job pod's completion index.
    ordinal: int | None = None
    # A StatefulSet pod's controller revision (its template).
    revision: str = ""

    @property
    def workload(self) -> str:
        """For people: Job/NAME, ReplicaSet/NAME, StatefulSet/NAME/ORDINAL, Pod/NAME."""
        base = f"{self.kind}/{self.name}"
        return base if self.ordinal is None else f"{base}/{self.ordinal}"

    @property
    def label_value(self) -> str:
        """The value of the `ckpt.dev/lineage` label on the lineage's Checkpoints: readable
        (kind, name, ordinal), cut to fit a label value, and ended by a hash of the whole
        identity (uid and revision included), so equal values mean the same lineage."""
        identity = "\n".join(
            [self.kind, self.name, self.uid, "" if self.ordinal is None else str(self.ordinal),
             self.revision]
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:_HASH_LENGTH]
        readable = f"{self.kind.lower()}-{self.name}"
        if self.ordinal is not None:
            readable += f"-{self.ordinal}"
        readable = readable[: _LABEL_VALUE_MAX - _HASH_LENGTH - 1].rstrip("-.")
        return f"{readable}-{digest}"


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference marked `controller: true`, if any (at most one may be)."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return next((o for o in owners if o.get("controller") is True), None)


def lineage_of(pod: Mapping[str, Any]) -> Lineage:
    """The lineage of a pod (the apiserver's JSON of it)."""
    meta = pod.get("metadata") or {}
    owner = controller_of(pod)
    if owner is None:
        return Lineage(kind="Pod", name=str(meta.get("name", "")))
    kind, name, uid = str(owner.get("kind", "")), str(owner.get("name", "")), str(
        owner.get("uid", "")
    )
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    if kind == "StatefulSet":
        return Lineage(
            kind=kind, name=name, uid=uid,
            ordinal=_statefulset_ordinal(str(meta.get("name", "")), name, labels),
            revision=labels.get(CONTROLLER_REVISION, ""),
        )
    if kind == "Job":
        # Kubernetes >= 1.28 sets the index as a label too; the annotation is the older form.
        index = labels.get(JOB_COMPLETION_INDEX) or annotations.get(JOB_COMPLETION_INDEX)
        ordinal = int(index) if index is not None and _ORDINAL.match(index) else None
        return Lineage(kind=kind, name=name, uid=uid, ordinal=ordinal)
    return Lineage(kind=kind, name=name, uid=uid)


def _statefulset_ordinal(pod_name: str, set_name: str, labels: Mapping[str, str]) -> int | None:
    """A StatefulSet names its pods <set>-<ordinal> (with spec.ordinals.start, from any
    start); Kubernetes >= 1.28 also labels them with the ordinal."""
    index = labels.get(STATEFULSET_POD_INDEX)
    if index is not None and _ORDINAL.match(index):
        return int(index)
    suffix = pod_name.removeprefix(f"{set_name}-")
    return int(suffix) if suffix != pod_name and _ORDINAL.match(suffix) else None
