"""Swift's pieces (fabric/nic/swift.py): the delay echo, the target per hop, the rate
machine; and a sender slowing when the echoed delay rises (both datapaths)."""

from __future__ import annotations

import pytest

from fabric.nic import wire
from fabric.nic.control import ExpectSpec, SendSpec
from fabric.nic.pacing import wire_bytes
from fabric.nic.swift import MAX_ECHO_US, SwiftParams, SwiftRate, echo_us
from tests.unit.fabric.simnet import FakeClock, SimNet, datapath  # noqa: F401

MS = 1_000_000
FRAME = wire_bytes(9000)  # 9,038 wire bytes: 7.23 ms at 10 Mb/s
FRAME_NS = FRAME * 8_000 / 10.0
P = SwiftParams(hop_target_frames=0.5, ai_fraction=0.05, beta=0.8, max_mdf=0.5)


def test_the_echo_is_whole_microseconds_never_zero_and_fits_24_bits():
    assert echo_us(7_230_999) == 7230
    assert echo_us(0) == echo_us(-5) == 1  # 0 means "no sample"
    assert echo_us(10**12) == MAX_ECHO_US == 2**24 - 1


def test_the_target_is_the_base_plus_half_a_frame_per_switch():
    rate = SwiftRate(10.0, P, FRAME)
    rate.hops = 3  # across a two-tier fabric's spines
    rate.on_delay(0, 2 * MS)
    assert rate.target_ns() == pytest.approx(2 * MS + 3 * 0.5 * FRAME_NS)
    rate.on_delay(MS, MS)  # a smaller delay seen: the base follows
    assert rate.target_ns() == pytest.approx(MS + 3 * 0.5 * FRAME_NS)


def test_a_delay_above_target_cuts_in_proportion_at_most_once_per_round_trip():
    rate = SwiftRate(10.0, P, FRAME)
    rate.hops = 4
    base = MS
    rate.on_delay(0, base)
    assert rate.current_mbps == 10.0  # at the ceiling already
    delay = int(base + 3 * FRAME_NS)  # one frame above the 2-frame target
    changed, cut = rate.on_delay(10 * MS, delay)
    target = base + 2 * FRAME_NS
    assert changed and cut
    assert rate.current_mbps == pytest.approx(10.0 * (1 - 0.8 * (delay - target) / delay))
    before = rate.current_mbps
    assert rate.on_delay(10 * MS + delay // 2, delay) == (False, False)  # within the round trip
    rate.on_delay(10 * MS + 21 * delay, 10 * delay)  # a round trip on, far above: max_mdf
    assert rate.current_mbps == pytest.approx(before * 0.5)


def test_below_target_the_rate_climbs_ai_per_round_trip_up_to_the_set_rate():
    rate = SwiftRate(10.0, P, FRAME)
    rate.set_target(8.0)
    base = int(2 * FRAME_NS)
    rate.on_delay(0, base)
    rate.current_mbps = 4.0
    rate.on_delay(base // 2, base)  # half a round trip (about the delay) later: half the step
    assert rate.current_mbps == pytest.approx(4.0 + 0.05 * 10.0 * 0.5)
    for k in range(1, 200):
        rate.on_delay(base + k * 2 * base, base)
    assert rate.current_mbps == 8.0  # never above what the harness set


def test_a_repath_forgets_the_old_paths_base_and_returns_to_the_set_rate():
    rate = SwiftRate(10.0, P, FRAME)
    rate.on_delay(0, int(2 * FRAME_NS))
    rate.on_delay(MS, int(6 * FRAME_NS))
    assert rate.current_mbps < 10.0
    rate.on_repath()
    assert rate.current_mbps == 10.0 and rate.base_ns is None


@pytest.mark.usefixtures("datapath")
def test_acks_echo_the_delay_and_a_swift_sender_slows_when_it_grows():
    # 10 ms of delay, then 40 ms (queues built somewhere): the ACKs carry each delay in
    # their MSN; the sender holds line rate under the first and cuts under the second.
    clock = FakeClock()
    net = SimNet(clock, delay_ns=10 * MS)
    h1 = net.add("h1", ["10.0.0.1"], swift=P, rto_ms=500.0)
    h5 = net.add("h5", ["10.0.1.1"], swift=P, rto_ms=500.0)
    for phase, delay_ms in ((1, 10), (2, 40)):
        net.delay_ns = delay_ms * MS
        h1.load([SendSpec(phase, 0, "10.0.1.1", 300_000, (), None, hops=3)], [])
        h5.load([], [ExpectSpec(phase, 0, 300_000)])
        h1.start(None)
        h5.start(None)
        first = len(net.sent)
        net.run()
        echoes = {wire.decode(payload).msn for nic, _, _, payload in net.sent[first:]
                  if nic == "10.0.1.1" and isinstance(wire.decode(payload), wire.Ack)}
        assert echoes - {0} == {delay_ms * 1000}, echoes  # 0: the short last frame's ACK
        (qp,) = h1.send_qps.values()
        assert qp.rate.hops == 3  # the harness told it: its target scales with it
        if phase == 1:
            assert qp.rate.current_mbps == 10.0 and h1.counters()["swift_cuts"] == 0
    assert h1.counters()["swift_cuts"] >= 1 and qp.rate.current_mbps < 10.0
