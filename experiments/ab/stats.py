"""Statistics of an A/B comparison: per-run figures from summary.json, bootstrap CIs,
per-algorithm aggregates and deltas against a baseline (pure functions, no root).

Per run (one summary.json; definitions in docs/ab.md):
- ``efficiency``: mean of its rows' ``efficiency`` (busbw / line rate) weighted by the
  bytes of each row's messages (``metrics.weighted_efficiency``); each row's own is kept
  in ``job_efficiency``.
- ``fluid_efficiency``: ``fluid.efficiency``, the fluid max-min estimate of the run's
  transfers on its own recorded paths (experiments.analysis.fluid).
- ``loss_pct``, ``retransmits``: ``loss.loss_pct``, ``loss.retransmits``.
- ``delay_p99_ms``: ``delay_ms.p99`` (one-way packet delay of the whole run).
- ``queue_p99_bytes``: p99 backlog of the run's hottest egress queue
  (max over ``queues.ports`` of ``p99_backlog_bytes``).
- ``fabric_util_mean`` / ``fabric_util_max``: utilization of the switch-to-switch
  tiers (every ``utilization.tiers`` but ``host``), link-weighted mean and max.
- ``uplink_imbalance``: worst ``max_over_mean`` of ``utilization.uplink_imbalance``.
Per algorithm, only trusted runs count: each figure is the mean over runs with a
95 % percentile-bootstrap CI. CCT p50 / p99 pool the per-iteration CCTs
(``rows[].cct_ms``) of every trusted run, per (job, S).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from experiments.analysis import metrics

METRICS = ("efficiency", "fluid_efficiency", "loss_pct", "retransmits", "delay_p99_ms", "queue_p99_bytes",
           "fabric_util_mean", "fabric_util_max", "uplink_imbalance")
TRUSTED, UNTRUSTED, FAILED = "trusted", "untrusted", "failed"


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float] | None:
    """(mean, low, high): percentile bootstrap CI of the mean (scipy), seeded; None when empty.

    One value cannot be resampled: its CI is the value itself, ``(v, v, v)``.
    """
    data = np.asarray(list(values), dtype=float)
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"bootstrap_ci: need 0 < confidence < 1 and resamples >= 1, "
                         f"got {confidence}, {resamples}")
    if data.size == 0:
        return None
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    result = stats.bootstrap((data,), np.mean, n_resamples=resamples, vectorized=True,
                             confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return mean, float(interval.low), float(interval.high)


def cct_key(row: dict[str, Any]) -> str:
    """The label of a (job, S) row, e.g. ``train S=4000000``."""
    return f"{row['job']} S={row['size']}"


def run_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The per-run figures of `METRICS` from one summary.json (None when absent)."""
    loss = summary.get("loss") or {}
    delay = summary.get("delay_ms") or {}
    ports = (summary.get("queues") or {}).get("ports", {})
    util = summary.get("utilization") or {}
    fabric = {name: t for name, t in util.get("tiers", {}).items() if name != "host"}
    links = sum(t["links"] for t in fabric.values())
    uplinks = util.get("uplink_imbalance", {})
    return {
        "efficiency": metrics.weighted_efficiency(summary.get("rows", [])),
        "fluid_efficiency": (summary.get("fluid") or {}).get("efficiency"),
        "loss_pct": loss.get("loss_pct"), "retransmits": loss.get("retransmits"),
        "delay_p99_ms": delay.get("p99"),
        "queue_p99_bytes": max((p["p99_backlog_bytes"] for p in ports.values()), default=None),
        "fabric_util_mean": (sum(t["mean"] * t["links"] for t in fabric.values()) / links
                             if links else None),
        "fabric_util_max": max((t["max"] for t in fabric.values()), default=None),
        "uplink_imbalance": max((u["max_over_mean"] for u in uplinks.values()), default=None)}


