"""A/B statistics on synthetic summaries shaped like a real summary.json."""

from __future__ import annotations

import copy

import pytest
from rich.console import Console

from experiments.ab import stats as ab_stats, table as ab_table
from experiments.ab.stats import aggregate, bootstrap_ci, run_record

# Trimmed copy of the summary.json of a real `railcc run experiments/specs/allreduce.toml`.
SUMMARY = {
    "run": {"name": "allreduce", "algorithm": "ecmp", "seed": 1, "started": "2026-01-01T00:00:00",
            "topology": "rail-2tier-small", "nic_mbps": 10.0},
    "trusted": True, "fidelity": {"trusted": True, "reasons": []},
    "rows": [{"job": "train", "collective": "allreduce", "size": 1000000, "iterations": 2,
              "cct_ms": [340.0, 350.0], "time_ms": 345.0, "efficiency": 1.0},
             {"job": "train", "collective": "allreduce", "size": 4000000, "iterations": 2,
              "cct_ms": [1400.0, 1410.0], "time_ms": 1405.0, "efficiency": 0.9}],
    "loss": {"data_packets_sent": 16128, "switch_drops": 0, "host_drops": 0, "loss_pct": 0.5,
             "retransmits": 10, "retransmit_pct": 0.06},
    "delay_ms": {"count": 16128, "mean": 1.0, "p50": 0.8, "p99": 4.5, "p999": 7.4, "max": 8.7},
    "completion_ms": {"count": 1792, "mean": 56.6, "p50": 55.7, "p99": 97.1, "p999": 98.5,
                      "max": 98.6},
    "utilization": {
        "tiers": {"host": {"links": 32, "mean": 0.62, "p99": 1.08, "max": 1.14,
                           "imbalance_max_over_mean": 0.0, "imbalance_cov": 0.0},
                  "tor-spine": {"links": 64, "mean": 0.15, "p99": 1.06, "max": 0.9,
                                "imbalance_max_over_mean": 3.0, "imbalance_cov": 1.73}},
        "uplink_imbalance": {"tor-spine": {"links": 32, "max_over_mean": 3.0, "cov": 1.73}}},
    "queues": {"ports": {"s0:1": {"node": "s0", "peer": "t0r0", "tier": "tor-spine",
                                  "p99_backlog_bytes": 1500.0, "max_backlog_bytes": 3000.0,
                                  "drops": 0},
                         "t0r2:2": {"node": "t0r2", "peer": "h2", "tier": "host",
                                    "p99_backlog_bytes": 26.7, "max_backlog_bytes": 62.0,
                                    "drops": 0}},
               "hottest": []},
    "conservation": {"ok": True},
}


def summary(efficiency: float = 1.0, trusted: bool = True, reasons: tuple[str, ...] = (),
            cct: float = 1400.0) -> dict:
    """SUMMARY with both rows at ``efficiency`` and the 4 MB row's CCTs around ``cct``."""
    data = copy.deepcopy(SUMMARY)
    for row in data["rows"]:
        row["efficiency"] = efficiency
    data["rows"][1]["cct_ms"] = [cct, cct + 10]
    data["trusted"] = trusted
    data["fidelity"] = {"trusted": trusted, "reasons": list(reasons)}
    data["fluid"] = {"efficiency": 0.5, "rows": [], "reason": None}
    return data


def records(algorithm: str, efficiencies: list[float], **kwargs) -> list[dict]:
    return [run_record(algorithm, rep, 1 + rep, f"{algorithm}/rep{rep}", summary(e, **kwargs))
            for rep, e in enumerate(efficiencies)]


def test_bootstrap_is_deterministic_and_contains_the_mean():
    values = [0.61, 0.65, 0.58, 0.70, 0.66, 0.63]
    first = bootstrap_ci(values, seed=3)
    assert first == bootstrap_ci(values, seed=3)
    mean, low, high = first
    assert mean == pytest.approx(sum(values) / len(values))
    assert low < mean < high and min(values) <= low and high <= max(values)
    assert bootstrap_ci(values, seed=4) != first


