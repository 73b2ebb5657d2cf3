"""railcc diagnose on hand-made records: a slow link is told from a congested one by the
rate it drains its backlog at, and a slow NIC by its messages' throughput."""

from __future__ import annotations

from pathlib import Path

from experiments.analysis.analysis import Run
from experiments.analysis.diagnosis import SLOW_DRAIN, diagnose
from topologies import load

TOPOLOGY = load("rail-2tier-small")


def port_of(a: str, b: str) -> tuple[str, int]:
    """(switch, port) of the a-end of the link a-b."""
    link = TOPOLOGY.links[TOPOLOGY.find_link(f"{a}-{b}")]
    end = link.a if link.a.node == a else link.b
    return end.node, end.port


def queue(a: str, b: str, drain: float, backlogged: bool = True, seconds: int = 20,
          mbps: float = 10.0) -> list[dict]:
    """ports.csv rows of the queue at a toward b, sampled at 10 Hz, sending ``drain`` of
    ``mbps`` and backlogged (or not) throughout."""
    node, port = port_of(a, b)
    step = int(drain * mbps * 1e6 / 8 / 10)
    return [{"time_s": i / 10, "node": node, "port": port, "peer": b, "tier": "tor-spine",
             "capacity_mbps": mbps * drain, "sent_bytes": i * step, "sent_packets": i,
             "drops": 0, "backlog_bytes": 9000 if backlogged else 0}
            for i in range(seconds)]


def run_of(ports: list[dict], messages: dict | None = None, transfers: list | None = None
           ) -> Run:
    return Run(Path("."), {}, TOPOLOGY, transfers or [], messages or {}, {}, [], ports, {},
               None)


def test_a_backlogged_link_draining_at_half_rate_is_the_suspect_not_a_congested_one():
    ports = (queue("t0r0", "s1", 0.5)            # degraded: backlog, half the rate
             + queue("t0r1", "s2", 1.0)          # congested: backlog, full rate
             + queue("t0r2", "s3", 0.3, False))  # lightly used: never backlogged
    found = diagnose(run_of(ports))
    assert [s["name"] for s in found["suspects"]] == ["t0r0-s1"], found
    (suspect,) = found["suspects"]
    assert suspect["drain"] == 0.5 and "drained at 50 %" in suspect["why"]
    assert found["verdict"] == "1 suspect(s); first: link t0r0-s1"


def test_the_configured_rate_judges_not_the_rate_a_fault_wrote():
    # ports.csv records the faulted rate (5 Mb/s); a 10 Mb/s link sending 5 is still slow.
    rows = queue("t0r0", "s1", 0.5)
    assert all(row["capacity_mbps"] == 5.0 for row in rows)
    assert diagnose(run_of(rows))["suspects"][0]["drain"] == 0.5


def test_a_healthy_run_has_no_suspect_and_a_short_backlog_is_not_evidence():
    ports = queue("t0r0", "s1", 1.0) + queue("t0r1", "s1", 0.97) + queue("t0r2", "s0", 0.2,
                                                                         seconds=3)
    found = diagnose(run_of(ports))
    assert found["suspects"] == [] and found["verdict"] == "no suspect"
    assert SLOW_DRAIN > 0.2  # the 0.3 s stretch above was slow, but too short to judge


def test_both_queues_of_one_link_give_one_suspect():
    found = diagnose(run_of(queue("t0r0", "s1", 0.5) + queue("s1", "t0r0", 0.6)))
    assert [s["name"] for s in found["suspects"]] == ["t0r0-s1"]


def test_a_nic_whose_messages_run_slow_is_a_suspect():
    transfers, messages = [], {}
    for i, (src, took_s) in enumerate([("h1", 1.0), ("h2", 1.0), ("h3", 1.1), ("h4", 2.5)]):
        transfers.append({"id": i, "job": "ring", "src": src, "src_rail": 0})
        messages[i] = {"size": 1_000_000, "start_ns": 1, "acked_ns": 1 + int(took_s * 1e9)}
    found = diagnose(run_of([], messages, transfers))
    assert [s["name"] for s in found["suspects"]] == ["h4.0"], found
    assert "ran at 42 %" in found["suspects"][0]["why"]
