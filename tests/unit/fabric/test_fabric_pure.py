"""Pure parts of the fabric: names, tc lines, read-back checks, telemetry parsing."""

import json
import random
import statistics
import time

import pytest

from fabric.net import names, shards
from fabric.measure.calibrate import LinkClassResult, OverloadResult, probe_pairs
from fabric.net.plumbing import plan
from fabric.net.shaping import Shape, parse_rate, problems, tc_lines
from fabric.net.state import RunState
from fabric.measure.telemetry import PortSampler, QueueSample, delta, parse_qdiscs
from topologies import load

SHAPE = Shape("rcabc-t0r0p1", None, 10.0, 90000, 9000)
GOOD_QDISCS = [
    {"kind": "htb", "handle": "1:", "root": True, "options": {"default": "0x1"}},
    {"kind": "bfifo", "handle": "10:", "parent": "1:1", "options": {"limit": 90000}},
]
GOOD_CLASS = "class htb 1:1 root leaf 10: prio 0 rate 10Mbit ceil 10Mbit burst 18200b cburst 18200b"


def test_run_prefix_names_fit_linux_limits():
    prefix = names.new_run_prefix(rng=random.Random(1))
    assert names.PREFIX_RE.match(prefix)
    topology = load("rail-2tier")
    shard_ns = {s.name: names.netns_name(prefix, f"ovs{i % 3}")
                for i, s in enumerate(topology.switches())}
    p = plan(topology, prefix, shard_ns)
    intfs = [intf for group in p.shard_intfs().values() for intf in group]
    assert all(len(intf) <= 15 for intf in intfs)
    assert all(len(bridge) <= 15 for bridge in p.bridges.values())
    assert len(set(intfs)) == 2 * len(topology.links) - len(topology.nics)
    assert set(p.shard_intfs()) == set(shard_ns.values())
    assert all(names.is_shard_netns(ns) for ns in shard_ns.values())
    assert not names.is_shard_netns(names.netns_name(prefix, "h1"))
    assert names.prefix_of_netns(names.netns_name(prefix, "h1")) == prefix
    assert names.prefix_of_netns("railcc-notaprefix-h1") is None
    assert names.prefix_of_netns("foreign-ns") is None


def test_new_prefix_avoids_taken_ones():
    rng = random.Random(7)
    first = names.new_run_prefix(rng=random.Random(7))
    assert names.new_run_prefix({first}, rng) != first


def test_link_group_is_per_prefix():
    assert names.link_group("rcaaa") != names.link_group("rcaab")


def test_tc_lines_shape_rate_and_buffer():
    lines = tc_lines(SHAPE)
    assert lines[0].startswith("qdisc replace dev rcabc-t0r0p1 root handle 1: htb default 1")
    assert "rate 10000kbit ceil 10000kbit" in lines[1]
    assert lines[2].endswith("bfifo limit 90000")


def test_read_back_accepts_the_right_shape():
    assert problems(SHAPE, GOOD_QDISCS, GOOD_CLASS) == []


@pytest.mark.parametrize("qdiscs, class_text, complaint", [
    ([{"kind": "noqueue", "root": True}], GOOD_CLASS, "root qdisc is noqueue"),
    ([], GOOD_CLASS, "root qdisc is none"),
    (GOOD_QDISCS[:1], GOOD_CLASS, "bfifo child missing"),
    ([GOOD_QDISCS[0], {**GOOD_QDISCS[1], "options": {"limit": 1000}}], GOOD_CLASS,
     "bfifo limit 1000, want 90000"),
    (GOOD_QDISCS, "", "htb class 1:1 missing"),
    (GOOD_QDISCS, GOOD_CLASS.replace("rate 10Mbit", "rate 12Mbit"), "htb rate 12 Mb/s, want 10"),
])
def test_read_back_names_what_is_wrong(qdiscs, class_text, complaint):
    found = problems(SHAPE, qdiscs, class_text)
    assert found and complaint in found[0]


def test_parse_rate_units():
    assert parse_rate("10Mbit") == 10e6
    assert parse_rate("800Kbit") == 800e3
    assert parse_rate("1.5Gbit") == 1.5e9
    with pytest.raises(ValueError):
        parse_rate("10furlongs")