def run_record(algorithm: str, rep: int, seed: int, folder: str,
               summary: dict[str, Any] | None, failure: str | None = None) -> dict[str, Any]:
    """One run of the A/B as stored in ab.json: status, reasons, figures and CCTs."""
    record: dict[str, Any] = {"algorithm": algorithm, "rep": rep, "seed": seed, "dir": folder}
    if summary is None:
        return {**record, "status": FAILED, "reasons": [failure or "no summary"],
                "metrics": None, "cct_ms": {}}
    trusted = bool(summary.get("trusted"))
    return {**record, "status": TRUSTED if trusted else UNTRUSTED,
            "reasons": [] if trusted else list(summary.get("fidelity", {}).get("reasons", [])),
            "metrics": run_metrics(summary),
            "job_efficiency": {cct_key(r): r["efficiency"] for r in summary.get("rows", [])
                               if r.get("efficiency") is not None},
            "cct_ms": {cct_key(r): list(r.get("cct_ms", [])) for r in summary.get("rows", [])}}


def _tail(values: Sequence[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    tail = metrics.percentiles(values)
    return {"count": tail.count, "p50": tail.p50, "p99": tail.p99}


def aggregate_algorithm(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate of one algorithm's runs: trusted count, mean + CI per figure, pooled CCTs."""
    trusted = [r for r in records if r["status"] == TRUSTED]
    figures: dict[str, Any] = {}
    for name in METRICS:
        ci = bootstrap_ci(r["metrics"][name] for r in trusted if r["metrics"][name] is not None)
        figures[name] = None if ci is None else {
            "mean": ci[0], "low": ci[1], "high": ci[2],
            "n": sum(r["metrics"][name] is not None for r in trusted)}
    keys = dict.fromkeys(key for r in records for key in r["cct_ms"])
    jobs = dict.fromkeys(key for r in trusted for key in r.get("job_efficiency", {}))
    job_figures = {}
    for key in jobs:
        ci = bootstrap_ci(r["job_efficiency"][key] for r in trusted
                          if key in r.get("job_efficiency", {}))
        job_figures[key] = None if ci is None else {"mean": ci[0], "low": ci[1], "high": ci[2]}
    return {"runs": len(records), "trusted": len(trusted),
            "trusted_label": f"{len(trusted)}/{len(records)}",
            "untrusted": sum(r["status"] == UNTRUSTED for r in records),
            "failed": sum(r["status"] == FAILED for r in records),
            "metrics": figures, "job_efficiency": job_figures,
            "cct_ms": {key: _tail([c for r in trusted for c in r["cct_ms"].get(key, [])])
                       for key in keys},
            "excluded": [{"rep": r["rep"], "seed": r["seed"], "dir": r["dir"],
                          "status": r["status"], "reasons": r["reasons"]}
                         for r in records if r["status"] != TRUSTED]}


def ci_overlap(a: dict[str, float] | None, b: dict[str, float] | None) -> bool | None:
    """Whether two {mean, low, high} intervals overlap; None when either is missing."""
    if a is None or b is None:
        return None
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def baseline_deltas(results: dict[str, dict[str, Any]], baseline: str,
                    metric: str = "efficiency") -> dict[str, dict[str, Any]]:
    """Per algorithm: relative change (%) of the mean of ``metric`` vs ``baseline``,
    and whether their 95 % CIs overlap (None where a mean is missing or zero)."""
    base = results[baseline]["metrics"][metric]
    deltas = {}
    for algorithm, result in results.items():
        mine = result["metrics"][metric]
        change = (100 * (mine["mean"] - base["mean"]) / base["mean"]
                  if mine is not None and base is not None and base["mean"] else None)
        deltas[algorithm] = {"metric": metric, "delta_pct": change,
                             "ci_overlap": ci_overlap(mine, base),
                             "baseline": algorithm == baseline}
    return deltas


def headline_cct(records: Sequence[dict[str, Any]]) -> str | None:
    """The (job, S) whose CCT the results table shows: the largest S, first job on ties."""
    keys = list(dict.fromkeys(key for r in records for key in r["cct_ms"]))
    return max(keys, key=lambda k: (int(k.rsplit("S=", 1)[1]), -keys.index(k)), default=None)


def aggregate(records: Sequence[dict[str, Any]], algorithms: Sequence[str],
              baseline: str) -> dict[str, Any]:
    """The ``results``, ``deltas`` and ``headline_cct`` parts of ab.json."""
    results = {a: aggregate_algorithm([r for r in records if r["algorithm"] == a])
               for a in algorithms}
    return {"results": results, "deltas": baseline_deltas(results, baseline),
            "headline_cct": headline_cct(records)}
