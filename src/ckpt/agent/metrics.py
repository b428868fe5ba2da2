"""The agent's Prometheus metrics, in a registry of its own (one per app instance)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

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

# Archives range from a few MiB (a shell) to hundreds of GiB (a GPU job's memory): powers of 4.
_SIZE_BUCKETS = tuple(float(1 << (20 + 2 * k)) for k in range(10))  # 1 MiB .. 256 GiB

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


class _FolderSpace(Collector):
    """Free and total bytes of the filesystems holding the agent's folders, read at scrape
    time: staging a restore needs the archive's unpacked size there (plus 1 GiB), and
    node-local archives fill the node's disk."""

    def __init__(self, folders: Mapping[str, Path]) -> None:
        self._folders = dict(folders)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        free = GaugeMetricFamily(
            "ckpt_agent_storage_free_bytes",
            "Bytes available on the filesystem of an agent folder (volume: restores, archives).",
            labels=["volume"],
        )
        size = GaugeMetricFamily(
            "ckpt_agent_storage_size_bytes",
            "Size of the filesystem of an agent folder (volume: restores, archives).",
            labels=["volume"],
        )
        for volume, folder in sorted(self._folders.items()):
            try:
                st = os.statvfs(folder)
            except OSError:
                continue  # not created yet: nothing there to fill
            free.add_metric([volume], st.f_bavail * st.f_frsize)
            size.add_metric([volume], st.f_blocks * st.f_frsize)
        yield free
        yield size


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
        self.archive_size = Histogram(
            "ckpt_agent_archive_size_bytes",
            "Sizes of completed archives.",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.staged_bytes = Counter(
            "ckpt_agent_staged_bytes",
            "Bytes of archives fetched, verified and unpacked for restores.",
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

    def track_storage(self, folders: Mapping[str, Path]) -> None:
        """Free space of these folders (volume name -> folder), read at each scrape."""
        self.registry.register(_FolderSpace(folders))

    def archive_written(self, size_bytes: int) -> None:
        self.archive_bytes.inc(size_bytes)
        self.archive_size.observe(size_bytes)
