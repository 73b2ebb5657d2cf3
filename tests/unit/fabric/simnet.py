"""Test harness of the NIC cores: a fake clock and an in-memory lossy network.

``SimNet.core_class`` chooses the datapath (the ``datapath`` fixture runs a
test module with both, the Python reference and the compiled engine).
"""

from __future__ import annotations

import heapq
import random

import pytest

from fabric.nic.compiled import CompiledCore
from fabric.nic.control import AgentConfig, Nic
from fabric.nic.core import AgentCore

CORES = {"python": AgentCore, "compiled": CompiledCore}
WALL_OFFSET = 1_700_000_000_000_000_000


class FakeClock:
    """Injected time: monotonic ns advanced by the simulation; wall = mono + offset."""

    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def mono_ns(self) -> int:
        """Monotonic ns."""
        return self.now

    def wall_ns(self) -> int:
        """Wall-clock ns."""
        return self.now + WALL_OFFSET


class SimNet:
    """Joins agent cores by NIC IP; every datagram arrives after ``delay_ns`` unless lost."""

    core_class: type[AgentCore] = AgentCore

    def __init__(self, clock: FakeClock, delay_ns: int = 100_000, loss: float = 0.0,
                 seed: int = 1, refuse_every: int = 0, jitter_ns: int = 0) -> None:
        self.clock = clock
        self.delay_ns = delay_ns
        #: Extra delay of each datagram, uniform in [0, jitter_ns): queueing, as the
        #: receivers' DCQCN marking sees it.
        self.jitter_ns = jitter_ns
        self.loss = loss
        self.rng = random.Random(seed)
        self.refuse_every = refuse_every
        self.queue: list = []
        self.seq = 0
        self.cores: dict[str, AgentCore] = {}
        self.sent: list[tuple[str, int, str, bytes]] = []
        self.sent_at: list[tuple[int, str, int]] = []
        self.lost = 0
        self.refused = 0

    def send(self, nic_ip: str, src_port: int, dst_ip: str, payload) -> bool:
        """Transport.send: maybe refuse (ENOBUFS-like), maybe lose, else queue."""
        self.seq += 1
        if self.refuse_every and self.seq % self.refuse_every == 0:
            self.refused += 1
            return False
        data = bytes(payload)
        self.sent.append((nic_ip, src_port, dst_ip, data))
        self.sent_at.append((self.clock.now, nic_ip, len(data)))
        if self.rng.random() < self.loss:
            self.lost += 1
            return True
        extra = self.rng.randrange(self.jitter_ns) if self.jitter_ns else 0
        heapq.heappush(self.queue, (self.clock.now + self.delay_ns + extra, self.seq, nic_ip,
                                    dst_ip, data))
        return True

    def sends_refused(self) -> int:
        """No qdisc here."""
        return 0

    def socket_drops(self) -> int:
        """No kernel here."""
        return 0

    def add(self, server: str, ips: list[str], **config) -> AgentCore:
        """A core for ``server`` with one NIC per ip (rail = index)."""
        options = dict(line_mbps=10.0, out_dir="unused", mtu=9000, window_packets=16,
                       rto_ms=20.0, ack_every=4)
        options.update(config)
        cfg = AgentConfig(nics=tuple(Nic(rail, ip) for rail, ip in enumerate(ips)), **options)
        core = self.core_class(server, cfg, self, self.clock)
        for ip in ips:
            self.cores[ip] = core
        return core

    def run(self, limit_s: float = 60.0) -> float:
        """Advance time until every core is done (or the limit); seconds simulated."""
        cores = list(dict.fromkeys(self.cores.values()))
        begin = self.clock.now
        limit = begin + int(limit_s * 1e9)
        while self.clock.now < limit:
            deadlines = [d for d in (core.pump() for core in cores) if d is not None]
            if all(core.status()["done"] for core in cores) and not self.queue:
                break
            if self.queue:
                deadlines.append(self.queue[0][0])
            if not deadlines:
                break
            self.clock.now = max(self.clock.now + 1, min(deadlines))
            while self.queue and self.queue[0][0] <= self.clock.now:
                _, _, src_ip, dst_ip, data = heapq.heappop(self.queue)
                if dst_ip in self.cores:
                    self.cores[dst_ip].on_datagram(dst_ip, src_ip, data)
        return (self.clock.now - begin) / 1e9




@pytest.fixture(params=sorted(CORES))
def datapath(request, monkeypatch):
    """Run the test with each NIC datapath (monkeypatches ``SimNet.core_class``)."""
    monkeypatch.setattr(SimNet, "core_class", CORES[request.param])
    return request.param