def test_parse_qdiscs_keeps_root_htb_of_wanted_devices():
    text = json.dumps([
        {"kind": "htb", "root": True, "dev": "a", "bytes": 100, "packets": 2, "drops": 1,
         "backlog": 9000, "qlen": 1},
        {"kind": "bfifo", "parent": "1:1", "dev": "a", "bytes": 100, "drops": 1},
        {"kind": "htb", "root": True, "dev": "b", "bytes": 5},
        {"kind": "pfifo_fast", "root": True, "dev": "eth0"},
    ])
    samples = parse_qdiscs(text, 1.0, {"a"})
    assert list(samples) == ["a"]
    assert samples["a"] == QueueSample(1.0, 100, 2, 1, 9000, 1)


def test_delta_of_series():
    series = [QueueSample(0.0, 0, 0, 0, 0, 0), QueueSample(0.5, 10, 1, 0, 900, 1),
              QueueSample(1.0, 50, 5, 3, 100, 1)]
    change = delta(series)
    assert (change.time, change.sent_bytes, change.drops, change.backlog_bytes) == (1.0, 50, 3, 900)


def test_run_state_round_trip(tmp_path, monkeypatch):
    import fabric.net.state as state_mod
    monkeypatch.setattr(state_mod, "STATE_DIR", tmp_path)
    state = RunState("rcxyz", 12345, "t", ["railcc-rcxyz-h1"], ["rcxyz-t0r0"], ["rcxyz-t0r0p1"])
    state.save()
    assert state_mod.load_all() == [state]
    state.remove()
    assert state_mod.load_all() == []


def test_probe_pairs_cover_each_tier():
    assert [c for c, _, _ in probe_pairs(load("rail-2tier-small"))] == ["host", "tor-spine"]
    assert [c for c, _, _ in probe_pairs(load("rail-3tier"))] == ["host", "tor-leaf", "leaf-spine"]
    topology = load("rail-3tier")
    per_block = topology.spec.pods_per_block
    _, src, dst = probe_pairs(topology)[2]
    assert topology.node(src).pod // per_block != topology.node(dst).pod // per_block


def test_calibration_verdicts():
    assert LinkClassResult("host", "a->b", 10.0, 9.6).ok
    assert not LinkClassResult("host", "a->b", 10.0, 9.4).ok
    assert OverloadResult("p", 1.94, 10.0, 9.9, 12).ok
    assert not OverloadResult("p", 1.94, 10.0, 9.9, 0).ok
    assert not OverloadResult("p", 1.94, 10.0, 9.9, 12, {"root:x": 1}).ok


def test_shards_balance_ports_and_cover_every_switch():
    topology = load("rail-2tier")
    ports = {s.name: 0 for s in topology.switches()}
    for link in topology.links:
        for end in link.ends():
            if end.node in ports:
                ports[end.node] += 1
    placed = shards.assign(ports, 4)
    assert set(placed) == set(ports) and set(placed.values()) == {0, 1, 2, 3}
    load_of = [sum(n for s, n in ports.items() if placed[s] == i) for i in range(4)]
    # Largest-first greedy: no shard is more than one switch's ports above another.
    assert max(load_of) - min(load_of) <= max(ports.values()), load_of
    assert shards.assign(ports, 4) == placed  # deterministic
    assert set(shards.assign(ports, 1).values()) == {0}
    with pytest.raises(ValueError):
        shards.assign(ports, 0)


def test_telemetry_samples_at_jittered_intervals_around_the_period():
    # Evenly spaced samples phase-lock with paced NICs (see PortSampler._loop).
    times: list[float] = []
    sampler = PortSampler({}, rate_hz=100.0)
    sampler._record = lambda: times.append(time.monotonic())
    with sampler:
        time.sleep(1.0)
    gaps = [b - a for a, b in zip(times, times[1:-1])]
    assert len(gaps) > 50
    assert min(gaps) < 0.007 and max(gaps) > 0.013  # 0.5..1.5 x the 10 ms period
    assert 0.008 < statistics.mean(gaps) < 0.015


