"""PNG plots of a run (matplotlib, Agg backend: no display needed).

Every function takes the parsed run (`experiments.analysis.analysis.Run`) and/or its
summary, writes one PNG into ``out_dir`` and returns its path, or None when
the run has no data for that plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.analysis import metrics  # noqa: E402
from experiments.analysis.analysis import Run, port_series  # noqa: E402

TIER_ORDER = ("host", "tor-spine", "tor-leaf", "leaf-spine")
HEATMAP_BINS = 60


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def busbw_vs_size(summary: dict[str, Any], out_dir: Path) -> Path | None:
    """busbw (GB/s, and efficiency on the right axis) against message size, one line per job."""
    rows = [r for r in summary["rows"] if r["busbw_GBps"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for job in dict.fromkeys(r["job"] for r in rows):
        mine = sorted((r for r in rows if r["job"] == job), key=lambda r: r["size"])
        ax.plot([r["size"] for r in mine], [r["busbw_GBps"] for r in mine], "o-",
                label=f"{job} ({mine[0]['collective']})")
    ax.set_xscale("log")
    ax.set_xlabel("message size S (bytes)")
    ax.set_ylabel("busbw (GB/s, emulated)")
    ax.set_title("Bus bandwidth vs message size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, out_dir / "busbw.png")


def cdf(values: list[float], title: str, xlabel: str, path: Path) -> Path | None:
    """Empirical CDF of ``values`` with p50 / p99 marked."""
    if not values:
        return None
    data = np.sort(np.asarray(values, dtype=float))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.step(data, np.arange(1, data.size + 1) / data.size, where="post")
    tail = metrics.percentiles(data)
    for name, value in (("p50", tail.p50), ("p99", tail.p99)):
        ax.axvline(value, linestyle="--", alpha=0.5)
        ax.annotate(f"{name} {value:.3g}", (value, 0.05), rotation=90, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def completion_cdf(run: Run, out_dir: Path) -> Path | None:
    """CDF of message completion times (start to last byte delivered)."""
    values = [c for c in map(run.completion_ms, run.messages) if c is not None]
    return cdf(values, "Message completion time", "ms", out_dir / "completion_cdf.png")


def delay_cdf(run: Run, out_dir: Path) -> Path | None:
    """CDF of sampled one-way packet delays."""
    values = [d["delay_ns"] / 1e6 for d in run.delays]
    return cdf(values, "One-way packet delay", "ms", out_dir / "delay_cdf.png")


def mark_faults(ax: Any, summary: dict[str, Any], t0: float) -> None:
    """A dashed red line at each executed fault, labelled with its kind and target."""
    for fault in summary.get("faults", []):
        if fault.get("executed"):
            at = fault["t0_ns"] / 1e9 - t0
            ax.axvline(at, color="red", linestyle="--", linewidth=1)
            ax.annotate(f"{fault['kind']} {fault['target']}", (at, 0), xycoords=(
                "data", "axes fraction"), rotation=90, fontsize=7, color="red",
                va="bottom", ha="right")


def utilization_heatmap(run: Run, summary: dict[str, Any], out_dir: Path) -> Path | None:
    """Link x time utilization; rows are egress queues grouped by tier."""
    series = port_series(run)
    times = [r["time_s"] for rows in series.values() for r in rows]
    if not times or max(times) <= min(times):
        return None
    t0, t1 = min(times), max(times)
    bins = max(1, min(HEATMAP_BINS, max(len(rows) - 1 for rows in series.values())))
    width = (t1 - t0) / bins
    rank = {tier: i for i, tier in enumerate(TIER_ORDER)}
    keys = sorted(series, key=lambda k: (rank.get(series[k][0]["tier"], 99), k))
    matrix = np.full((len(keys), bins), np.nan)
    for i, key in enumerate(keys):
        rows = series[key]
        samples = [metrics.CounterSample(key, r["time_s"], r["sent_bytes"]) for r in rows]
        for point in metrics.utilization_series(samples, float(rows[0]["capacity_mbps"])):
            first = min(int((point.start_s - t0) / width), bins - 1)
            last = max(first, min(int(np.ceil((point.end_s - t0) / width - 1e-9)) - 1, bins - 1))
            cells = matrix[i, first:last + 1]  # a view: the bins this interval overlaps
            matrix[i, first:last + 1] = np.fmax(cells, point.utilization)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.06 * len(keys) + 1.5)))
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0,
                      vmax=max(1.0, float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 1),
                      extent=(0, t1 - t0, len(keys), 0))
    bounds, ticks, labels = [], [], []
    for tier in dict.fromkeys(series[k][0]["tier"] for k in keys):
        members = [i for i, k in enumerate(keys) if series[k][0]["tier"] == tier]
        bounds.append(members[0])
        ticks.append((members[0] + members[-1] + 1) / 2)
        labels.append(f"{tier} ({len(members)})")
    for bound in bounds[1:]:
        ax.axhline(bound, color="white", linewidth=1)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("time (s)")
    ax.set_title("Link utilization (egress queues, grouped by tier)")
    mark_faults(ax, summary, t0)
    fig.colorbar(image, ax=ax, label="utilization")
    return _save(fig, out_dir / "utilization_heatmap.png")


def queue_depth(run: Run, summary: dict[str, Any], out_dir: Path) -> Path | None:
    """Backlog over time of the hottest egress queues."""
    hottest = [entry["port"] for entry in summary["queues"]["hottest"]]
    series = port_series(run)
    if not hottest:
        return None
    t0 = min(r["time_s"] for rows in series.values() for r in rows)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key in hottest:
        rows = series[key]
        ax.plot([r["time_s"] - t0 for r in rows], [r["backlog_bytes"] / 1e3 for r in rows],
                label=f"{key} -> {rows[0]['peer']}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("queue backlog (kB)")
    ax.set_title(f"Queue depth of the {len(hottest)} hottest ports")
    mark_faults(ax, summary, t0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir / "queues.png")


def all_plots(run: Run, summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Every plot that has data, by name."""
    made = {"busbw": busbw_vs_size(summary, out_dir),
            "completion_cdf": completion_cdf(run, out_dir),
            "delay_cdf": delay_cdf(run, out_dir),
            "utilization_heatmap": utilization_heatmap(run, summary, out_dir),
            "queues": queue_depth(run, summary, out_dir)}
    return {name: path for name, path in made.items() if path is not None}
