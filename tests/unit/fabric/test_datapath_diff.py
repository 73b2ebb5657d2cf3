"""The compiled NIC datapath against the Python reference, byte for byte.

The same scenario (three servers, random messages over several QPs, loss,
refused sends, CNPs, set_rate, announce mode with a fake manager) runs once
with each core; every datagram (its time, source, port, destination and
bytes), every record file and every counter must be identical.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from pathlib import Path

import pytest

from fabric.nic import wire
from fabric.nic.control import ExpectSpec, SendSpec
from fabric.nic.dcqcn import DcqcnParams
from fabric.nic.swift import SwiftParams
from fabric.nic.qp import qp_number
from tests.unit.fabric.simnet import CORES, FakeClock, SimNet
from tests.unit.fabric.test_agent_flows import FakeManager

IPS = {"h1": ["10.0.0.1", "10.0.0.2"], "h2": ["10.0.1.1", "10.0.1.2"],
       "h3": ["10.0.2.1", "10.0.2.2"]}
#: DCQCN in every 4th scenario, with delays that vary by up to 30 ms (37 kB at 10 Mb/s).
DCQCN = DcqcnParams(kmin_bytes=5_000, kmax_bytes=30_000, pmax=0.5, cnp_interval_ms=2.0,
                    alpha_timer_ms=1.0, increase_timer_ms=1.5)
DCQCN_PLB = dataclasses.replace(DCQCN, plb_rounds=1)
#: Swift in every 4th other scenario (seeds 3, 7, ...), with PLB in half of them.
SWIFT = SwiftParams(hop_target_frames=0.3, ai_fraction=0.2)
SWIFT_PLB = dataclasses.replace(SWIFT, plb_rounds=2)


def build(core: str, seed: int) -> tuple[SimNet, dict]:
    """One random scenario with datapath ``core``, loaded and started: its net and cores."""
    rng = random.Random(seed)
    announce = seed % 3 == 0
    dcqcn = (DCQCN if seed % 8 == 1 else DCQCN_PLB) if seed % 4 == 1 else None
    swift = (SWIFT if seed % 8 == 3 else SWIFT_PLB) if seed % 4 == 3 else None
    clock = FakeClock()
    net = SimNet(clock, delay_ns=rng.choice([50_000, 400_000]), loss=rng.choice([0, 0.02, 0.08]),
                 seed=seed, refuse_every=rng.choice([0, 0, 7]),
                 jitter_ns=30_000_000 if dcqcn or swift else 0)
    net.core_class = CORES[core]
    config = dict(window_packets=rng.choice([4, 16]), ack_every=rng.choice([1, 4]),
                  rto_ms=rng.choice([5.0, 20.0]), delay_sample_every=rng.choice([1, 3]),
                  qps_per_connection=rng.choice([1, 2]), salt=seed, announce=announce,
                  mtu=rng.choice([1500, 9000]), dcqcn=dcqcn, swift=swift)
    cores = {server: net.add(server, ips, **config) for server, ips in IPS.items()}
    if announce:
        FakeManager(net, rate_kbps=rng.choice([3000, 8000]))
    mid = 0
    for _ in range(rng.randint(3, 8)):
        src, dst = rng.sample(sorted(IPS), 2)
        rail = rng.randrange(2)
        mid += 1
        size = rng.choice([1, 900, 20_000, 150_000])
        after = (mid - 1,) if mid > 1 and rng.random() < 0.3 and src == last_dst else ()
        cores[src].load([SendSpec(mid, rail, IPS[dst][rail], size, after,
                                  rng.choice([None, 3]))], [])
        cores[dst].load([], [ExpectSpec(mid, rail, size)])
        last_dst = dst
    if not announce and rng.random() < 0.5:
        cores["h1"].set_rate(IPS["h2"][0], 4.0)
    for server in cores.values():
        server.start(None)
    # CNPs at fixed times to h1's first QP toward each of its destinations.
    numbers = {qp_number(IPS["h1"][spec.src_rail], spec.dst_ip, 0, {})
               for spec in cores["h1"].records.sent.values()}
    for at in (3_000_000, 9_000_000):
        for number in sorted(numbers):
            net.seq += 1
            heapq.heappush(net.queue, (clock.now + at, net.seq, IPS["h2"][0], IPS["h1"][1],
                                       wire.encode(wire.Cnp(number))))
    return net, cores


def run_twins(nets: list[SimNet], limit_s: float = 30.0) -> None:
    """SimNet.run for several nets in lock step: every core of every net is pumped at the
    same times (the union of their deadlines), so the cores get the same calls."""
    begin = nets[0].clock.now
    limit = begin + int(limit_s * 1e9)
    cores = [list(dict.fromkeys(net.cores.values())) for net in nets]
    while nets[0].clock.now < limit:
        deadlines = [d for group in cores for d in (core.pump() for core in group)
                     if d is not None]
        if all(c.status()["done"] for group in cores for c in group) and \
                not any(net.queue for net in nets):
            return
        deadlines += [net.queue[0][0] for net in nets if net.queue]
        if not deadlines:
            return
        now = max(nets[0].clock.now + 1, min(deadlines))
        for net in nets:
            net.clock.now = now
            while net.queue and net.queue[0][0] <= now:
                _, _, src_ip, dst_ip, data = heapq.heappop(net.queue)
                if dst_ip in net.cores:
                    net.cores[dst_ip].on_datagram(dst_ip, src_ip, data)


def outcome(net: SimNet, cores: dict, tmp: Path) -> dict:
    """Everything a run produced: datagrams, their times, record files, counters."""
    files = {}
    for server, core_ in cores.items():
        for path in core_.finish(tmp / type(core_).__name__):
            files[path.name] = path.read_text()
    return {"datagrams": net.sent, "times": net.sent_at, "files": files,
            "counters": {s: c.counters() for s, c in cores.items()},
            "status": {s: c.status()["done"] for s, c in cores.items()}}


@pytest.mark.parametrize("seed", range(1, 25))
def test_both_datapaths_send_the_same_bytes_and_keep_the_same_records(seed, tmp_path):
    runs = [build(core, seed) for core in ("python", "compiled")]
    run_twins([net for net, _ in runs])
    python, compiled = (outcome(net, cores, tmp_path) for net, cores in runs)
    assert python["datagrams"], "the scenario sent nothing"
    assert len(compiled["datagrams"]) == len(python["datagrams"])
    for index, (a, b) in enumerate(zip(python["datagrams"], compiled["datagrams"])):
        assert a == b, f"datagram {index} differs"
    assert compiled["times"] == python["times"]
    assert compiled["files"] == python["files"]
    assert compiled["counters"] == python["counters"]
    assert compiled["status"] == python["status"]


def test_the_scenarios_cover_what_they_claim(tmp_path):
    # Loss, retransmissions, timeouts, NAKs, CNPs and grants all happen somewhere.
    seen = {"retransmits": 0, "timeouts": 0, "naks": 0, "cnps": 0, "grants": 0, "done": 0,
            "cnps_sent": 0, "repaths": 0, "swift_cuts": 0}
    for seed in range(1, 25):
        net, cores = build("compiled", seed)
        net.run(limit_s=30)
        result = outcome(net, cores, tmp_path)
        counters = result["counters"].values()
        seen["cnps"] += sum(c["cnps_received"] for c in counters)
        seen["cnps_sent"] += sum(c["cnps_sent"] for c in counters)
        seen["repaths"] += sum(c["repaths"] for c in counters)
        seen["swift_cuts"] += sum(c["swift_cuts"] for c in counters)
        seen["grants"] += sum(c["grants_received"] for c in counters)
        seen["done"] += all(result["status"].values())
        for name, text in result["files"].items():
            if name.endswith(".messages.csv"):
                for row in text.splitlines()[1:]:
                    cells = row.split(",")
                    seen["retransmits"] += int(cells[9]) > 0
                    seen["timeouts"] += int(cells[10]) > 0
                    seen["naks"] += int(cells[11]) > 0
    assert all(seen.values()), seen
    assert seen["done"] == 24, seen
