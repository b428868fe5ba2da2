"""The benches' figures, drawn from their records (bench/results/<bench>.json, see
bench/results.py) into bench/plots/<bench>.svg, which BENCHMARKS.md shows beside each table.

Each bench draws its figure after its run; this module redraws them all from the saved
records without measuring anything again:

    PYTHONPATH=. .venv/bin/python -m bench.plots [BENCH ...]

One function per figure, each taking a record and returning a matplotlib Figure. The same
record always draws the same bytes (no date in the SVG, fixed element ids), so redrawing
leaves git quiet unless the numbers changed. Every bar carries an id
`bar-<bar>-<segment>-<group>`, which the tests count.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench import results

# No display anywhere the benches run (root shells, CI): never let matplotlib look for one.
matplotlib.use("Agg")

PLOTS_DIR = Path(__file__).resolve().parent / "plots"
STYLE = {
    # Text stays text (searchable, small, and countable by the tests) instead of glyph paths.
    "svg.fonttype": "none",
    "svg.hashsalt": "ckpt-bench",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
}
# One hue per side: ckpt's phases in blues and greens, the baseline in oranges, the rest grey.
CKPT = ["#1f4e79", "#2e75b6", "#5b9bd5", "#9dc3e6", "#c9dff2"]
BASE = ["#c55a11", "#f4b183", "#f8cbad"]
OTHER = "#a6a6a6"
OPERATOR = ["#c00000", "#ff7c80", "#ffc7ce"]


@dataclass
class Segment:
    label: str
    values: list[float]
    color: str
    hatch: str | None = None


@dataclass
class Bar:
    name: str
    segments: list[Segment]
    # Text over each group's bar; the total in seconds when None.
    notes: list[str] | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _bars(ax: Axes, groups: Sequence[str], bars: Sequence[Bar], fmt: str = "{:.2f}") -> None:
    """Grouped bars, each stacked from its segments, with a note over each."""
    width = 0.8 / len(bars)
    for b, bar in enumerate(bars):
        xs = [g + (b - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        bottom = [0.0] * len(groups)
        for seg in bar.segments:
            rects = ax.bar(xs, seg.values, width * 0.92, bottom=bottom, color=seg.color,
                           hatch=seg.hatch, label=seg.label, edgecolor="white", linewidth=0.5)
            for group, rect in zip(groups, rects, strict=True):
                rect.set_gid(f"bar-{_slug(bar.name)}-{_slug(seg.label)}-{_slug(group)}")
            bottom = [a + v for a, v in zip(bottom, seg.values, strict=True)]
        notes = bar.notes or [fmt.format(top) for top in bottom]
        for x, top, note in zip(xs, bottom, notes, strict=True):
            ax.annotate(note, (x, top), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure, right of the plots, where it hides no bar."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside right upper", fontsize=7,
               frameon=False)


def caption(record: dict[str, Any]) -> str:
    """Where the numbers come from, under every figure: a ratio is read with its load."""
    load = record["load_average"]
    cpus = record["machine"].get("cpus")
    reps = record["params"].get("reps")
    parts = [
        f"{record.get('commit') or 'unknown commit'}, {record['date'][:10]}",
        f"{cpus} CPUs" if cpus else None,
        f"load average {load['start'][0]:.1f} \u2192 {load['end'][0]:.1f}",
        f"medians of {reps}" if isinstance(reps, int) else None,
    ]
    return "; ".join(p for p in parts if p)


def _figure(record: dict[str, Any], title: str, width: float = 9.5,
            height: float = 4.2, columns: int = 1,
            sharey: bool = False) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, columns, squeeze=False, sharey=sharey)[0]
    # On the left: the legend sits top right, outside the plots.
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.supxlabel(caption(record), fontsize=7, color="#595959")
    return fig, list(axes)


def _median(row: dict[str, Any], key: str) -> float:
    return float(row["median"][key])


def plot_restore(record: dict[str, Any]) -> Figure:
    """Restore created -> Pod Ready split by phase, against tar -x + runc restore and against
    the Pod's cold start, per memory size (bench/restore.py)."""
    rows = record["rows"]
    groups = [f"{r['mib']} MiB" for r in rows]

    def med(key: str) -> list[float]:
        return [_median(r, key) for r in rows]

    restore, fetch, verify, extract, pod = (
        med(k) for k in ("restore", "fetch", "verify", "extract", "pod"))
    # Restore -> Ready beyond the agent's and the kubelet's phases: the API calls, the
    # operator, the watch.
    rest = [max(0.0, t - f - v - e - p)
            for t, f, v, e, p in zip(restore, fetch, verify, extract, pod, strict=True)]
    base = [a + b for a, b in zip(med("base_tar"), med("base_runc"), strict=True)]
    fig, (ax,) = _figure(record, "Restore as a Pod: Restore created \u2192 Pod Ready, by phase")
    _bars(ax, groups, [
        Bar("restore", [
            Segment("Restore: fetch", fetch, CKPT[0]),
            Segment("Restore: verify", verify, CKPT[1]),
            Segment("Restore: extract", extract, CKPT[2]),
            Segment("Restore: Pod created \u2192 running", pod, CKPT[3]),
            Segment("Restore: operator, API, watch", rest, CKPT[4]),
        ], notes=[f"{t:.2f} s ({t / b:.2f}x)" if b else f"{t:.2f} s"
                  for t, b in zip(restore, base, strict=True)]),
        Bar("baseline", [
            Segment("baseline: tar -x", med("base_tar"), BASE[0]),
            Segment("baseline: runc restore", med("base_runc"), BASE[1]),
        ]),
        Bar("cold start", [Segment("cold start (apply \u2192 Ready)", med("cold"), OTHER)]),
    ])
    ax.set_ylabel("seconds (median)")
    ax.set_xlabel("touched memory")
    _legend(fig, [ax])
    return fig


