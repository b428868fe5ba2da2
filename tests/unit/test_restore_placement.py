"""A Restore places its Pod by name, past the scheduler: the node's taints and the Pod's
nodeSelector are honoured all the same (security finding 6)."""

from __future__ import annotations

from typing import Any

import pytest
from test_restore_flow import _agent, _facts, _node

from ckpt.operator.flow import Failure
from ckpt.operator.placement import refusal, tolerates
from ckpt.operator.restore import choose_node

GPU_POOL = {"key": "pool", "value": "gpu", "effect": "NoSchedule"}


def tainted(name: str, *taints: dict[str, str], **labels: str) -> dict[str, Any]:
    node = _node(name)
    node["spec"] = {"taints": list(taints)}
    node["metadata"]["labels"] |= labels
    return node


@pytest.mark.parametrize(("toleration", "expected"), [
    ({"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}, True),
    ({"key": "pool", "value": "gpu"}, True),                       # Equal and any effect
    ({"key": "pool", "operator": "Exists"}, True),
    ({"operator": "Exists"}, True),                                # tolerates everything
    ({"key": "pool", "value": "cpu"}, False),
    ({"key": "pool", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "other", "operator": "Exists"}, False),
])
def test_kubernetes_toleration_matching(toleration: dict[str, str], expected: bool) -> None:
    assert tolerates(toleration, GPU_POOL) is expected


def test_a_taint_the_pod_does_not_tolerate_refuses_the_node() -> None:
    reason, message = refusal({}, tainted("gpu-1", GPU_POOL)) or ("", "")
    assert reason == "NodeTainted" and "pool=gpu:NoSchedule" in message
    assert refusal({"tolerations": [{"key": "pool", "operator": "Exists"}]},
                   tainted("gpu-1", GPU_POOL)) is None
    # PreferNoSchedule only ranks nodes for the scheduler.
    assert refusal({}, tainted("n", {"key": "k", "effect": "PreferNoSchedule"})) is None


def test_the_pods_node_selector_is_honoured() -> None:
    spec = {"nodeSelector": {"team": "a"}}
    assert refusal(spec, tainted("n1", team="a")) is None
    reason, message = refusal(spec, tainted("n2", team="b")) or ("", "")
    assert reason == "NodeNotSelected" and "team=a" in message


def test_a_named_tainted_node_is_refused_and_an_unnamed_one_skipped() -> None:
    nodes = [tainted("n1", GPU_POOL), _node("n2")]
    agents = [_agent("a1", "n1"), _agent("a2", "n2")]
    facts = _facts(node="n1")
    with pytest.raises(Failure) as refused:
        choose_node(facts, "n1", nodes, agents)
    assert refused.value.reason == "NodeTainted"
    # The source node is preferred, but its taint keeps the Pod off: the other node.
    assert choose_node(facts, None, nodes, agents)[0] == "n2"
    tolerating = _facts(node="n1", template={"spec": {"containers": [], "tolerations": [
        {"key": "pool", "operator": "Exists"}]}})
    assert choose_node(tolerating, "n1", nodes, agents)[0] == "n1"
