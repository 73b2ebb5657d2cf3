"""[[faults]] in specs: validation with one-line messages naming the field, the timed actions
a fault expands to, and the recovery figures drawn from a run folder's records."""

from __future__ import annotations

import copy

import pytest

from experiments.analysis.recovery import fault_figures, first_after, inflation
from experiments.workload.faults import anchors_of_round
from experiments.workload.spec import SpecError, from_dict
from topologies import load

BASE = {"experiment": {"name": "t"}, "topology": {"preset": "rail-2tier-small"},
        "jobs": [{"name": "ring", "collective": "allreduce", "servers": 4, "sizes": ["1MB"],
                  "iterations": 2}]}


def spec(*faults: dict) -> dict:
    data = copy.deepcopy(BASE)
    data["faults"] = list(faults)
    return data


@pytest.mark.parametrize("fault, message", [
    ({"kind": "link-dwn", "link": "t0r0-s0"}, "faults[0].kind: must be one of link-down,"),
    ({"kind": "link-down"}, "faults[0].link: required for kind = link-down"),
    ({"kind": "link-down", "link": "t0r0-s0", "switch": "s0"},
     "faults[0].switch: not a key of kind = link-down (it takes link)"),
    ({"kind": "link-down", "link": "t0r0-s9"}, "faults[0].link: no node 's9' in fabric"),
    ({"kind": "link-down", "link": "t0r0-t1r0"}, "faults[0].link: t0r0 and t1r0 are not linked"),
    ({"kind": "link-down", "link": "t0r0-s0#2"}, "faults[0].link: t0r0-s0 has 1 parallel"),
    ({"kind": "link-down", "link": "t0r0_s0"}, "faults[0].link: not a link name like"),
    ({"kind": "link-down", "link": "t0r0-s0", "at": "3 parsecs"},
     "faults[0].at: must be a duration like '300ms' or '1.5s', got '3 parsecs'"),
    ({"kind": "link-down", "link": "t0r0-s0", "after": "ring:iteration:3"},
     "faults[0].after: job ring has 2 iteration(s), got 3"),
    ({"kind": "link-down", "link": "t0r0-s0", "after": "moe:iteration:1"},
     "faults[0].after: no job 'moe' (jobs: ring)"),
    ({"kind": "link-down", "link": "t0r0-s0", "after": "phase:2"},
     "faults[0].after: phase 2 does not exist"),
    ({"kind": "link-down", "link": "t0r0-s0", "after": "soon"}, "faults[0].after: must be 'start'"),
    ({"kind": "slow-link", "link": "t0r0-s0"}, "faults[0].fraction: required for kind = slow-link"),
    ({"kind": "slow-link", "link": "t0r0-s0", "fraction": 1.5}, "faults[0].fraction: must be"),
    ({"kind": "link-flap", "link": "t0r0-s0", "period": "100ms"},
     "faults[0].count: required for kind = link-flap"),
    ({"kind": "link-up", "link": "t0r0-s0", "duration": "1s"},
     "faults[0].duration: not a key of kind = link-up"),
    ({"kind": "switch-down", "switch": "h1"}, "faults[0].switch: no switch 'h1'"),
    ({"kind": "nic-down", "nic": "h1.9"}, "faults[0].nic: no NIC 'h1.9'"),
    ({"kind": "controller-kill", "link": "t0r0-s0"},
     "faults[0].link: not a key of kind = controller-kill"),
    ({"kind": "lossy-link", "link": "t0r0-s0"}, "faults[0].kind: lossy-link needs"),
])
def test_bad_faults_get_one_line_naming_the_field(fault, message):
    with pytest.raises(SpecError) as error:
        from_dict(spec(fault))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_faults_resolve_to_links_and_timed_actions():
    experiment = from_dict(spec(
        {"kind": "switch-down", "switch": "s1", "after": "ring:iteration:2", "at": "300ms",
         "duration": "1s"},
        {"kind": "link-flap", "link": "s0-t1r2", "period": "200ms", "count": 2},
        {"kind": "nic-down", "nic": "h2.3"},
        {"kind": "controller-restart", "duration": "250ms"}))
    topology = load("rail-2tier-small")
    switch, flap, nic, restart = experiment.faults
    assert len(switch.links) == 8 and all("s1" in topology.link_name(topology.links[i])
                                          for i in switch.links)
    assert [(a.op, round(a.offset_s, 3)) for a in switch.actions()] == [("down", 0.3),
                                                                       ("up", 1.3)]
    assert topology.link_name(topology.links[flap.links[0]]) == "t1r2-s0"  # either order
    assert [(a.op, round(a.offset_s, 3)) for a in flap.actions()] == [
        ("down", 0.0), ("up", 0.1), ("down", 0.2), ("up", 0.3)]
    assert [topology.links[i].a.node for i in nic.links] == ["h2"]
    assert topology.links[nic.links[0]].b.node == "t0r3"
    assert [(a.op, a.offset_s) for a in restart.actions()] == [("kill", 0.0), ("start", 0.25)]


