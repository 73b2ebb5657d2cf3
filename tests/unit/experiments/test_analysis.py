"""Analysis of a synthetic run folder whose every number can be checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from experiments.analysis.analysis import analyze
from topologies import FabricSpec, build
from topologies.export import save

T0 = 1_000_000_000_000  # ns; ports.csv time 1000.0 s
MS = 1_000_000
SIZE = 10_000  # S: one AllReduce buffer; 2 ranks x 1 rail -> 4 messages of 5000 B per iteration
# (iteration, src, dst, step, start ms, last ms): CCT 8 ms then 12 ms -> time 10 ms
MESSAGES = [(0, "h1", "h2", 0, 0, 4), (0, "h2", "h1", 0, 0, 4),
            (0, "h1", "h2", 1, 4, 8), (0, "h2", "h1", 1, 4, 8),
            (1, "h1", "h2", 0, 20, 26), (1, "h2", "h1", 0, 20, 26),
            (1, "h1", "h2", 1, 26, 32), (1, "h2", "h1", 1, 26, 32)]
IPS = {"h1": "10.0.0.1", "h2": "10.0.0.2"}
# egress queue -> (peer, tier, cumulative sent bytes, drops, backlog) at 1000.00 .. 1000.04 s;
# 10 Mb/s x 10 ms = 12500 bytes is a full interval.
PORTS = {("h1", 0): ("t0r0", "host", [0, 12500, 18750, 18750, 18750], [0] * 5, [0] * 5),
         ("t0r0", 2): ("h2", "host", [0, 6250, 12500, 12500, 12500], [0, 0, 1, 2, 2],
                       [0, 9000, 18000, 0, 0]),
         ("t0r0", 3): ("s0", "tor-spine", [0] * 5, [0] * 5, [0] * 5),
         ("s0", 1): ("t0r0", "tor-spine", [0] * 5, [0] * 5, [0] * 5)}
AGENTS = {"h1": {"data_sent": 22, "data_received": 19, "acks_sent": 5, "acks_received": 6,
                 "control_sent": 0, "control_received": 0, "cnps_received": 0,
                 "socket_drops": 0},
          "h2": {"data_sent": 20, "data_received": 21, "acks_sent": 6, "acks_received": 5,
                 "control_sent": 0, "control_received": 0, "cnps_received": 0,
                 "socket_drops": 0}}


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


#: fidelity.json of a calm machine, and of a CPU-bound one.
CALM = {"cpu_busy": [0.3] * 5, "ovs_busy": [0.2] * 5, "telemetry_hz": 100.0,
        "telemetry_target_hz": 100.0}
CPU_BOUND = {**CALM, "cpu_busy": [0.97] * 5}


def make_run(folder: Path, switch_drops: int = 2, fidelity: dict | None = None) -> Path:
    """A run folder of one 2-rank, 1-rail AllReduce job, 2 iterations, S = 10000 bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    topology = build(FabricSpec(name="tiny", rails=1, servers_per_pod=2, pods=1, spines=1))
    save(topology, folder / "topology.json")
    (folder / "manifest.json").write_text(json.dumps(
        {"format": "railcc-run/1", "spec": {"name": "synthetic"}, "seed": 0, "algorithm": "ecmp",
         "started": "2024-01-01T00:00:00", "topology_name": "tiny"}))
    transfers, messages, deliveries = [], [], []
    for i, (iteration, src, dst, step, start, last) in enumerate(MESSAGES):
        transfers.append({"id": i, "name": f"m{i}", "job": "j", "kind": "allreduce",
                          "iteration": iteration, "step": step, "size": 5000,
                          "collective_size": SIZE, "src": src, "src_rail": 0, "dst": dst,
                          "dst_rail": 0, "src_ip": IPS[src], "dst_ip": IPS[dst], "after": []})
        messages.append([i, src, 0, IPS[dst], 5000, 1, T0 + start * MS, T0 + (last + 1) * MS,
                         5, 2 if i == 5 else 0, 0, 0])
        deliveries.append([i, dst, 0, 5000, T0 + start * MS + 100, T0 + last * MS])
    (folder / "transfers.json").write_text(json.dumps(transfers))
    _write_csv(folder / "messages.csv", ["id", "src", "src_rail", "dst_ip", "size", "qps",
                                         "start_ns", "acked_ns", "packets", "retransmits",
                                         "timeouts", "naks"], messages)
    _write_csv(folder / "deliveries.csv", ["id", "dst", "dst_rail", "bytes", "first_ns",
                                           "last_ns"], deliveries)
    _write_csv(folder / "delays.csv", ["recv_ns", "src_ip", "dst_ip", "rail", "delay_ns"],
               [[T0 + k * MS, "10.0.0.1", "10.0.0.2", 0, k * MS] for k in (1, 2, 3, 4)])
    rows = []
    for (node, port), (peer, tier, sent, drops, backlog) in PORTS.items():
        for k in range(5):
            rows.append([1000.0 + k / 100, node, port, peer, tier, 10.0, sent[k], sent[k] // 1000,
                         drops[k], backlog[k]])
    _write_csv(folder / "ports.csv", ["time_s", "node", "port", "peer", "tier", "capacity_mbps",
                                      "sent_bytes", "sent_packets", "drops", "backlog_bytes"], rows)
    (folder / "counters.json").write_text(json.dumps(
        {"agents": AGENTS, "qdisc_drops_switch": switch_drops, "qdisc_drops_host": 0}))
    (folder / "fidelity.json").write_text(json.dumps(
        fidelity or CALM))
    return folder


@pytest.fixture
def summary(tmp_path):
    return analyze(make_run(tmp_path / "run"))