def test_bootstrap_narrows_with_more_samples():
    import numpy as np
    rng = np.random.default_rng(1)
    few = bootstrap_ci(rng.normal(0.6, 0.05, 5))
    many = bootstrap_ci(rng.normal(0.6, 0.05, 200))
    assert many[2] - many[1] < (few[2] - few[1]) / 3
    assert many[1] < 0.6 < many[2]


def test_bootstrap_ci_covers_the_true_mean_about_as_often_as_promised():
    import numpy as np
    rng = np.random.default_rng(5)
    hits = {0.95: 0, 0.5: 0}
    for trial in range(200):
        sample = rng.normal(0.6, 0.05, 30)
        for confidence in hits:
            _, low, high = bootstrap_ci(sample, confidence=confidence, seed=trial)
            hits[confidence] += low <= 0.6 <= high
    assert 0.88 * 200 <= hits[0.95] <= 0.99 * 200
    assert 0.35 * 200 <= hits[0.5] <= 0.65 * 200


def test_bootstrap_edge_cases():
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == pytest.approx((0.5, 0.5, 0.5))
    assert bootstrap_ci([0.4, 0.6]) == pytest.approx((0.5, 0.4, 0.6))  # resamples: .4 .5 .6
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_run_metrics_from_a_summary():
    figures = ab_stats.run_metrics(summary(0.8))
    assert figures == {"efficiency": pytest.approx(0.8), "fluid_efficiency": 0.5,
                       "loss_pct": 0.5, "retransmits": 10,
                       "delay_p99_ms": 4.5, "queue_p99_bytes": 1500.0,
                       "fabric_util_mean": 0.15, "fabric_util_max": 0.9,
                       "uplink_imbalance": 3.0}
    empty = ab_stats.run_metrics({"rows": [{"efficiency": None}]})
    assert set(empty.values()) == {None}


def test_untrusted_and_failed_runs_are_excluded_but_counted():
    runs = records("ecmp", [0.6, 0.62]) + [
        run_record("ecmp", 2, 3, "ecmp/rep2", summary(0.99, trusted=False,
                                                      reasons=("link rate 12 % off",))),
        run_record("ecmp", 3, 4, "ecmp/rep3", None, "run failed: agent h1 died")]
    result = aggregate(runs, ["ecmp"], "ecmp")["results"]["ecmp"]
    assert (result["trusted_label"], result["untrusted"], result["failed"]) == ("2/4", 1, 1)
    assert result["metrics"]["efficiency"]["mean"] == pytest.approx(0.61)
    assert result["metrics"]["efficiency"]["n"] == 2
    assert [(e["rep"], e["status"], e["reasons"]) for e in result["excluded"]] == [
        (2, "untrusted", ["link rate 12 % off"]), (3, "failed", ["run failed: agent h1 died"])]


def test_cct_pools_trusted_iterations_per_job_and_size():
    runs = records("ecmp", [0.6], cct=1000.0) + records("ecmp", [0.6], cct=2000.0)
    runs[1]["rep"] = 1
    runs.append(run_record("ecmp", 2, 3, "x", summary(trusted=False, cct=9000.0)))
    ab = aggregate(runs, ["ecmp"], "ecmp")
    assert ab["headline_cct"] == "train S=4000000"
    tail = ab["results"]["ecmp"]["cct_ms"]["train S=4000000"]
    assert tail["count"] == 4 and tail["p50"] == pytest.approx(1505.0)  # 1000 1010 2000 2010
    assert ab["results"]["ecmp"]["cct_ms"]["train S=1000000"]["count"] == 4


