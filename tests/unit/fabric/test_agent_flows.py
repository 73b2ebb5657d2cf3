"""Announce mode of the NIC agent (fabric/nic/flows.py) with a fake fabric manager:
nothing is sent before the grant, the grant's rate paces the QP, lost requests are
retried, and an idle QP reports its flow done after the linger."""

from __future__ import annotations

import heapq

import pytest

from tests.unit.fabric.simnet import FakeClock, SimNet, datapath  # noqa: F401
from tests.unit.fabric.test_agent_core import A, B, _transfer

from fabric.nic import wire  # noqa: E402

pytestmark = pytest.mark.usefixtures("datapath")


class FakeManager:
    """Answers FLOW_REQUESTs with a grant of ``rate_kbps`` (optionally ignoring some)."""

    def __init__(self, net: SimNet, rate_kbps: int, ignore_first: int = 0) -> None:
        self.net = net
        self.rate_kbps = rate_kbps
        self.ignore_first = ignore_first
        self.requests: list[tuple[int, wire.FlowRequest]] = []
        self.done: list[tuple[int, wire.FlowDone]] = []
        net.cores[wire.MANAGER_IP] = self

    def pump(self) -> None:
        """Nothing to transmit on its own (SimNet calls every member)."""

    def status(self) -> dict:
        """Always done (SimNet waits for every member)."""
        return {"done": True}

    def on_datagram(self, nic_ip: str, src_ip: str, data: bytes) -> None:
        """A control message reached the manager."""
        message = wire.decode(data)
        now = self.net.clock.now
        if isinstance(message, wire.FlowDone):
            self.done.append((now, message))
            return
        self.requests.append((now, message))
        if len(self.requests) <= self.ignore_first:
            return
        grant = wire.encode(wire.RateGrant(message.qp, self.rate_kbps, message.seq))
        self.net.seq += 1
        heapq.heappush(self.net.queue, (now + 500_000, self.net.seq, wire.MANAGER_IP,
                                        message.src_ip, grant))


def settle(net: SimNet, ms: float) -> None:
    """Let ``ms`` more milliseconds pass (timers fire, datagrams arrive) after a run."""
    end = net.clock.now + int(ms * 1e6)
    cores = [core for core in dict.fromkeys(net.cores.values()) if hasattr(core, "flows")]
    while net.clock.now < end:
        deadlines = [d for d in (core.pump() for core in cores) if d is not None]
        if net.queue:
            deadlines.append(net.queue[0][0])
        net.clock.now = min([end] + [d for d in deadlines if d > net.clock.now])
        while net.queue and net.queue[0][0] <= net.clock.now:
            _, _, src_ip, dst_ip, data = heapq.heappop(net.queue)
            if dst_ip in net.cores:
                net.cores[dst_ip].on_datagram(dst_ip, src_ip, data)


def _announcing(rate_kbps: int, ignore_first: int = 0):
    clock = FakeClock()
    net = SimNet(clock, seed=3)
    h1 = net.add("h1", [A], announce=True, linger_ms=20.0, grant_timeout_ms=30.0)
    h5 = net.add("h5", [B], announce=True)
    return clock, net, h1, h5, FakeManager(net, rate_kbps, ignore_first)


def test_nothing_is_sent_before_the_grant_and_the_grant_sets_the_rate():
    clock, net, h1, h5, manager = _announcing(rate_kbps=5000)
    size = 500_000
    _transfer(h1, h5, 1, size)
    h1.start(None)
    h5.start(None)
    started = clock.now
    net.run()
    settle(net, 30)
    assert len(manager.requests) == 1
    asked_at, request = manager.requests[0]
    assert (request.src_ip, request.dst_ip) == (A, B)
    assert size <= request.size_bytes < size + wire.max_padding(9000)  # whole packets
    first_data = h1.records.sent[1].start_ns - 1_700_000_000_000_000_000
    assert first_data >= asked_at + 500_000 > started  # after the grant's trip
    message, delivery = h1.records.sent[1], h5.records.delivered[1]
    took_s = (delivery.last_ns - message.start_ns) / 1e9
    assert abs(took_s - size * 8 / 5e6) / (size * 8 / 5e6) < 0.05, took_s  # paced at 5 Mb/s
    assert h1.counters()["grants_received"] == 1 and h1.counters()["control_sent"] == 2
    assert len(manager.done) == 1 and manager.done[0][1].qp == request.qp
    assert manager.done[0][0] >= message.acked_ns - 1_700_000_000_000_000_000 + 20_000_000


def test_an_unanswered_request_is_retried_then_the_qp_goes_anyway():
    clock, net, h1, h5, manager = _announcing(rate_kbps=10000, ignore_first=5)
    _transfer(h1, h5, 1, 100_000)
    h1.start(None)
    h5.start(None)
    net.run()
    assert len(manager.requests) == 3  # the first try and two retries, 30 ms apart
    times = [t for t, _ in manager.requests]
    assert [b - a for a, b in zip(times, times[1:])] == [30_000_000, 30_000_000]
    assert h1.counters()["grant_timeouts"] == 1
    assert h5.records.delivered[1].complete


def test_messages_sharing_a_qp_are_one_flow():
    clock, net, h1, h5, manager = _announcing(rate_kbps=10000)
    _transfer(h1, h5, 1, 100_000)
    _transfer(h1, h5, 2, 100_000, after=())
    h1.start(None)
    h5.start(None)
    net.run()
    settle(net, 30)
    assert len(manager.requests) == 1 and len(manager.done) == 1