class ScriptedQueues:
    """A QueueReader stand-in: each read returns the next scripted backlog per device."""

    def __init__(self, backlogs: dict[str, list[int]]) -> None:
        self.backlogs = backlogs
        self.focus_calls: list[list[str]] = []
        self.fail = False

    def _sample(self, dev: str) -> QueueSample:
        backlog = self.backlogs[dev].pop(0)
        return QueueSample(time.time(), 0, 0, 0, backlog, backlog // 9000)

    def read(self, devices):
        return {dev: self._sample(dev) for dev in sorted(devices)}

    def read_devices(self, devices):
        if self.fail:
            raise OSError(19, "No such device")
        self.focus_calls.append(list(devices))
        return {dev: self._sample(dev) for dev in devices}

    def close(self):
        pass


def test_telemetry_reads_a_backlogged_queue_again_when_it_could_have_drained():
    sampler = PortSampler({}, rate_hz=10.0, focus_hz=50.0, focus_max=2,
                          rates_mbps={dev: 2.5 for dev in "abcd"})
    queues = ScriptedQueues({"a": [9000, 9000, 0], "b": [0], "c": [90000], "d": [1000, 0]})
    sampler.devices, sampler._readers = {"ns": {"a", "b", "c", "d"}}, {"ns": queues}
    before = time.monotonic()
    sampler._record()
    due = {dev: when - before for (_, dev), when in sampler._due.items()}
    # One jumbo frame lasts 28.8 ms at 2.5 Mb/s; 90 kB, 288 ms; never sooner than 20 ms.
    assert set(due) == {"a", "c", "d"}
    assert 0.0288 <= due["a"] < 0.0288 * 1.5 + 0.01 and 0.288 <= due["c"] < 0.45
    assert 0.020 <= due["d"] < 0.031
    sampler._due[("ns", "a")] = sampler._due[("ns", "d")] = 0.0   # both due now
    sampler._record_focus()            # d drained: done; a still backlogged: due again
    assert queues.focus_calls == [["a", "d"]]
    assert set(sampler._due) == {("ns", "a"), ("ns", "c")}
    assert sampler._due[("ns", "a")] >= time.monotonic() + 0.02
    sampler._record_focus()            # nothing due yet: nothing read
    assert queues.focus_calls == [["a", "d"]]
    sampler._due[("ns", "a")] = 0.0
    sampler._record_focus()
    assert [s.backlog_bytes for s in sampler.series["a"]] == [9000, 9000, 0]
    assert len(sampler.series["b"]) == len(sampler.series["c"]) == 1
    # Rounds alone count towards the telemetry rate and the peak of all queues at once.
    assert sampler.peak_total_backlog() == 100000 and sampler.focus_reads == 3


def test_telemetry_reads_at_most_focus_max_queues_at_a_time_earliest_first():
    sampler = PortSampler({}, rate_hz=10.0, focus_hz=50.0, focus_max=1)
    queues = ScriptedQueues({"a": [9000, 9000], "b": [9000, 9000]})
    sampler.devices, sampler._readers = {"ns": {"a", "b"}}, {"ns": queues}
    sampler._record()
    sampler._due = {("ns", "a"): 2.0, ("ns", "b"): 1.0}
    sampler._record_focus()
    assert queues.focus_calls == [["b"]]
    assert sampler._due[("ns", "a")] >= time.monotonic() + 0.019   # waits its turn


def test_telemetry_stops_focus_reads_on_an_error_and_keeps_its_rounds():
    sampler = PortSampler({}, rate_hz=10.0, focus_hz=50.0)
    queues = ScriptedQueues({"a": [9000, 9000]})
    sampler.devices, sampler._readers = {"ns": {"a"}}, {"ns": queues}
    sampler._record()
    queues.fail = True
    sampler._due[("ns", "a")] = 0.0
    sampler._record_focus()
    assert sampler.focus_error == "ns: [Errno 19] No such device"
    assert sampler._due == {}
    sampler._record()
    assert len(sampler.series["a"]) == 2 and sampler._due == {}
