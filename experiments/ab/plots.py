"""PNG plots of an A/B comparison (matplotlib, Agg backend): efficiency bars with CIs,
overlaid one-way delay CDFs, and one utilization heatmap per algorithm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.analysis import plots  # noqa: E402
from experiments.ab.stats import TRUSTED  # noqa: E402
from experiments.analysis.analysis import load_run, read_csv  # noqa: E402

#: At most this many delay samples per algorithm are drawn (evenly spaced quantiles).
CDF_POINTS = 20_000


_save = plots._save


def efficiency_bars(ab: dict[str, Any], out_dir: Path) -> Path | None:
    """Mean busbw efficiency per algorithm, 95 % CI error bars, each trusted run a dot."""
    algorithms = [a for a in ab["algorithms"] if ab["results"][a]["metrics"]["efficiency"]]
    if not algorithms:
        return None
    figures = [ab["results"][a]["metrics"]["efficiency"] for a in algorithms]
    means = np.array([100 * f["mean"] for f in figures])
    errors = np.array([[means[i] - 100 * f["low"] for i, f in enumerate(figures)],
                       [100 * f["high"] - means[i] for i, f in enumerate(figures)]])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    x = np.arange(len(algorithms))
    colors = ["tab:gray" if a == ab["baseline"] else "tab:blue" for a in algorithms]
    ax.bar(x, means, yerr=errors, capsize=6, color=colors, alpha=0.7)
    for i, algorithm in enumerate(algorithms):
        values = [100 * r["metrics"]["efficiency"] for r in ab["runs"]
                  if r["algorithm"] == algorithm and r["status"] == TRUSTED
                  and r["metrics"]["efficiency"] is not None]
        ax.plot([i] * len(values), values, "k.", alpha=0.6)
    ax.set_xticks(x, algorithms)
    ax.set_ylabel("busbw efficiency (% of line rate)")
    ax.set_title("Efficiency per algorithm (mean, 95 % CI, trusted runs)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out_dir / "ab_efficiency.png")


def _delays_ms(out_dir: Path, ab: dict[str, Any], algorithm: str) -> np.ndarray:
    values = [row["delay_ns"] / 1e6 for r in ab["runs"]
              if r["algorithm"] == algorithm and r["status"] == TRUSTED
              for row in read_csv(out_dir / r["dir"] / "delays.csv")]
    return np.sort(np.asarray(values, dtype=float))


def delay_cdfs(ab: dict[str, Any], out_dir: Path) -> Path | None:
    """One-way packet delay CDFs of every algorithm (trusted runs pooled), overlaid."""
    curves = {a: _delays_ms(out_dir, ab, a) for a in ab["algorithms"]}
    curves = {a: data for a, data in curves.items() if data.size}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for algorithm, data in curves.items():
        fraction = np.linspace(0, 1, min(data.size, CDF_POINTS))
        values = np.quantile(data, fraction)
        ax.step(values, fraction, where="post", label=f"{algorithm} (p99 "
                f"{np.percentile(data, 99):.2f} ms)")
    ax.set_xlabel("one-way delay (ms)")
    ax.set_ylabel("fraction of packets")
    ax.set_title("One-way packet delay (trusted runs pooled)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir / "ab_delay_cdf.png")


def representative(ab: dict[str, Any], algorithm: str) -> dict[str, Any] | None:
    """The run whose heatmap stands for ``algorithm``: its first trusted run, else its
    first run that has a folder (None when every run failed)."""
    mine = [r for r in ab["runs"] if r["algorithm"] == algorithm]
    return next((r for r in mine if r["status"] == TRUSTED),
                next((r for r in mine if r["metrics"] is not None), None))


def heatmaps(ab: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Per algorithm, the utilization heatmap of its representative run (made when missing)."""
    made = {}
    for algorithm in ab["algorithms"]:
        record = representative(ab, algorithm)
        if record is None:
            continue
        run_dir = out_dir / record["dir"]
        path = run_dir / "utilization_heatmap.png"
        if not path.exists() and (run_dir / "ports.csv").exists():
            path = plots.utilization_heatmap(load_run(run_dir), {}, run_dir)
        if path is not None and path.exists():
            made[algorithm] = path
    return made