def plot_agent(record: dict[str, Any]) -> Figure:
    """Checkpoint and restore throughput of the agent's archive against plain runc + tar,
    per memory size (bench/agent.py)."""
    rows = record["rows"]
    groups = [f"{r['mib']} MiB" for r in rows]

    def rate(key: str) -> list[float]:
        return [r["mib"] / _median(r, key) for r in rows]

    fig, (left, right) = _figure(
        record, "Node agent: MiB of touched memory per second, against plain runc + tar",
        width=11.0, columns=2)
    for ax, title, base_key, base_label, pipe_key, pipe_label in (
        (left, "checkpoint", "base_total", "runc checkpoint + tar + fsync",
         "pipe_total", "ckpt: dump \u2192 tar \u2192 zstd \u2192 sha256 \u2192 store"),
        (right, "restore", "base_restore", "tar -x + runc restore",
         "pipe_restore", "ckpt: staging + runc restore"),
    ):
        base, pipe = rate(base_key), rate(pipe_key)
        _bars(ax, groups, [
            Bar(f"{title} baseline", [Segment(base_label, base, BASE[0])],
                notes=[f"{v:.0f}" for v in base]),
            # Time ratio, as the table prints it: pipeline seconds / baseline seconds.
            Bar(f"{title} ckpt", [Segment(pipe_label, pipe, CKPT[1])],
                notes=[f"{p:.0f} (time {b / p:.2f}x)" for b, p in zip(base, pipe, strict=True)]),
        ])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("MiB/s (median)")
        ax.set_xlabel("touched memory")
    _legend(fig, [left, right])
    return fig


def plot_storage(record: dict[str, Any]) -> Figure:
    """Upload and download throughput of the archive stream against plain objects in S3
    (bench/storage.py)."""
    (row,) = record["rows"]
    mib = row["mib"]

    def rate(*keys: str) -> list[float]:
        return [mib / _median(row, k) for k in keys]

    base = rate("up_base", "down_base")
    plain = rate("up_plain", "down_plain")
    enc = rate("up_enc", "down_enc")

    def notes(values: list[float]) -> list[str]:
        return [f"{v:.0f} (time {b / v:.2f}x)" for b, v in zip(base, values, strict=True)]

    fig, (ax,) = _figure(record, f"Archives in S3: MiB of images per second ({mib} MiB)")
    _bars(ax, ["upload (checkpoint)", "download (restore)"], [
        Bar("plain", [Segment("plain objects, uncompressed", base, BASE[0])],
            notes=[f"{v:.0f}" for v in base]),
        Bar("archive", [Segment("ckpt archive (zstd, sha256)", plain, CKPT[1])],
            notes=notes(plain)),
        Bar("archive age", [Segment("ckpt archive + age", enc, CKPT[3])], notes=notes(enc)),
    ])
    ax.set_ylabel("MiB/s (median)")
    _legend(fig, [ax])
    return fig


