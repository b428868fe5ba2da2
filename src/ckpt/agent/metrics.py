"""The agent's Prometheus metrics, in a registry of its own (one per app instance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Phases range from milliseconds (freeze, gpu lock) to many minutes (dumping tens of GiB).
_PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# (kind, state) -> number of jobs; read from the job manager at scrape time.
JobCounts = Callable[[], dict[tuple[str, str], int]]


class _JobsByState(Collector):
    def __init__(self, counts: JobCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ckpt_agent_jobs",
            "Jobs known to this agent by kind and state (queued, running, succeeded, failed).",
            labels=["kind", "state"],
        )
        for (kind, state), count in sorted(self._counts().items()):
            family.add_metric([kind, state], count)
        yield family


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.phase_seconds = Histogram(
            "ckpt_agent_phase_duration_seconds",
            "Time jobs spent in each phase.",
            ["kind", "phase"],
            buckets=_PHASE_BUCKETS,
            registry=self.registry,
        )
        self.archive_bytes = Counter(
            "ckpt_agent_archive_bytes_written",
            "Bytes of completed archives written to the store.",
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "ckpt_agent_jobs_finished",
            "Jobs that ended, by kind and final state.",
            ["kind", "state"],
            registry=self.registry,
        )

    def describe_criu(self, version: str, features: dict[str, bool]) -> None:
        """The node's CRIU and its kernel's features, as info-style gauges (always 1 / 0 or 1),
        so that a fleet's dashboards show which nodes can restore lazily or dump sockets."""
        Gauge("ckpt_agent_criu_info", "The CRIU this agent runs (value 1).", ["version"],
              registry=self.registry).labels(version).set(1)
        feature = Gauge("ckpt_agent_criu_kernel_feature",
                        "1 where `criu check --feature NAME` passed on this node's kernel.",
                        ["feature"], registry=self.registry)
        for name, supported in features.items():
            feature.labels(name).set(1 if supported else 0)

    def track_jobs(self, counts: JobCounts) -> None:
        self.registry.register(_JobsByState(counts))
