"""AgentCore over an in-memory lossy link with a fake clock: transfers, loss, QPs, records.

Every test runs with both NIC datapaths (tests/unit/fabric/simnet.py).
"""

from __future__ import annotations

import pytest

from tests.unit.fabric.simnet import WALL_OFFSET, FakeClock, SimNet, datapath  # noqa: F401

pytestmark = pytest.mark.usefixtures("datapath")

# -- tests -------------------------------------------------------------------------------
import csv  # noqa: E402
import heapq  # noqa: E402

import pytest  # noqa: E402

from fabric.nic import wire  # noqa: E402
from fabric.nic.control import ExpectSpec, SendSpec  # noqa: E402
from fabric.nic.dcqcn import DcqcnParams  # noqa: E402
from fabric.nic.pacing import wire_bytes  # noqa: E402

A, B, C = "10.0.0.1", "10.0.1.1", "10.0.2.1"


def _pair(loss: float = 0.0, **config):
    clock = FakeClock()
    net = SimNet(clock, loss=loss, seed=7)
    return clock, net, net.add("h1", [A], **config), net.add("h5", [B], **config)


def _transfer(sender, receiver, mid: int, size: int, dst_ip: str = B, qps=None,
              after=()) -> None:
    sender.load([SendSpec(mid, 0, dst_ip, size, tuple(after), qps)], [])
    receiver.load([], [ExpectSpec(mid, 0, size)])


def test_lossless_transfer_runs_at_line_rate():
    clock, net, h1, h5 = _pair()
    size = 1_000_000
    _transfer(h1, h5, 1, size)
    h1.start(None)
    h5.start(None)
    net.run()
    message, delivery = h1.records.sent[1], h5.records.delivered[1]
    assert message.done and delivery.complete and delivery.bytes == size
    assert message.retransmits == 0 and message.timeouts == 0 and message.naks == 0
    packets = -(-size // wire.max_padding(9000))
    assert message.packets == packets == h5.counters()["data_received"]
    wire_total = packets * wire_bytes(9000)  # all but the last are full
    expected_s = wire_total * 8 / 10e6
    took_s = (delivery.last_ns - message.start_ns) / 1e9
    assert abs(took_s - expected_s) / expected_s < 0.03, (took_s, expected_s)
    status = h1.status()
    assert status["done"] and status["sent_done"] == status["send_total"] == 1
    assert h5.status()["received"] == 1


def test_lossy_transfer_completes_with_retransmissions():
    clock, net, h1, h5 = _pair(loss=0.03)
    size = 2_000_000
    _transfer(h1, h5, 1, size)
    h1.start(None)
    h5.start(None)
    net.run(limit_s=120)
    message = h1.records.sent[1]
    assert net.lost > 0
    assert message.done and h5.records.delivered[1].bytes == size
    assert message.retransmits > 0
    assert message.naks + message.timeouts > 0
    counters = h1.counters()
    assert counters["data_sent"] == message.packets
    assert h5.counters()["data_received"] <= counters["data_sent"]
    assert h5.counters()["acks_sent"] > 0 and counters["acks_received"] > 0


def test_refused_sends_are_retried_not_dropped():
    clock = FakeClock()
    net = SimNet(clock, refuse_every=5)
    h1, h5 = net.add("h1", [A]), net.add("h5", [B])
    _transfer(h1, h5, 1, 300_000)
    h1.start(None)
    h5.start(None)
    net.run()
    assert net.refused > 0
    assert h1.records.sent[1].done and h1.records.sent[1].retransmits == 0


def test_message_is_split_over_qps_with_distinct_source_ports():
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 500_000, qps=4)
    h1.start(None)
    h5.start(None)
    net.run()
    assert h1.records.sent[1].done and h5.records.delivered[1].bytes == 500_000
    ports = {port for nic, port, dst, data in net.sent if nic == A and data[0] <= 4}
    assert len(ports) == 4
    assert len(h1.send_qps) == 4 and len(h5.recv_qps) == 4


def test_messages_pipeline_on_one_qp_with_continuing_psns():
    clock, net, h1, h5 = _pair()
    h1.load([SendSpec(1, 0, B, 40_000), SendSpec(2, 0, B, 40_000)], [])
    h5.load([], [ExpectSpec(1, 0, 40_000), ExpectSpec(2, 0, 40_000)])
    h1.start(None)
    net.run()
    psns = [int.from_bytes(data[9:12], "big") for nic, _, _, data in net.sent
            if nic == A and data[0] <= 4]
    assert psns == list(range(len(psns)))
    assert h5.status()["received"] == 2 and h1.status()["sent_done"] == 2


