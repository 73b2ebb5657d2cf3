"""Announce mode of the NIC agent (fabric/nic/flows.py) with a fake fabric manager:
nothing is sent before the grant, the grant's rate paces the QP, lost requests are
retried, and an idle QP reports its flow done after the linger."""

from __future__ import annotations

import heapq

import pytest

from tests.unit.fabric.simnet import WALL_OFFSET, FakeClock, SimNet, datapath  # noqa: F401
from tests.unit.fabric.test_agent_core import A, B, _transfer

from fabric.nic import wire  # noqa: E402
from fabric.nic.control import ExpectSpec, SendSpec  # noqa: E402
from fabric.nic.pacing import wire_bytes  # noqa: E402

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


def test_a_qp_waiting_for_its_round_backs_off_between_retries():
    # Loaded, not started: nothing waits on it, so it asks a busy manager less and less
    # often (30, 60, 120, 240 ms: MAX_BACKOFF timeouts at most), and goes on asking.
    clock, net, h1, h5, manager = _announcing(rate_kbps=10000, ignore_first=100)
    _transfer(h1, h5, 1, 100_000)
    settle(net, 1000)
    times = [t for t, _ in manager.requests]
    assert [(b - a) // 1_000_000 for a, b in zip(times, times[1:])] == [30, 60, 120, 240, 240, 240]
    assert h1.counters()["grant_timeouts"] == 0 and h1.counters()["data_sent"] == 0


def test_messages_sharing_a_qp_are_one_flow():
    clock, net, h1, h5, manager = _announcing(rate_kbps=10000)
    _transfer(h1, h5, 1, 100_000)
    _transfer(h1, h5, 2, 100_000, after=())
    h1.start(None)
    h5.start(None)
    net.run()
    settle(net, 30)
    assert len(manager.requests) == 1 and len(manager.done) == 1


def test_a_qp_announces_its_whole_load_before_the_start_and_is_done_once_at_the_end():
    # A ring in miniature: h1 -> h5 (1), h5 -> h1 after it (2), h1 -> h5 after that (3).
    # h1's QP to h5 carries 1 and 3: one flow for both, though 3 waits for 2's data.
    clock = FakeClock()
    net = SimNet(clock, seed=3)
    h1 = net.add("h1", [A], announce=True, grant_timeout_ms=30.0)
    h5 = net.add("h5", [B], announce=True)
    manager = FakeManager(net, rate_kbps=10000)
    h1.load([SendSpec(1, 0, B, 200_000), SendSpec(3, 0, B, 120_000, (2,))],
            [ExpectSpec(2, 0, 150_000)])
    h5.load([SendSpec(2, 0, A, 150_000, (1,))], [ExpectSpec(1, 0, 200_000),
                                                ExpectSpec(3, 0, 120_000)])
    settle(net, 5)  # loaded, not started
    assert sorted((r.src_ip, r.size_bytes) for _, r in manager.requests) == [
        (A, 320_000), (B, 150_000)]
    assert h1.counters()["grants_received"] == 1 and h1.counters()["data_sent"] == 0
    h1.start(None)
    h5.start(None)
    net.run()
    settle(net, 1)
    assert len(manager.requests) == 2
    done = {message.src_ip: now for now, message in manager.done}
    assert sorted(done) == [A, B] and len(manager.done) == 2
    base = WALL_OFFSET
    assert done[A] >= h1.records.sent[3].acked_ns - base  # not between 1 and 3
    assert done[A] - (h1.records.sent[3].acked_ns - base) < 1_000_000  # no linger: at once


def test_a_qp_granted_before_the_start_begins_paced_at_a_seeded_phase_not_with_a_burst():
    # Three QPs (to three peers) granted 1 Mb/s before the round starts: at the start each
    # sends its first frame at its own phase of the 72 ms frame time (counted from the idle
    # NIC's first possible frame, 7.2 ms at its line rate) and the next one a frame time later, never two back to back; with full buckets all three would send
    # two frames at once at the start (an incast the rates do not cause).
    clock = FakeClock()
    net = SimNet(clock, seed=3)
    peers = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    h1 = net.add("h1", [A], announce=True, salt=7)
    for index, ip in enumerate(peers):
        net.add(f"p{index}", [ip], announce=True)
    FakeManager(net, rate_kbps=1000)
    h1.load([SendSpec(i, 0, ip, 40_000) for i, ip in enumerate(peers)], [])
    for index, ip in enumerate(peers):
        net.cores[ip].load([], [ExpectSpec(index, 0, 40_000)])
    settle(net, 5)
    assert h1.held_qps() == 0
    start = clock.now
    h1.start(None)
    settle(net, 400)
    frame_ns = wire_bytes(9000) * 8 / 1e6 * 1e9  # at 1 Mb/s
    line_ns = frame_ns / 10  # the idle NIC's first frame, at its 10 Mb/s line rate
    data = [(t, size) for t, ip, size in net.sent_at if ip == A and t >= start and size > 1000]
    firsts = sorted(t - start for t, _ in data[:3])
    assert len({round(f / 1e6) for f in firsts}) == 3, firsts  # three distinct phases
    assert all(line_ns <= f <= line_ns + frame_ns for f in firsts), firsts
    assert firsts[0] > line_ns  # not all at the NIC's first instant
    for peer in peers:  # each QP paced from its first frame: the next one a frame time on
        mine = [t for (t, ip, size), (_, _, dst, _) in zip(net.sent_at, net.sent)
                if ip == A and dst == peer and t >= start and size > 1000]
        assert mine[1] - mine[0] >= 0.99 * frame_ns, (peer, mine[:2])
