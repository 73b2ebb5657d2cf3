"""PFC's pure parts: thresholds and headroom, pauses held and released, the watchdog,
cycles, feeders from OVS's datapath flows, the gate's netlink options, the layout, and
what the verdict makes of a PFC run."""

import struct

import pytest

from fabric.measure.fidelity import PortInterval, judge, pfc_reasons, rate_shortfalls
from fabric.net import plumbing
from fabric.net.pfc import gates
from fabric.net.pfc.feeders import parse_flows
from fabric.net.pfc.layout import plan_layout
from fabric.net.pfc.policy import Policy, Thresholds, cycles, thresholds
from topologies import TopologyError, build, load
from topologies.spec import from_dict

T = Thresholds(xoff=1000, xon=500, limit=5000)


def test_thresholds_put_xoff_at_half_the_buffer_and_headroom_for_every_feeder():
    got = thresholds(buffer_bytes=90_000, frame=9100, feeders=7, feeder_mbps=10.0,
                     reaction_s=0.03)
    assert (got.xoff, got.xon) == (45_000, 45_000 - 2 * 9100)
    # 7 feeders x (10 Mb/s for 30 ms = 37 500 B, plus the frame a paused gate lets out)
    assert got.limit == 45_000 + 7 * (37_500 + 9100)
    # a buffer already larger than that stays as it is
    assert thresholds(10_000_000, 9100, 1, 10.0).limit == 10_000_000


def test_a_queue_past_xoff_pauses_its_feeders_until_it_falls_below_xon():
    policy = Policy({"q": T})
    fed = lambda queue: {"a", "b"}  # noqa: E731
    assert policy.step(0.00, {"q": 999}, fed).pause == set()
    first = policy.step(0.01, {"q": 1000}, fed)
    assert first.pause == {"a", "b"} and first.resume == set()
    assert policy.step(0.02, {"q": 600}, fed).resume == set()    # between Xon and Xoff: held
    last = policy.step(0.03, {"q": 500}, fed)
    assert last.resume == {"a", "b"}
    assert policy.stats["a"].pauses == 1 and policy.stats["a"].paused_s == pytest.approx(0.02)


def test_a_gate_two_queues_hold_resumes_only_when_both_let_it_go():
    policy = Policy({"q1": T, "q2": T})
    feeders = {"q1": {"g"}, "q2": {"g", "h"}}
    assert policy.step(0.0, {"q1": 2000, "q2": 2000}, feeders.get).pause == {"g", "h"}
    step = policy.step(0.01, {"q1": 0, "q2": 2000}, feeders.get)
    assert step.resume == set()
    assert policy.step(0.02, {"q1": 0, "q2": 0}, feeders.get).resume == {"g", "h"}


def test_the_watchdog_resumes_a_gate_paused_too_long_and_then_ignores_its_pauses():
    policy = Policy({"q": T}, watchdog_s=0.2, restore_s=0.1)
    fed = lambda queue: {"g"}  # noqa: E731
    policy.step(0.0, {"q": 2000}, fed)
    assert policy.step(0.19, {"q": 2000}, fed).resume == set()
    storm = policy.step(0.2, {"q": 2000}, fed)
    assert storm.storms == ["g"] and storm.resume == {"g"}
    assert policy.step(0.25, {"q": 2000}, fed).pause == set()     # restoring: ignored
    assert policy.step(0.31, {"q": 2000}, fed).pause == {"g"}     # restored: paused again
    assert policy.stats["g"].watchdog == 1


def test_a_cycle_of_gates_holding_each_other_is_reported_once():
    # a's queue holds b, b's holds c, c's holds a: a PFC deadlock
    assert cycles({"b": {"a"}, "c": {"b"}, "a": {"c"}}) == [["a", "c", "b"]]
    assert cycles({"b": {"a"}, "c": {"b"}}) == []
    policy = Policy({"a": T, "b": T, "c": T})
    fed = {"a": {"b"}, "b": {"c"}, "c": {"a"}}.get
    step = policy.step(0.0, {"a": 2000, "b": 2000, "c": 2000}, fed)
    assert len(step.cycles) == 1 and set(step.cycles[0]) == {"a", "b", "c"}


FLOWS = """flow-dump from the main thread:
recirc_id(0),in_port(x-t0r0p5),eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.1.0.1,proto=17,frag=no),udp(src=1,dst=4791), packets:13, bytes:117134, used:0.012s, actions:x-t0r0p1
recirc_id(0),in_port(x-t0r0p6),eth_type(0x0800),ipv4(dst=10.1.0.2,frag=no), packets:3, bytes:186, used:0.050s, actions:x-t0r0p1
recirc_id(0),in_port(x-t0r0p7),eth_type(0x0800),ipv4(dst=10.1.0.3,frag=no), packets:3, bytes:186, used:1.219s, actions:x-t0r0p1
recirc_id(0),in_port(x-t0r0p8),eth_type(0x0800),ipv4(dst=10.1.0.3,frag=no), packets:0, bytes:0, used:never, actions:x-t0r0p2
recirc_id(0),in_port(x-t0r0p1),eth_type(0x0806), packets:1, bytes:60, used:0.001s, actions:userspace(pid=0,controller(reason=1)),x-t0r0p6
"""


