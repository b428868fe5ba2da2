"""Whether a restored Pod may run on a node as the scheduler would see it: the node's taints
against the Pod's tolerations, and the Pod's nodeSelector against the node's labels.

A Restore places its Pod itself (spec.nodeName: the archive is staged there first), which
skips the scheduler; without these checks a namespace's user could restore onto a node that
taints keep everyone else off (a GPU pool, a tenant's dedicated nodes, control-plane nodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Taints that keep new Pods off; PreferNoSchedule only ranks nodes.
_BLOCKING = frozenset({"NoSchedule", "NoExecute"})


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' matching of one toleration against one taint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if toleration.get("operator") == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (
        taint.get("value") or "")


def untolerated_taint(
    pod_spec: Mapping[str, Any], node: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The first taint of `node` that keeps this Pod off, or None."""
    tolerations: Iterable[Mapping[str, Any]] = pod_spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in _BLOCKING and not any(tolerates(t, taint)
                                                         for t in tolerations):
            return dict(taint)
    return None


def unselected(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, str]:
    """The Pod's nodeSelector entries the node's labels do not satisfy."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector: Mapping[str, str] = pod_spec.get("nodeSelector") or {}
    return {k: v for k, v in selector.items() if labels.get(k) != v}


def refusal(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the Pod may not run on `node`, else None."""
    name = (node.get("metadata") or {}).get("name", "")
    taint = untolerated_taint(pod_spec, node)
    if taint is not None:
        value = f"={taint['value']}" if taint.get("value") else ""
        return "NodeTainted", (
            f"node {name} has the taint {taint.get('key')}{value}:{taint.get('effect')}, "
            "which the checkpointed Pod does not tolerate"
        )
    missing = unselected(pod_spec, node)
    if missing:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
        return "NodeNotSelected", (
            f"node {name} lacks the labels {wanted} the Pod's nodeSelector asks for"
        )
    return None