def plot_api(record: dict[str, Any]) -> Figure:
    """Latency percentiles per request of the checkpoints API per server and concurrency
    (bench/api.py)."""
    rows = record["rows"]
    levels = sorted({r["concurrency"] for r in rows})
    servers = list(dict.fromkeys(r["server"] for r in rows))
    cell = {(r["server"], r["concurrency"]): r for r in rows}
    fig, axes = _figure(record, "Checkpoints API: latency per request (create, info, "
                        "uploaded, list)", width=10.0, columns=len(levels),
                        sharey=True)
    for ax, level in zip(axes, levels, strict=True):
        # Log: the bare app answers in a tenth of a millisecond, PostgreSQL at 64 in hundreds.
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        present = [s for s in servers if (s, level) in cell]
        _bars(ax, present, [
            Bar(f"c{level} {p}", [Segment(p, [cell[s, level][f"{p}_ms"] for s in present],
                                          color)],
                notes=[f"{cell[s, level][f'{p}_ms']:.1f}" for s in present])
            for p, color in (("p50", CKPT[0]), ("p90", CKPT[2]), ("p99", BASE[0]))
        ])
        ax.set_title(f"concurrency {level}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_ylabel("milliseconds")
    _legend(fig, axes)
    return fig


def plot_apps(record: dict[str, Any]) -> Figure:
    """Checkpoint (by phase), Restore -> Ready and cold start per application
    (bench/apps.py)."""
    rows = record["rows"]
    groups = [r["app"] for r in rows]

    def med(key: str) -> list[float]:
        return [_median(r, key) for r in rows]

    freeze, dump, store, total = (med(k) for k in ("freeze", "dump", "store", "checkpoint"))
    rest = [max(0.0, t - f - d - s)
            for t, f, d, s in zip(total, freeze, dump, store, strict=True)]
    restore, cold = med("restore"), med("cold")
    fig, (ax,) = _figure(record, "Real applications: checkpoint, Restore \u2192 Ready and "
                         "cold start")
    _bars(ax, groups, [
        Bar("checkpoint", [
            Segment("checkpoint: freeze", freeze, CKPT[0]),
            Segment("checkpoint: dump", dump, CKPT[1]),
            Segment("checkpoint: store", store, CKPT[2]),
            Segment("checkpoint: API, writable layer", rest, CKPT[4]),
        ]),
        Bar("restore", [Segment("Restore \u2192 Ready", restore, BASE[0])],
            notes=[f"{r:.2f} ({r / c:.2f}x)" if c else f"{r:.2f}"
                   for r, c in zip(restore, cold, strict=True)]),
        Bar("cold start", [Segment("cold start to the same state", cold, OTHER)]),
    ])
    ax.set_ylabel("seconds (median)")
    _legend(fig, [ax])
    return fig


BREAKDOWN = [
    ("head", "operator: before the first job", OPERATOR[0]),
    ("starved", "operator: agent slot idle, jobs not handed over", OPERATOR[1]),
    ("tail", "operator: last job done \u2192 last Ready", OPERATOR[2]),
    ("handoff", "agent: slot idle, jobs queued at the agent", BASE[1]),
    ("drain", "agent: last jobs alone", BASE[2]),
    ("agent", "agent: slots in use", CKPT[1]),
]


def plot_operator_load(record: dict[str, Any]) -> Figure:
    """Where the wall of a batch of N Checkpoints goes, as shares of the wall
    (bench/operator_load.py)."""
    rows = record["rows"]
    groups = [f"N = {r['size']}" for r in rows]
    fig, (ax,) = _figure(record, "Operator: where the wall of a batch of N Checkpoints goes")
    segments = []
    # Shares of the parts' own sum: medians taken part by part need not add up to the
    # median wall, and the bar should read as the whole batch.
    sums = [sum(r["breakdown"][key] for key, _, _ in BREAKDOWN) for r in rows]
    for key, label, color in BREAKDOWN:
        values = [100 * r["breakdown"][key] / total if total else 0.0
                  for r, total in zip(rows, sums, strict=True)]
        segments.append(Segment(label, values, color))
    _bars(ax, groups, [Bar("batch", segments, notes=[
        f"wall {r['wall']:.2f} s, operator {r['operator_pct']:.1f}%" for r in rows])])
    ax.set_ylabel("% of the wall (median over runs)")
    ax.set_ylim(0, 112)
    _legend(fig, [ax])
    return fig


PLOTS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "restore": plot_restore,
    "agent": plot_agent,
    "storage": plot_storage,
    "api": plot_api,
    "apps": plot_apps,
    "operator_load": plot_operator_load,
}


def render(record: dict[str, Any], directory: Path = PLOTS_DIR) -> Path:
    """Draws the record's figure into directory/<bench>.svg; returns its path."""
    with matplotlib.rc_context(STYLE):
        fig = PLOTS[record["bench"]](record)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{record['bench']}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the benches' SVGs from their records.")
    parser.add_argument("benches", nargs="*", metavar="BENCH",
                        help=f"some of {', '.join(PLOTS)} (default: every saved record)")
    parser.add_argument("--results", type=Path, default=results.RESULTS_DIR,
                        help="where the records are (default: bench/results)")
    parser.add_argument("--out", type=Path, default=PLOTS_DIR,
                        help="where the SVGs go (default: bench/plots)")
    args = parser.parse_args(argv)
    unknown = [b for b in args.benches if b not in PLOTS]
    if unknown:
        parser.error(f"no plot for {', '.join(unknown)}: choose from {', '.join(PLOTS)}")
    names = args.benches or [b for b in results.saved(args.results) if b in PLOTS]
    for name in names:
        print(results.shown(render(results.read(name, args.results), args.out)))
    missing = [] if args.benches else [b for b in PLOTS if b not in names]
    if missing:
        print(f"no record yet (run its bench): {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
