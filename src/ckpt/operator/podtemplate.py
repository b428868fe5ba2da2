"""The Pod as a template for a Restore (KEP-5823's checkpointedPodTemplate).

Its spec without what belongs to the old Pod (node, uid, status, ServiceAccount token volumes,
which admission adds again to the new Pod) and every container's image pinned to the digest
the runtime ran, so the checkpoint's filesystem diff lands on the same image. The operator
builds it from the Pod it reads when a Checkpoint is accepted; the agent writes it into the
archive, and a Restore creates its Pod from that copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Projected ServiceAccount token volumes: the new Pod gets its own from admission.
_TOKEN_VOLUME_PREFIX = "kube-api-access-"  # noqa: S105 - a volume name, not a secret
# Labels through which a controller would adopt the restored Pod as one of its own replicas.
_CONTROLLER_LABELS = frozenset({
    "pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index", "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name", "controller-uid", "job-name",
})
_DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
# Spec fields that belong to the old Pod or that admission computes again (and refuses when
# given: the Priority admission plugin rejects an explicit `priority`).
_DROPPED_SPEC = ("nodeName", "priority", "preemptionPolicy", "ephemeralContainers")



def pod_template(pod: Mapping[str, Any]) -> dict[str, Any]:
    """`pod` (as the apiserver returns it) as a template for a new Pod elsewhere."""
    metadata = pod.get("metadata") or {}
    spec = copy.deepcopy(dict(pod.get("spec") or {}))
    for key in _DROPPED_SPEC:
        spec.pop(key, None)
    tokens = {
        v["name"] for v in spec.get("volumes") or []
        if v.get("name", "").startswith(_TOKEN_VOLUME_PREFIX) and "projected" in v
    }
    if tokens:
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in tokens]
        if not spec["volumes"]:
            del spec["volumes"]
    digests = image_digests(pod)
    for section in ("initContainers", "containers"):
        for container in spec.get(section) or []:
            mounts = [m for m in container.get("volumeMounts") or [] if m["name"] not in tokens]
            if mounts:
                container["volumeMounts"] = mounts
            else:
                container.pop("volumeMounts", None)
            digest = digests.get(container["name"])
            if digest:
                container["image"] = digest
    labels = {
        k: v for k, v in (metadata.get("labels") or {}).items() if k not in _CONTROLLER_LABELS
    }
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items()
        if k not in _DROPPED_ANNOTATIONS and not k.startswith("ckpt.dev/")
    }
    out_meta: dict[str, Any] = {}
    if labels:
        out_meta["labels"] = labels
    if annotations:
        out_meta["annotations"] = annotations
    return {"metadata": out_meta, "spec": spec}


def image_digests(pod: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> `repo@sha256:...` the runtime ran (its imageID), where it has one.

    A bare `sha256:<id>` (an image imported without a registry) cannot be pulled by that
    name, so such containers keep the template's image reference."""
    status = pod.get("status") or {}
    out: dict[str, str] = {}
    for section in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(section) or []:
            image_id = str(container.get("imageID") or "").removeprefix("docker-pullable://")
            if "@sha256:" in image_id:
                out[container["name"]] = image_id
    return out