def test_dependency_waits_for_full_reception():
    clock, net, h1, h5 = _pair()
    h1.load([SendSpec(1, 0, B, 200_000)], [ExpectSpec(2, 0, 100_000)])
    h5.load([SendSpec(2, 0, A, 100_000, after=(1,))], [ExpectSpec(1, 0, 200_000)])
    h1.start(None)
    h5.start(None)
    net.run()
    first, second = h5.records.delivered[1], h5.records.sent[2]
    assert second.done and first.complete
    assert second.start_ns >= first.last_ns


def test_start_time_is_respected():
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 10_000)
    at = clock.wall_ns() + 50_000_000
    h1.start(at)
    net.run()
    assert h1.records.sent[1].start_ns >= at


def test_set_rate_slows_the_qps_toward_that_destination():
    clock, net, h1, h5 = _pair()
    assert h1.set_rate(B, 2.5) == 0  # remembered for QPs made later
    _transfer(h1, h5, 1, 200_000)
    h1.start(None)
    net.run()
    message = h1.records.sent[1]
    took_s = (message.acked_ns - message.start_ns) / 1e9
    assert took_s > 0.55  # 200 kB at 2.5 Mb/s: 0.59 s after a 2-frame burst (10 Mb/s: 0.15 s)


def test_cnp_halves_the_qp_rate_and_recovers():
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 50_000)
    h1.start(None)
    h1.pump()
    qp = next(iter(h1.send_qps.values()))
    h1.on_datagram(A, "10.255.255.254", wire.encode(wire.Cnp(qp.qp)))
    assert qp.rate.current_mbps == 5.0 and qp.pacing_mbps == pytest.approx(5.0)
    assert h1.counters()["cnps_received"] == 1
    net.run()
    clock.now += 1_000_000_000
    h1.pump()
    assert qp.rate.current_mbps == 10.0


def test_rate_grant_sets_the_qp_rate():
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 50_000)
    h1.start(None)
    h1.pump()
    qp = next(iter(h1.send_qps.values()))
    h1.on_datagram(A, "10.255.255.254", wire.encode(wire.RateGrant(qp.qp, 3000)))
    assert qp.rate.current_mbps == 3.0
    assert h1.counters()["control_received"] == 1


def test_rate_grants_set_each_qps_rate_from_one_message():
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 50_000, qps=2)
    h1.start(None)
    h1.pump()
    first, second = h1.send_qps.values()
    h1.on_datagram(A, "10.255.255.254", wire.encode(wire.RateGrants(
        (wire.RateGrant(first.qp, 3000), wire.RateGrant(second.qp, 4000),
         wire.RateGrant(99, 1000)))))  # a QP this NIC does not have is skipped
    assert (first.rate.current_mbps, second.rate.current_mbps) == (3.0, 4.0)
    assert h1.counters()["control_received"] == 1


def test_malformed_packets_are_ignored():
    clock, net, h1, h5 = _pair()
    h1.on_datagram(A, B, b"\x99" * 40)
    h1.on_datagram(A, B, b"\x11")
    assert h1.malformed == 2


