"""The metrics the monitoring added to the services, as the alerts and the dashboard read them:
the operator's restore helpers, the agent's archive sizes, staged bytes and folder space."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from ckpt.agent.metrics import AgentMetrics
from ckpt.agent.slots import FairSlots
from ckpt.agent.staging import Stagings
from ckpt.operator import metrics


def _value(name: str, labels: dict[str, str] | None = None,
           registry: CollectorRegistry = REGISTRY) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_a_restore_is_in_progress_while_its_flow_runs_however_the_flow_ends() -> None:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
    before = _value("ckpt_operator_restores_in_progress")
    with metrics.restore_in_progress("uid-a", created):
        assert _value("ckpt_operator_restores_in_progress") == before + 1
        assert 119 < _value("ckpt_operator_restore_oldest_in_progress_seconds") < 180
    assert _value("ckpt_operator_restores_in_progress") == before

    async def cancelled_flow() -> None:
        with metrics.restore_in_progress("uid-b", created):
            await asyncio.sleep(3600)

    async def cancel_it() -> None:
        task = asyncio.create_task(cancelled_flow())
        await asyncio.sleep(0)
        assert _value("ckpt_operator_restores_in_progress") == before + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert _value("ckpt_operator_restores_in_progress") == before
    if before == 0:
        assert _value("ckpt_operator_restore_oldest_in_progress_seconds") == 0


def test_a_finished_restore_is_counted_with_its_timings() -> None:
    running = {"phase": "Running", "reason": "Running"}
    failed = {"phase": "Failed", "reason": "ChecksumMismatch"}
    counted = _value("ckpt_operator_restores_total", running)
    failures = _value("ckpt_operator_restores_total", failed)
    timeouts = _value("ckpt_operator_restores_total", {"phase": "Failed", "reason": "Timeout"})
    durations = _value("ckpt_operator_restore_duration_seconds_count")
    fetch = _value("ckpt_operator_restore_phase_duration_seconds_sum", {"phase": "fetch"})
    restore = _value("ckpt_operator_restore_phase_duration_seconds_count", {"phase": "restore"})

    metrics.restore_finished("Running", "Running", 4.5,
                             {"fetch": 1500, "verify": 200, "extract": None, "restore": 900,
                              "total": 4500})
    metrics.restore_finished("Failed", "ChecksumMismatch")
    metrics.restore_finished("Failed", "Timeout", 900.0, {"fetch": 1000})

    assert _value("ckpt_operator_restores_total", running) == counted + 1
    assert _value("ckpt_operator_restores_total", failed) == failures + 1
    assert _value("ckpt_operator_restores_total",
                  {"phase": "Failed", "reason": "Timeout"}) == timeouts + 1
    # Durations describe restores that worked; "total" is the duration itself, not a phase.
    assert _value("ckpt_operator_restore_duration_seconds_count") == durations + 1
    assert _value("ckpt_operator_restore_phase_duration_seconds_sum",
                  {"phase": "fetch"}) == pytest.approx(fetch + 1.5)
    assert _value("ckpt_operator_restore_phase_duration_seconds_count",
                  {"phase": "restore"}) == restore + 1
    assert REGISTRY.get_sample_value("ckpt_operator_restore_phase_duration_seconds_count",
                                     {"phase": "total"}) is None


def test_a_written_archive_counts_its_bytes_and_its_size() -> None:
    agent = AgentMetrics()
    agent.archive_written(3 << 20)
    agent.archive_written(5 << 30)
    registry = agent.registry
    assert _value("ckpt_agent_archive_bytes_written_total", registry=registry) == (3 << 20) + (
        5 << 30)
    assert _value("ckpt_agent_archive_size_bytes_count", registry=registry) == 2
    # The 4 MiB bucket, its bound written as prometheus_client writes it.
    assert _value("ckpt_agent_archive_size_bytes_bucket", {"le": "4.194304e+06"},
                  registry=registry) == 1


def test_the_agent_reports_the_space_of_its_folders_at_scrape_time(tmp_path: Path) -> None:
    agent = AgentMetrics()
    agent.track_storage({"restores": tmp_path, "archives": tmp_path / "not-yet"})
    registry = agent.registry
    st = os.statvfs(tmp_path)
    free = _value("ckpt_agent_storage_free_bytes", {"volume": "restores"}, registry)
    size = _value("ckpt_agent_storage_size_bytes", {"volume": "restores"}, registry)
    assert size == st.f_blocks * st.f_frsize
    assert 0 < free <= size
    # A folder not made yet is left out rather than reported as a full (or empty) disk.
    assert registry.get_sample_value("ckpt_agent_storage_free_bytes",
                                     {"volume": "archives"}) is None
    (tmp_path / "not-yet").mkdir()
    assert registry.get_sample_value("ckpt_agent_storage_free_bytes",
                                     {"volume": "archives"}) is not None


def test_stagings_given_the_metrics_report_their_folders(tmp_path: Path) -> None:
    agent = AgentMetrics()
    (tmp_path / "restores").mkdir()
    (tmp_path / "archives").mkdir()
    Stagings(tmp_path / "restores", FairSlots(1), archive_root=tmp_path / "archives",
             metrics=agent)
    for volume in ("restores", "archives"):
        assert agent.registry.get_sample_value("ckpt_agent_storage_size_bytes",
                                               {"volume": volume})
    assert _value("ckpt_agent_staged_bytes_total", registry=agent.registry) == 0