def test_nccl_tests_columns(summary):
    [row] = summary["rows"]
    assert (row["job"], row["collective"], row["ranks"], row["rails"]) == ("j", "allreduce", 2, 1)
    assert (row["size"], row["count"], row["type"]) == (10_000, 2_500, "float")
    assert row["cct_ms"] == pytest.approx([8.0, 12.0])
    assert row["time_ms"] == pytest.approx(10.0)
    assert row["algbw_GBps"] == pytest.approx(0.001)  # 10000 B / 10 ms
    assert row["busbw_GBps"] == pytest.approx(0.001)  # factor 2(n-1)/n = 1 for n = 2
    assert row["algbw_Mbps"] == pytest.approx(8.0)
    assert row["efficiency"] == pytest.approx(0.8)  # 8 Mb/s over 1 rail x 10 Mb/s


def test_loss_and_retransmits(summary):
    [row] = summary["rows"]
    assert (row["packets"], row["drops"], row["retransmits"]) == (40, 2, 2)
    assert row["loss_pct"] == pytest.approx(5.0)  # 2 switch drops / 40 data packets
    assert summary["loss"]["loss_pct"] == pytest.approx(100 * 2 / 42)  # counters: 42 data sent


def test_latency_percentiles(summary):
    [row] = summary["rows"]
    # completions 4,4,4,4,6,6,6,6 ms; linear interpolation
    assert row["completion_ms"]["p50"] == pytest.approx(5.0)
    assert row["completion_ms"]["p99"] == pytest.approx(6.0)
    assert row["delay_ms"]["p50"] == pytest.approx(2.5)  # 1, 2, 3, 4 ms
    assert row["delay_ms"]["p99"] == pytest.approx(3.97)
    assert summary["delay_ms"]["count"] == 4


def test_utilization_and_queues(summary):
    host = summary["utilization"]["tiers"]["host"]
    assert host["links"] == 2
    assert host["mean"] == pytest.approx(0.3125)  # (1 + .5 + .5 + .5) / 8 intervals
    assert host["max"] == pytest.approx(1.0)
    assert host["p99"] == pytest.approx(0.965)
    assert host["imbalance_max_over_mean"] == pytest.approx(0.2)  # means .375 and .25
    assert summary["utilization"]["uplink_imbalance"] == {
        "tor-spine": {"links": 1, "max_over_mean": 0.0, "cov": 0.0}}
    hottest = summary["queues"]["hottest"][0]
    assert hottest["port"] == "t0r0:2"
    assert hottest["p99_backlog_bytes"] == pytest.approx(17640.0)
    assert hottest["drops"] == 2


def test_conservation_holds(summary):
    check = summary["conservation"]
    assert check["ok"] and (check["sent"], check["received"], check["dropped"]) == (53, 51, 2)
    assert check["verdict"].startswith("OK")


def test_conservation_fails_when_counts_do_not_add_up(tmp_path):
    check = analyze(make_run(tmp_path / "run", switch_drops=1))["conservation"]
    assert not check["ok"] and check["unaccounted"] == 1
    assert check["verdict"].startswith("LOST: 1 of 53")


def test_fidelity_judged_from_the_measurements(tmp_path, summary):
    assert summary["trusted"] is True
    untrusted = analyze(make_run(tmp_path / "bad", fidelity=CPU_BOUND))
    assert untrusted["trusted"] is False
    assert untrusted["fidelity"]["reasons"] == [
        "CPU-bound: machine over 95% busy in 5 of 5 seconds (max 97%)"]


def test_missing_fidelity_is_untrusted(tmp_path):
    folder = make_run(tmp_path / "run")
    (folder / "fidelity.json").unlink()
    assert analyze(folder)["trusted"] is False


def test_summary_json_written(tmp_path):
    folder = make_run(tmp_path / "run")
    summary = analyze(folder)
    assert json.loads((folder / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_undelivered_message_leaves_iteration_without_cct(tmp_path):
    folder = make_run(tmp_path / "run")
    lines = (folder / "deliveries.csv").read_text().splitlines()
    (folder / "deliveries.csv").write_text("\n".join(lines[:-1]) + "\n")  # drop message 7
    [row] = analyze(folder)["rows"]
    assert row["incomplete"] == 1 and row["cct_ms"] == pytest.approx([8.0])
    assert row["time_ms"] == pytest.approx(8.0)


def test_delay_bound_counts_every_queue_of_the_longest_path():
    from fabric.measure.fidelity import DELAY_SLACK_MS, max_queueing_ms
    from topologies import load

    def bound(name):
        spec = load(name).spec
        return max_queueing_ms(spec.tiers, spec.buffer_bytes, min(spec.nic_mbps, spec.fabric_mbps))
    # 4 queues of 90 kB at 10 Mb/s = 72 ms each
    assert bound("rail-2tier-small") == pytest.approx(4 * 72.0 + DELAY_SLACK_MS)
    assert bound("rail-3tier") == pytest.approx(6 * 72.0 + DELAY_SLACK_MS)


def test_run_folder_format_is_checked(tmp_path):
    from experiments.analysis.analysis import RunFormatError, check_format
    folder = make_run(tmp_path / "run")
    assert check_format(folder) == "railcc-run/1"
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["format"]  # folders from before the version field are rebuilt as they are
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert check_format(folder) is None and analyze(folder)["trusted"]
    manifest["format"] = "railcc-run/2"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFormatError, match="run folder format 'railcc-run/2'; this railcc "
                                             "reads railcc-run/1"):
        check_format(folder)
    with pytest.raises(RunFormatError, match="not a run folder"):
        check_format(tmp_path)
