"""The benches' figures (bench/plots.py) draw from synthetic records, and what a bench saves
(bench/results.py) reads back as the rows it measured: the cluster benches' plots cannot be
drawn from a real run here, so these are the checks that their code paths work."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench import plots, results

SVG = "{http://www.w3.org/2000/svg}"


def _record(bench: str, rows: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return {
        "bench": bench, "date": "2025-01-02T03:04:05+00:00", "commit": "abc1234",
        "machine": {"cpus": 2}, "load_average": {"start": [1.0, 0.9, 0.8],
                                                 "end": [1.6, 1.0, 0.8]},
        "wall_s": 12.0, "params": {"reps": 3, **params}, "rows": rows,
    }


def _restore_rows() -> list[dict[str, Any]]:
    return [{"mib": mib, "median": {
        "cold": 6.0 * k, "restore": 2.7 * k, "fetch": 0.2 * k, "verify": 0.2 * k,
        "extract": 0.5 * k, "pod": 1.5, "base_tar": 0.6 * k, "base_runc": 0.5,
        "archive_mib": 192.0 * k, "tar_mib": 256.0 * k}} for mib, k in ((256, 1), (1024, 2.2))]


RECORDS: dict[str, dict[str, Any]] = {
    "restore": _record("restore", _restore_rows(), sizes=[256, 1024]),
    "agent": _record("agent", [
        {"mib": mib, "median": {"base_total": 1.8 * k, "pipe_total": 1.5 * k,
                                "base_restore": 1.1 * k, "pipe_restore": 2.0 * k}}
        for mib, k in ((256, 1), (1024, 3), (2048, 6))]),
    "storage": _record("storage", [{"mib": 1024, "median": {
        "up_base": 21.0, "up_plain": 9.0, "up_enc": 10.0,
        "down_base": 12.0, "down_plain": 8.5, "down_enc": 11.5}}]),
    "api": _record("api", [
        {"server": server, "concurrency": c, "rps": 1000, "p50_ms": 0.1 * f * c,
         "p90_ms": 0.2 * f * c, "p99_ms": 0.4 * f * c, "cpu_us": 50.0}
        for server, f in (("bare-asgi", 1), ("sqlite", 5), ("postgresql", 15))
        for c in (1, 16)]),
    "apps": _record("apps", [
        {"app": app, "median": {"freeze": 0.1, "dump": 0.35, "store": 0.14, "checkpoint": 1.1,
                                "restore": 1.6, "cold": 2.2, "memory_mib": 20.0,
                                "archive_mib": 2.0}}
        for app in ("python", "redis", "jvm", "node", "postgres")]),
    "operator_load": _record("operator_load", [
        {"size": n, "wall": wall, "operator_pct": pct, "operator_share": wall * pct / 100,
         "breakdown": {"head": 0.05 * wall, "starved": 0.01 * wall, "handoff": 0.1 * wall,
                       "drain": 0.05 * wall, "agent": 0.78 * wall, "tail": 0.01 * wall}}
        for n, wall, pct in ((1, 0.3, 15.0), (100, 32.0, 1.2))], reps=[3, 2]),
}

# Bars per figure: groups x bars x stacked segments.
EXPECTED_BARS = {
    "restore": 2 * (5 + 2 + 1),  # sizes x (Restore's phases + tar -x, runc + cold start)
    "agent": 2 * 3 * 2,  # {checkpoint, restore} x sizes x {baseline, ckpt}
    "storage": 2 * 3,  # {upload, download} x {plain, archive, archive + age}
    "api": 2 * 3 * 3,  # concurrency levels x servers x {p50, p90, p99}
    "apps": 5 * (4 + 1 + 1),  # apps x (checkpoint's phases + Restore + cold start)
    "operator_load": 2 * 6,  # sizes x the breakdown's parts
}
LABELS = {
    "restore": {"Restore: fetch", "Restore: verify", "Restore: extract",
                "baseline: tar -x", "baseline: runc restore"},
    "agent": {"tar -x + runc restore", "runc checkpoint + tar + fsync"},
    "storage": {"plain objects, uncompressed", "ckpt archive + age"},
    "api": {"p50", "p90", "p99", "concurrency 16", "postgresql"},
    "apps": {"checkpoint: dump", "Restore \u2192 Ready", "postgres"},
    "operator_load": {"agent: slots in use", "N = 100"},
}


def _svg(path: Path) -> tuple[list[str], set[str]]:
    root = ET.parse(path).getroot()  # noqa: S314 (our own file)
    assert root.tag == f"{SVG}svg"
    ids = [el.get("id", "") for el in root.iter()]
    texts = {"".join(el.itertext()).strip() for el in root.iter(f"{SVG}text")}
    return ids, texts


@pytest.mark.parametrize("bench", sorted(plots.PLOTS))
def test_each_figure_draws_a_valid_svg_with_its_bars_and_labels(
    bench: str, tmp_path: Path
) -> None:
    path = plots.render(RECORDS[bench], tmp_path)
    assert path == tmp_path / f"{bench}.svg"
    ids, texts = _svg(path)
    bars = [i for i in ids if i.startswith("bar-")]
    assert len(bars) == len(set(bars)) == EXPECTED_BARS[bench]
    assert LABELS[bench] <= texts
    # The caption: commit, date and the load the numbers were measured at.
    assert any("abc1234, 2025-01-02" in t and "load average 1.0 \u2192 1.6" in t
               for t in texts)


def test_figures_are_reproducible_and_dateless(tmp_path: Path) -> None:
    first = plots.render(RECORDS["restore"], tmp_path / "a").read_bytes()
    second = plots.render(RECORDS["restore"], tmp_path / "b").read_bytes()
    assert first == second
    assert b"<dc:date>" not in first


def test_restore_bars_stack_to_the_measured_totals(tmp_path: Path) -> None:
    """The Restore bar is its phases plus the rest up to Restore -> Ready, and its note is
    the ratio against the baseline's tar -x + runc restore."""
    _, texts = _svg(plots.render(RECORDS["restore"], tmp_path))
    assert "2.70 s (2.45x)" in texts  # 2.7 / (0.6 + 0.5)
    assert "1.10" in texts