def test_finish_writes_the_three_files(tmp_path):
    clock, net, h1, h5 = _pair(delay_sample_every=2)
    _transfer(h1, h5, 1, 100_000)
    h1.start(None)
    net.run()
    paths = h5.finish(tmp_path)
    assert [p.name for p in paths] == ["h5.messages.csv", "h5.deliveries.csv", "h5.delays.csv"]
    h1.finish(tmp_path)
    with open(tmp_path / "h1.messages.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["id"] == "1" and rows[0]["src"] == "h1" and rows[0]["qps"] == "1"
    assert int(rows[0]["acked_ns"]) > int(rows[0]["start_ns"]) > 0
    with open(tmp_path / "h5.deliveries.csv") as handle:
        delivery = next(csv.DictReader(handle))
    assert delivery == {"id": "1", "dst": "h5", "dst_rail": "0", "bytes": "100000",
                        "first_ns": delivery["first_ns"], "last_ns": delivery["last_ns"]}
    with open(tmp_path / "h5.delays.csv") as handle:
        delays = list(csv.DictReader(handle))
    packets = h5.counters()["data_received"]
    assert len(delays) == packets // 2
    assert all(row["src_ip"] == A and row["dst_ip"] == B and row["rail"] == "0" and
               int(row["delay_ns"]) >= net.delay_ns for row in delays)


def test_two_senders_share_one_nic_round_robin():
    clock = FakeClock()
    net = SimNet(clock)
    h1 = net.add("h1", [A])
    h5, h9 = net.add("h5", [B]), net.add("h9", [C])
    h1.load([SendSpec(1, 0, B, 300_000), SendSpec(2, 0, C, 300_000)], [])
    h5.load([], [ExpectSpec(1, 0, 300_000)])
    h9.load([], [ExpectSpec(2, 0, 300_000)])
    h1.start(None)
    net.run()
    one, two = h1.records.sent[1], h1.records.sent[2]
    assert one.done and two.done
    assert abs(one.acked_ns - two.acked_ns) < 20_000_000  # interleaved, not one after another


@pytest.mark.parametrize("announce", [False, True])
def test_a_nic_never_sends_more_than_its_rate_plus_its_two_frame_burst(announce):
    # Two destinations, four QPs each: over every window from one of its sends to a later
    # one, a NIC sent at most rate x window + two frames (its bucket's burst), announcing
    # (QPs of one frame) or not (ACKs, which it does not pace, excluded: h1 only sends data).
    clock = FakeClock()
    net = SimNet(clock, seed=3)
    # Announcing with no manager: requests time out (1 ms, 3 tries) and the QPs send at
    # line rate, each paced by its own bucket as well as the NIC's.
    h1 = net.add("h1", [A], announce=announce, grant_timeout_ms=1.0)
    h5, h6 = net.add("h5", [B]), net.add("h6", [C])
    h1.load([SendSpec(1, 0, B, 400_000, (), 4), SendSpec(2, 0, C, 400_000, (), 4)], [])
    h5.load([], [ExpectSpec(1, 0, 400_000)])
    h6.load([], [ExpectSpec(2, 0, 400_000)])
    for core in (h1, h5, h6):
        core.start(None)
    net.run()
    assert h5.records.delivered[1].complete and h6.records.delivered[2].complete
    sends = [(t, wire_bytes(size + wire.IPV4_HEADER_LEN + wire.UDP_HEADER_LEN))
             for t, ip, size in net.sent_at if ip == A and size > 100]
    frame = wire_bytes(9000)
    rate = 10.0 / 8000.0  # bytes per ns at 10 Mb/s
    worst = 0.0
    for i in range(len(sends)):
        total = 0
        for j in range(i, len(sends)):
            total += sends[j][1]
            worst = max(worst, total - rate * (sends[j][0] - sends[i][0]))
    assert len(sends) > 80 and worst <= 2 * frame + 1, worst


def test_an_idle_nic_sends_each_frame_when_a_wire_would_have_finished_it():
    # The emulator hands a frame over whole, so a NIC releases it when its last bit would
    # have left: after idling (at its start, and between two messages) the first frame
    # leaves its wire time after the work came, each next one its own wire time after the
    # one before, and the message starts at its first bit. With credit kept while idle,
    # a short job beat the wire: the headline's All2All read 104.8 % of line rate against
    # a 99.1 % ceiling.
    clock, net, h1, h5 = _pair()
    _transfer(h1, h5, 1, 100_000)
    came = [clock.now]
    h1.start(None)
    h5.start(None)
    net.run()
    first = [(t, size) for t, ip, size in net.sent_at if ip == A and size > 100]
    clock.now += 1_000_000_000
    net.sent_at.clear()
    _transfer(h1, h5, 2, 100_000)
    came.append(clock.now)
    h1.start(None)
    net.run()
    second = [(t, size) for t, ip, size in net.sent_at if ip == A and size > 100]
    assert h5.records.delivered[2].complete
    for mid, at, sends in ((1, came[0], first), (2, came[1], second)):
        t0, size0 = sends[0]
        assert abs(t0 - at - wire_ns(size0)) <= 1, (t0 - at, wire_ns(size0))
        assert abs(h1.records.sent[mid].start_ns - WALL_OFFSET - at) <= 1
        early = [b - a - wire_ns(size) for (a, _), (b, size) in zip(sends, sends[1:])]
        assert len(early) >= 10 and min(early) >= -1, early


def wire_ns(udp_payload: int) -> float:
    """A frame's time at 10 Mb/s, in ns, from its UDP payload's size."""
    return wire_bytes(udp_payload + wire.IPV4_HEADER_LEN + wire.UDP_HEADER_LEN) * 8 * 1000 / 10.0


@pytest.mark.parametrize("qp_mbps", [None, 5.0])
def test_credit_lost_to_a_late_wake_up_is_counted(qp_mbps):
    # One QP: at line rate (its bucket and the NIC's pace alike) or at a granted 5 Mb/s
    # (its own bucket paces). Woken 10 frame-times after its deadline, the NIC can only
    # catch up its burst: the rest of that credit is lateness.
    clock, net, h1, h5 = _pair()
    if qp_mbps:
        h1.set_rate(B, qp_mbps)
    _transfer(h1, h5, 1, 2_000_000)
    h1.start(None)
    deadline = None
    for _ in range(5):  # a few frames on time
        deadline = h1.pump()
        clock.now = deadline
    assert h1.counters()["late_bytes"] == 0
    frame_ns = wire_bytes(9000) * 8 * 1000 / (qp_mbps or 10.0)  # ns per frame
    clock.now = deadline + int(10 * frame_ns)
    h1.pump()
    lost = h1.counters()["late_bytes"]
    # 10 frame-times late with a 2-frame burst: about 8-9 frames of credit gone.
    assert 7.5 * wire_bytes(9000) < lost < 10.5 * wire_bytes(9000), lost / wire_bytes(9000)


def test_plb_ignores_cnps_the_receiver_flags_as_its_own_incast():
    params = DcqcnParams(cnp_interval_ms=5.0, plb_rounds=1)
    clock, net, h1, h5 = _pair(dcqcn=params, rto_ms=200.0)
    _transfer(h1, h5, 1, 100_000)
    h1.start(None)
    h5.start(None)
    h1.pump()
    (qp,) = h1.send_qps.values()
    for at_ms in (10, 14, 18):
        net.seq += 1
        heapq.heappush(net.queue, (clock.now + at_ms * 1_000_000, net.seq, B, A,
                                   wire.encode(wire.Cnp(qp.qp, last_hop=True))))
    net.run()
    assert h1.counters()["cnps_received"] == 3 and h1.records.sent[1].done
    assert h1.counters()["repaths"] == 0  # the rate was cut; the QP never moved


def test_plb_repaths_once_what_the_old_path_carries_is_acknowledged():
    # Two CNPs within a round (2 x cnp_interval) make PLB re-path h1's QP: it sends one more
    # packet, which asks for an ACK whatever ack_every says (the fence), nothing new until
    # every packet sent on the old
    # path is acknowledged (no reordering for go-back-N to mistake for loss), then goes on
    # from a new UDP source port, the next PSN first; the old port carries nothing after.
    params = DcqcnParams(cnp_interval_ms=5.0, plb_rounds=2)
    clock, net, h1, h5 = _pair(dcqcn=params, rto_ms=200.0)
    net.delay_ns = 30_000_000  # a loaded fabric's delay: packets are in flight at the CNPs
    _transfer(h1, h5, 1, 400_000)
    h1.start(None)
    h5.start(None)
    h1.pump()
    (qp,) = h1.send_qps.values()
    start = clock.now
    for at_ms in (33, 38):  # two CNPs 5 ms apart (one congested run of two)
        net.seq += 1
        heapq.heappush(net.queue, (start + at_ms * 1_000_000, net.seq, B, A,
                                   wire.encode(wire.Cnp(qp.qp))))
    net.run()
    assert h1.records.sent[1].done and h1.counters()["repaths"] == 1
    data, acks, asks = [], [], set()
    for (t, nic, _), (_, port, _, payload) in zip(net.sent_at, net.sent):
        message = wire.decode(payload)
        if nic == A and isinstance(message, wire.Data):
            data.append((t, port, message.psn))
            if message.ack_req:
                asks.add(message.psn)
        elif nic == B and isinstance(message, wire.Ack):
            acks.append((t + net.delay_ns, message.psn))  # when it reached h1
    first_port = data[0][1]
    moved = next(i for i, (_, port, _) in enumerate(data) if port != first_port)
    t_new, new_port, fence = data[moved]
    assert {port for _, port, _ in data[moved:]} == {new_port}  # never back on the old one
    assert max(psn for _, _, psn in data[:moved]) == fence - 1  # nothing past the fence
    sent_at_cnp = sum(1 for t, _, _ in data if t <= start + 38_000_000)
    assert fence == sent_at_cnp + 1  # one packet past what was sent when PLB decided
    assert fence % 4 != 0 and fence - 1 in asks  # off ack_every's grid, it asks for an ACK
    acked = min(t for t, psn in acks if psn >= fence - 1)
    assert acked <= t_new  # not before the old path drained
    assert t_new - data[moved - 1][0] >= 2 * net.delay_ns  # a round trip: a re-path's price
    assert h1.records.sent[1].retransmits == 0
