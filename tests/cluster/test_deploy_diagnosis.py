"""Why ckpt's pods are not Ready, said from what the kubelet recorded (pure function, no cluster).

The shapes are those `kubectl get -o json` gave in a CI run whose disk ran low: evicted pods,
ImagePullBackOff of images the kubelet had collected, nodes under DiskPressure."""

from __future__ import annotations

from typing import Any

from harness.cluster.deploy import not_ready_reasons


def _pod(name: str, *, ready: bool = False, reason: str | None = None, message: str = "",
         containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": containers or [],
    }
    if reason:
        status.update(reason=reason, message=message)
    return {"metadata": {"name": name}, "status": status}


def _waiting(name: str, reason: str, message: str) -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}}


def _node(name: str, **conditions: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": kind, "status": "True", "message": message}
        for kind, message in conditions.items()
    ] + [{"type": "Ready", "status": "True", "message": "kubelet is posting ready status"}]}}


def test_evictions_pull_failures_and_disk_pressure_are_named_with_what_to_do() -> None:
    pods = [
        _pod("ckpt-api-1", ready=True),
        _pod("ckpt-operator-1", reason="Evicted",
             message="The node was low on resource: ephemeral-storage. Threshold quantity: 5Gi."),
        _pod("ckpt-agent-1", containers=[_waiting(
            "agent", "ImagePullBackOff",
            'Back-off pulling image "ghcr.io/ckpt-dev/ckpt-agent:0.1.0"')]),
    ]
    nodes = [_node("ckpt-node-1", DiskPressure="kubelet has disk pressure"), _node("ckpt-node-2")]

    lines = not_ready_reasons(pods, nodes)

    assert lines[0] == ("  ckpt-operator-1: Evicted: The node was low on resource: "
                        "ephemeral-storage. Threshold quantity: 5Gi.")
    assert lines[1] == ("  ckpt-agent-1: agent waiting ImagePullBackOff: Back-off pulling "
                        'image "ghcr.io/ckpt-dev/ckpt-agent:0.1.0"')
    assert lines[2].startswith("  node ckpt-node-1: DiskPressure (kubelet has disk pressure); ")
    assert "rmi --prune" in lines[2] and "df -h" in lines[2]
    assert len(lines) == 3  # the Ready pod and the healthy node say nothing


def test_a_crashing_container_shows_the_last_line_of_its_termination_message() -> None:
    crashed = {"name": "operator", "state": {"terminated": {
        "reason": "Error", "message": "Traceback (most recent call last):\n...\nKeyError: 'x'"}}}
    finished = {"name": "init", "state": {"terminated": {"reason": "Completed"}}}
    pods = [_pod("ckpt-operator-2", containers=[crashed, finished])]
    assert not_ready_reasons(pods, []) == ["  ckpt-operator-2: operator terminated Error: "
                                           "KeyError: 'x'"]


def test_a_pod_not_ready_without_any_recorded_reason_adds_no_line() -> None:
    assert not_ready_reasons([_pod("ckpt-api-2")], [_node("ckpt-node-1")]) == []
