"""Prometheus metrics of the operator (served on its metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHECKPOINTS = Counter(
    "ckpt_operator_checkpoints_total",
    "Checkpoints that reached a terminal phase, by phase and reason.",
    ["phase", "reason"],
)
DURATION = Histogram(
    "ckpt_operator_checkpoint_duration_seconds",
    "Time from the start of a checkpoint to Ready.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
AGENT_ERRORS = Counter(
    "ckpt_operator_agent_errors_total", "Failed calls to node agents, by kind.", ["kind"]
)
API_ERRORS = Counter(
    "ckpt_operator_api_errors_total", "Failed calls to the checkpoints API, by kind.", ["kind"]
)
