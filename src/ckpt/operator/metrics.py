"""Prometheus metrics of the operator (served on its metrics port)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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

# Restores: the Restore flow (restore.py) reports through the helpers below, so that it needs
# no knowledge of metric objects and the names stay in this one module.
_RESTORE_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)
_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
RESTORES = Counter(
    "ckpt_operator_restores_total",
    "Restores that reached a terminal phase (Running or Failed), by phase and reason.",
    ["phase", "reason"],
)
RESTORE_DURATION = Histogram(
    "ckpt_operator_restore_duration_seconds",
    "Time from the start of a Restore to its Pod Running.",
    buckets=_RESTORE_BUCKETS,
)
RESTORE_PHASE_DURATION = Histogram(
    "ckpt_operator_restore_phase_duration_seconds",
    "Time Running restores spent in each phase: fetch, verify and extract (staging on the "
    "agent), restore (Pod created to Running).",
    ["phase"],
    buckets=_STEP_BUCKETS,
)
RESTORE_PHASES = ("fetch", "verify", "extract", "restore")
# Series that exist before the first restore: dashboards show 0 rather than nothing, and
# increase() sees the first one.
RESTORES.labels("Running", "Running")
for _phase in RESTORE_PHASES:
    RESTORE_PHASE_DURATION.labels(_phase)

# Restore uid -> its creationTimestamp (Unix seconds). The flow's deadline runs from the
# creation, so the age from it is what says a Restore outlived every timeout it has.
_in_progress: dict[str, float] = {}


class _RestoresInProgress(Collector):
    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = time.time()
        ages = [now - created for created in _in_progress.values()]
        yield GaugeMetricFamily(
            "ckpt_operator_restores_in_progress",
            "Restores whose flow runs in this operator now (not yet Running or Failed).",
            value=len(ages),
        )
        # 0 with none: an absent series would make "stuck" alerts silently never fire.
        yield GaugeMetricFamily(
            "ckpt_operator_restore_oldest_in_progress_seconds",
            "Age (from its creation) of the oldest Restore still in progress; 0 when none is.",
            value=max(ages, default=0.0),
        )


REGISTRY.register(_RestoresInProgress())


@contextmanager
def restore_in_progress(uid: str, created: dt.datetime) -> Iterator[None]:
    """Counts the Restore as in progress while the block runs (its flow), whether the block
    ends by returning, failing or being cancelled (the Restore deleted, the operator
    stopping)."""
    _in_progress[uid] = created.timestamp()
    try:
        yield
    finally:
        _in_progress.pop(uid, None)


def restore_finished(
    phase: str,
    reason: str,
    seconds: float | None = None,
    phases_ms: Mapping[str, int | None] | None = None,
) -> None:
    """A Restore reached `phase` (Running or Failed, with its condition's reason). A Running
    one also gives `seconds` from its start to Running and `phases_ms`, its timings in
    milliseconds by RESTORE_PHASES name (others, and None, are left out); durations describe
    restores that worked only, so a Failed one's are not recorded."""
    RESTORES.labels(phase, reason).inc()
    if phase != "Running":
        return
    if seconds is not None:
        RESTORE_DURATION.observe(seconds)
    for name, ms in (phases_ms or {}).items():
        if name in RESTORE_PHASES and ms is not None:
            RESTORE_PHASE_DURATION.labels(name).observe(ms / 1000)
