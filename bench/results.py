"""The record a bench saves beside its table, bench/results/<bench>.json, from which
bench/plots.py draws its figure: the measured numbers with when, where and under what load
they were measured, so that a plot can be redrawn (and read) without running the bench again.

A record is a JSON object:

    bench        the bench's name (its module's)
    date         when it finished, UTC, ISO 8601
    commit       the tree measured: `git describe --always --dirty` (None outside a checkout)
    machine      CPUs, CPU model, memory, kernel, OS, Python
    load_average 1-, 5- and 15-minute load averages at the start and at the end
    wall_s       seconds from the start of the run to the record
    params       what the bench was asked to measure (sizes, repetitions, ...)
    rows         the bench's own rows: medians, and the samples they come from
    ...          anything else the bench adds (e.g. a table's footnote figures)

Machine facts only, never a path: the records are committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bench.stats import median

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    os_name = None
    pretty = _first_line_with("/etc/os-release", "PRETTY_NAME=")
    if pretty is not None:
        os_name = pretty.split("=", 1)[1].strip('"')
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal:")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kib.split()[0]) / (1 << 20), 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
    }


def commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Recorder:
    """Started with the bench (load average and clock at the start); `save` writes the record
    when the rows are known."""

    def __init__(self, bench: str, params: Mapping[str, Any]) -> None:
        self.bench = bench
        self.params = dict(params)
        self.started = time.monotonic()
        self.load_start = _load()

    def record(self, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "machine": machine(),
            "load_average": {"start": self.load_start, "end": _load()},
            "wall_s": round(time.monotonic() - self.started, 1),
            "params": self.params,
            "rows": rows,
            **extra,
        }

    def save(self, rows: list[dict[str, Any]], directory: Path = RESULTS_DIR,
             plots_dir: Path | None = None, **extra: Any) -> dict[str, Any]:
        """Writes the record and draws its plot (into bench/plots unless `plots_dir`);
        returns the record."""
        data = self.record(rows, **extra)
        path = write(data, directory)
        # Imported here: a bench that cannot plot (no matplotlib) still keeps its numbers.
        try:
            from bench import plots
        except ImportError as exc:
            print(f"saved {shown(path)}; no plot ({exc}): pip install -e '.[bench]'",
                  file=sys.stderr)
            return data
        svg = plots.render(data, plots_dir or plots.PLOTS_DIR)
        print(f"saved {shown(path)}, drew {shown(svg)}", file=sys.stderr)
        return data

    def footer(self) -> str:
        """The load average line under a table, as the record holds it."""
        now = os.getloadavg()[0]
        return (f"({time.monotonic() - self.started:.0f} s; load average "
                f"{self.load_start[0]:.1f} at the start, {now:.1f} at the end)")


def samples_json(samples: Sequence[Any], extra: Iterable[str] = ()) -> dict[str, Any]:
    """A row's samples (dataclasses) and the median of each of their fields and of the
    properties named in `extra`, which the plots read."""
    names = [f.name for f in fields(samples[0])] + list(extra) if samples else []
    return {
        "median": {n: median(float(getattr(s, n)) for s in samples) for n in names},
        "samples": [asdict(s) for s in samples],
    }


def shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def write(data: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['bench']}.json"
    # Through a temporary name: a bench interrupted while writing keeps the previous record.
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read(bench: str, directory: Path = RESULTS_DIR) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / f"{bench}.json").read_text())
    return data


def saved(directory: Path = RESULTS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json"))