def test_redraw_from_saved_records_without_running_a_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved, out = tmp_path / "results", tmp_path / "svg"
    for bench in ("api", "storage"):
        results.write(RECORDS[bench], saved)
    assert plots.main(["--results", str(saved), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["api.svg", "storage.svg"]
    assert "no record yet (run its bench): restore, agent, apps, operator_load" in (
        capsys.readouterr().err)
    (out / "api.svg").unlink()
    assert plots.main(["api", "--results", str(saved), "--out", str(out)]) == 0
    assert (out / "api.svg").exists()
    with pytest.raises(SystemExit):
        plots.main(["continuity", "--results", str(saved)])


def test_recorder_saves_the_rows_with_when_and_where(tmp_path: Path) -> None:
    recorder = results.Recorder("api", {"seconds": 3.0})
    data = recorder.save(RECORDS["api"]["rows"], directory=tmp_path, plots_dir=tmp_path)
    assert (tmp_path / "api.svg").exists()
    assert data["bench"] == "api"
    assert results.read("api", tmp_path) == json.loads(json.dumps(data))
    assert len(data["load_average"]["start"]) == len(data["load_average"]["end"]) == 3
    assert {"cpus", "kernel", "python"} <= data["machine"].keys()
    assert data["params"] == {"seconds": 3.0}
    # Committed: no path of the machine it ran on.
    assert str(tmp_path) not in json.dumps(data)


def _round_trip(row: Any) -> Any:
    return type(row).from_json(json.loads(json.dumps(row.to_json())))


def test_agent_rows_round_trip_through_json() -> None:
    from bench import agent

    sample = agent.Sample(base_dump=0.4, base_tar=1.2, base_bytes=257 << 20, pipe_total=1.5,
                          pipe_dump=0.4, pipe_store=1.0, pipe_bytes=192 << 20,
                          base_restore=1.1, pipe_restore=2.0, pipe_restore_stage=1.2,
                          pipe_restore_runc=0.8)
    row = agent.Row(256, [sample, agent.Sample(**{**sample.__dict__, "pipe_total": 1.7})])
    assert _round_trip(row) == row
    data = row.to_json()
    assert data["median"]["pipe_total"] == pytest.approx(1.6)
    assert data["median"]["base_total"] == pytest.approx(1.6)
    assert agent.table([_round_trip(row)]) == agent.table([row])


def test_restore_and_apps_rows_round_trip_through_json() -> None:
    from bench import apps, restore

    sample = restore.Sample(cold=6.0, restore=2.7, fetch=0.2, verify=0.2, extract=0.5,
                            pod=1.5, base_tar=0.6, base_runc=0.5, archive_mib=192.0,
                            tar_mib=256.0)
    row = restore.Row(256, [sample])
    assert _round_trip(row) == row
    assert row.to_json()["median"]["staging"] == pytest.approx(0.9)
    assert restore.table([_round_trip(row)]) == restore.table([row])
    # What the restore figure reads, drawn from the bench's own rows.
    plots.plot_restore(_record("restore", [row.to_json()]))

    app = apps.Row("redis", [apps.Sample(cold=2.2, memory_mib=16.0, freeze=0.07, dump=0.27,
                                         store=0.04, checkpoint=0.61, archive_mib=0.3,
                                         restore=1.64)])
    assert _round_trip(app) == app
    plots.plot_apps(_record("apps", [app.to_json()]))


def test_api_rows_round_trip_through_json() -> None:
    from bench import api

    rows = [api.Row("bare-asgi", 16, 37847, 0.34, 0.5, 0.74, 26.0),
            api.Row("sqlite", 16, 2299, 6.45, 9.0, 13.45, None)]
    assert [_round_trip(r) for r in rows] == rows
    assert "| sqlite | 16 | 2299 | 6.45 | 9.00 | 13.45 | 0.06x | n/a |" in api.table(rows)
    plots.plot_api(_record("api", [r.to_json() for r in rows]))