def test_parallel_links_are_named_by_number():
    data = spec({"kind": "link-down", "link": "t0r0-s0#2"})
    data["topology"]["tor_uplink_links"] = 2
    (fault,) = from_dict(data).faults
    data["faults"][0]["link"] = "t0r0-s0"
    with pytest.raises(SpecError, match="2 parallel links: name one as 't0r0-s0#1'"):
        from_dict(data)
    data["faults"][0]["link"] = "t0r0-s0#1"
    assert from_dict(data).faults[0].links[0] == fault.links[0] - 1


def test_rounds_satisfy_their_anchors():
    assert anchors_of_round(0, 0, ["ring"], first=True) == ["start", "phase:1",
                                                            "ring:iteration:1"]
    assert anchors_of_round(1, 1, ["a", "b"], first=False) == ["a:iteration:2",
                                                               "b:iteration:2"]


MS = 1_000_000
T0 = 1_000 * MS


def test_the_first_packet_sent_after_the_fault_marks_the_reroute():
    flow = ("10.0.0.1", "10.0.1.1")
    delays = [{"src_ip": flow[0], "dst_ip": flow[1], "recv_ns": T0 - 5 * MS, "delay_ns": MS},
              # sent before the fault, drained after it: not rerouted yet
              {"src_ip": flow[0], "dst_ip": flow[1], "recv_ns": T0 + 2 * MS, "delay_ns": 4 * MS},
              {"src_ip": flow[0], "dst_ip": flow[1], "recv_ns": T0 + 90 * MS, "delay_ns": MS},
              # idle before the fault: not a flow it cut
              {"src_ip": "10.0.0.2", "dst_ip": "10.0.1.2", "recv_ns": T0 - 500 * MS,
               "delay_ns": MS}]
    assert first_after(delays, T0) == {flow: 90.0}
    assert first_after(delays[:2], T0) == {flow: None}


def test_cct_inflation_compares_the_hit_round_with_the_untouched_ones():
    spans = {("ring", 0, 0): (0, 100), ("ring", 0, 1): (200, 350), ("ring", 0, 2): (400, 500)}
    assert inflation(spans, 250) == {"ring": 0.5}
    assert inflation({("ring", 0, 0): (0, 100)}, 50) == {"ring": None}


def test_recovery_figures_of_a_link_down():
    flow = ("10.0.0.1", "10.0.1.1")
    events = [{"t_ns": T0, "fault": 0, "kind": "link-down", "target": "t0r0-s0", "op": "down",
               "ok": True}]
    controller = [{"t_ns": T0 - MS, "event": "port"}, {"t_ns": T0 + 3 * MS, "event": "port"}]
    delays = [{"src_ip": flow[0], "dst_ip": flow[1], "recv_ns": T0 - MS, "delay_ns": MS},
              {"src_ip": flow[0], "dst_ip": flow[1], "recv_ns": T0 + 250 * MS, "delay_ns": MS}]
    transfers = [{"id": 0, "job": "ring", "phase": 0, "iteration": 0, "src_ip": flow[0],
                  "dst_ip": flow[1]}]
    messages = {0: {"id": 0, "start_ns": T0 - 10 * MS, "acked_ns": T0 + 300 * MS,
                    "retransmits": 7, "timeouts": 1}}
    figures = fault_figures(0, events, controller, delays, messages, transfers)
    assert figures["detect_ms"] == 3.0 and figures["stalled_flows"] == 1
    assert figures["reroute_ms"] == {"median": 250.0, "max": 250.0}
    assert figures["longest_stall_ms"] == 0.0  # one arrival after the fault: no pause seen
    assert (figures["retransmits"], figures["timeouts"]) == (7, 1)
    # Without retransmissions the flow only paused: not a flow the fault cut.
    messages[0]["retransmits"] = 0
    assert fault_figures(0, events, controller, delays, messages, transfers)["stalled_flows"] == 0
    never = [{**events[0], "ok": False, "error": "not reached: the run ended first"}]
    assert fault_figures(0, never, [], [], {}, [])["executed"] is False


@pytest.mark.parametrize("capture, message", [
    (["h99"], "telemetry.capture[0]: not a server, and as a link: not a link name like"),
    (["h1", "t0r0-s9"], "telemetry.capture[1]: not a server, and as a link: no node 's9'"),
    (["h1", "h1"], "telemetry.capture[1]: h1 appears twice"),
])
def test_bad_capture_points_are_named(capture, message):
    data = spec()
    data["telemetry"] = {"capture": capture}
    with pytest.raises(SpecError) as error:
        from_dict(data)
    assert str(error.value).startswith(message), str(error.value)


def test_capture_points_are_servers_and_links():
    data = spec()
    data["telemetry"] = {"capture": ["h1", "s0-t0r0"]}
    assert from_dict(data).captures == ("h1", "s0-t0r0")