def test_baseline_delta_sign_value_and_overlap():
    runs = (records("ecmp", [0.50, 0.52, 0.48, 0.51, 0.49])
            + records("adaptive", [0.60, 0.61, 0.59, 0.62, 0.58])
            + records("reactive", [0.49, 0.53, 0.47, 0.52, 0.50]))
    deltas = aggregate(runs, ["ecmp", "adaptive", "reactive"], "ecmp")["deltas"]
    assert deltas["ecmp"] == {"metric": "efficiency", "delta_pct": 0.0, "ci_overlap": True,
                              "baseline": True}
    assert deltas["adaptive"]["delta_pct"] == pytest.approx(20.0)
    assert deltas["adaptive"]["ci_overlap"] is False
    assert deltas["reactive"]["delta_pct"] == pytest.approx(0.4)  # mean 0.502
    assert deltas["reactive"]["ci_overlap"] is True
    worse = aggregate(records("ecmp", [0.5]) + records("adaptive", [0.4]),
                      ["ecmp", "adaptive"], "ecmp")["deltas"]["adaptive"]
    assert worse["delta_pct"] == pytest.approx(-20.0)


def test_ci_overlap_and_missing_baseline():
    assert ab_stats.ci_overlap({"low": 1, "high": 2}, {"low": 2, "high": 3}) is True
    assert ab_stats.ci_overlap({"low": 1, "high": 2}, {"low": 2.1, "high": 3}) is False
    assert ab_stats.ci_overlap(None, {"low": 1, "high": 2}) is None
    runs = records("adaptive", [0.6]) + [run_record("ecmp", 0, 1, "e", None, "failed")]
    delta = aggregate(runs, ["ecmp", "adaptive"], "ecmp")["deltas"]["adaptive"]
    assert delta["delta_pct"] is None and delta["ci_overlap"] is None


def _document(runs: list[dict], algorithms: list[str]) -> dict:
    return {"name": "allreduce", "topology": "rail-2tier-small", "repeat": 2,
            "algorithms": algorithms, "baseline": algorithms[0], "runs": runs,
            **aggregate(runs, algorithms, algorithms[0])}


def test_tables_show_every_algorithm():
    runs = records("ecmp", [0.5, 0.52]) + records("adaptive", [0.6, 0.62])
    runs += [run_record("proactive", 0, 1, "p", None, "run failed")]
    ab = _document(runs, ["ecmp", "adaptive", "proactive"])
    console = Console(width=300, record=True)
    console.print(ab_table.rich_table(ab))
    text = console.export_text()
    for needle in ("ecmp", "adaptive", "proactive", "baseline", "2/2", "0/1", "51.0 %",
                   "+19.6 % (CIs separate)", "1405.0"):
        assert needle in text, needle
    lines = ab_table.markdown_table(ab)
    assert lines[0].startswith("| algorithm | trusted | efficiency (95% CI)")
    assert len(lines) == 5 and lines[4].startswith("| proactive | 0/1 | - | - |")
    assert "| train S=4000000 | 1405.0 / 1410.0 (4) |" in "\n".join(ab_table.cct_table(ab))


def test_a_runs_efficiency_is_weighted_by_the_bytes_of_each_job_and_each_job_is_kept():
    data = copy.deepcopy(SUMMARY)
    data["rows"][0].update(efficiency=0.5, bytes=1_000_000)
    data["rows"][1].update(efficiency=1.0, bytes=3_000_000)
    record = run_record("ecmp", 0, 1, "ecmp/rep0", data)
    assert record["metrics"]["efficiency"] == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)
    assert record["job_efficiency"] == {"train S=1000000": 0.5, "train S=4000000": 1.0}
    ab = aggregate([record, run_record("ecmp", 1, 2, "ecmp/rep1", data)], ["ecmp"], "ecmp")
    figure = ab["results"]["ecmp"]["job_efficiency"]["train S=1000000"]
    assert figure["mean"] == pytest.approx(0.5)
    table = "\n".join(ab_table.job_table({"algorithms": ["ecmp"], **ab}))
    assert "| train S=1000000 | 50.0 % [50.0, 50.0] |" in table