def test_feeders_are_the_input_ports_of_flows_used_lately_by_output_port():
    known = {f"x-t0r0p{i}" for i in range(1, 9)}
    assert parse_flows(FLOWS, known, window_s=0.1) == {
        "x-t0r0p1": {"x-t0r0p5", "x-t0r0p6"},   # p7's flow idle 1.2 s, not a feeder
        "x-t0r0p6": {"x-t0r0p1"}}               # the output after a controller action
    assert parse_flows(FLOWS, known, window_s=0.02) == {"x-t0r0p1": {"x-t0r0p5"},
                                                        "x-t0r0p6": {"x-t0r0p1"}}


def test_a_gate_change_carries_rate_bucket_and_limit_and_the_kick_is_a_pfc_frame():
    options = gates.tbf_options(rate_bps=125, burst=9100, limit=371_200)
    length, kind = struct.unpack_from("=HH", options)
    assert kind == gates.TCA_TBF_PARMS and length == 4 + 36
    rate = struct.unpack_from("=BBHhHI", options, 4)
    assert rate[1] == gates.TC_LINKLAYER_ETHERNET and rate[5] == 125
    assert struct.unpack_from("=I", options, 4 + 24)[0] == 371_200           # limit
    assert struct.unpack_from("=HHI", options, 40) == (8, gates.TCA_TBF_BURST, 9100)
    fast = gates.tbf_options(rate_bps=10 ** 10, burst=18_200, limit=1)  # 80 Gb/s: 64-bit rate
    assert struct.unpack_from("=HHQ", fast, 48) == (12, gates.TCA_TBF_RATE64, 10 ** 10)
    frame = gates.kick_frame(bytes.fromhex("020000000001"))
    assert len(frame) == 60 and frame[:6] == gates.PFC_DESTINATION
    assert struct.unpack_from("!HH", frame, 12) == (0x8808, 0x0101)


def test_the_layout_names_every_gate_once_and_knows_who_feeds_whom():
    topology = load("rail-2tier-small")
    netns = {switch.name: "ovs0" for switch in topology.switches()}
    layout = plan_layout(topology, plumbing.plan(topology, "x", netns))
    assert len(layout.gates) == 2 * len(topology.links)      # server eth names repeat: no clash
    assert all(name.count(":") == 1 for name, gate in layout.gates.items()
               if not gate.netns.startswith("ovs"))
    queue = next(name for name in layout.limits if layout.switch_of[name].startswith("t0r0"))
    feeders = layout.structural_feeders(queue)
    assert len(feeders) == len(layout.ports_of[layout.switch_of[queue]]) - 1
    assert queue not in feeders and layout.gate_of[queue] not in feeders  # not its own link
    kinds = {":" in g for g in feeders}
    assert kinds == {True, False}                             # its servers' and its spines'
    assert all(layout.gates[g].limit == topology.spec.buffer_bytes
               for g in layout.gates if ":" in g)             # a server's own buffer


def test_pause_time_is_not_counted_against_a_links_rate():
    paused = [PortInterval("p1", 0.1, 62_500, 10.0, True, paused_s=0.05)] * 6   # 5 Mb/s, half paused
    assert rate_shortfalls(paused) == []
    unpaused = [PortInterval("p1", 0.1, 62_500, 10.0, True)] * 6
    assert rate_shortfalls(unpaused) == ["p1 sent 50 % of its rate while backlogged"]


def test_a_late_or_failed_pfc_loop_makes_the_run_untrusted():
    assert pfc_reasons(None) == []
    assert pfc_reasons({"late_fraction": 0.005, "late_fraction_limit": 0.01}) == []
    assert "fell behind" in pfc_reasons({"late_fraction": 0.05, "late_fraction_limit": 0.01,
                                         "period_ms": 10})[0]
    assert "failed" in pfc_reasons({"error": "OSError: boom"})[0]
    spec = load("rail-2tier-small").spec
    counters = {"agents": {"h1": {"data_sent": 10, "acks_sent": 0, "data_received": 10,
                                  "acks_received": 0, "wire_bytes_sent": 1, "late_bytes": 0}}}
    calm = {"cpu_busy": [0.3], "ovs_busy": [0.2]}
    # under PFC a one-second delay is a pause, not the emulator queueing
    assert not judge(calm, [], counters, [1000.0], spec).trusted
    pfc = {"late_fraction": 0.0, "thresholds": {"q": {"limit": 371_200}}}
    assert judge(calm, [], counters, [1000.0], spec, pfc=pfc).trusted


def test_flow_control_is_a_fabric_key_with_two_values():
    assert build(from_dict({"name": "f", "flow_control": "pfc"})).spec.flow_control == "pfc"
    assert from_dict({"name": "f"}).flow_control == "none"
    with pytest.raises(TopologyError, match="flow_control: must be one of none, pfc, got 'ecn'"):
        from_dict({"name": "f", "flow_control": "ecn"})
