"""Go-back-N sender and receiver state machines, driven with injected time."""

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.nic.gbn import PSN_MOD, GbnReceiver, GbnSender, psn_add, psn_diff


def ack_requested(sender, psn):
    """The test sender's AckReq: last packet and every (window / 2)-th (SendQP.take's rule, per share)."""
    index = sender.index(psn)
    return index == sender.total - 1 or (index + 1) % max(1, sender.window // 2) == 0


def run(sender, receiver, drop_data=(), drop_ack=(), max_ticks=10_000, tick=0.001):
    """Tiny in-memory network: FIFO, one tick each way; drops the n-th packets listed."""
    data_seen = acks_seen = 0
    to_rx, to_tx = deque(), deque()
    delivered, now = [], 0.0
    for _ in range(max_ticks):
        if sender.done:
            return delivered, now
        sender.poll(now)
        for psn in sender.next_to_send(now):
            if data_seen not in drop_data:
                to_rx.append((psn, ack_requested(sender, psn)))
            data_seen += 1
        while to_rx:
            psn, ack_req = to_rx.popleft()
            action = receiver.on_data(psn, ack_req)
            if action.deliver:
                delivered.append(psn)
            for kind, value in (("ack", action.ack), ("nak", action.nak)):
                if value is not None:
                    if acks_seen not in drop_ack:
                        to_tx.append((kind, value))
                    acks_seen += 1
        now += tick
        while to_tx:
            kind, psn = to_tx.popleft()
            (sender.on_ack if kind == "ack" else sender.on_nak)(psn, now)
    raise AssertionError("transfer did not finish")


def test_psn_arithmetic_wraps_at_24_bits():
    assert psn_add(PSN_MOD - 1, 1) == 0
    assert psn_add(0, -1) == PSN_MOD - 1
    assert psn_diff(0, PSN_MOD - 1) == 1
    assert psn_diff(PSN_MOD - 1, 0) == -1
    assert psn_diff(5, 5) == 0


def test_lossless_transfer_completes_without_retransmits():
    sender, receiver = GbnSender(50, window_packets=8, timeout_s=0.1), GbnReceiver(ack_every=4)
    delivered, _ = run(sender, receiver)
    assert delivered == list(range(50))
    assert (sender.sent, sender.retransmitted, sender.timeouts, sender.naks) == (50, 0, 0, 0)
    assert sender.done and sender.in_flight == 0 and sender.deadline() is None


def test_window_limits_packets_in_flight():
    sender = GbnSender(20, window_packets=4, timeout_s=1.0)
    assert sender.next_to_send(0.0) == [0, 1, 2, 3]
    assert sender.next_to_send(0.0) == []
    assert sender.on_ack(1, 0.1) == 2
    assert sender.next_to_send(0.1) == [4, 5]
    assert sender.next_to_send(0.1, limit=0) == []


def test_a_lost_packet_causes_one_nak_and_go_back_n_from_it():
    sender, receiver = GbnSender(10, window_packets=6, timeout_s=1.0), GbnReceiver()
    burst = sender.next_to_send(0.0)
    assert burst == [0, 1, 2, 3, 4, 5]
    actions = [receiver.on_data(psn) for psn in burst if psn != 2]  # packet 2 lost
    assert [a.deliver for a in actions] == [True, True, False, False, False]
    naks = [a.nak for a in actions if a.nak is not None]
    assert naks == [2]  # one NAK for the gap, not one per out-of-order packet
    assert receiver.naks_sent == 1
    assert sender.on_nak(2, 0.01) == 2  # NAK acknowledges 0 and 1
    assert sender.next_to_send(0.01) == [2, 3, 4, 5, 6, 7]
    assert sender.retransmitted == 4  # exactly 2..5, which were in flight


def test_nak_is_sent_again_for_a_new_gap_only():
    receiver = GbnReceiver()
    assert receiver.on_data(1).nak == 0
    assert receiver.on_data(2).nak is None
    assert receiver.on_data(0).deliver
    assert receiver.on_data(2).nak == 1  # gap at 1 is new


def test_duplicates_are_dropped_and_reacked():
    receiver = GbnReceiver(ack_every=8)
    assert receiver.on_data(0).ack is None  # coalesced
    action = receiver.on_data(0)
    assert (action.deliver, action.ack) == (False, 0)
    assert receiver.delivered == 1 and receiver.dropped == 1


def test_timeout_recovers_a_lost_last_packet():
    sender, receiver = GbnSender(5, window_packets=8, timeout_s=0.05), GbnReceiver()
    delivered, now = run(sender, receiver, drop_data={4})
    assert delivered == [0, 1, 2, 3, 4]
    assert sender.timeouts == 1 and sender.retransmitted == 1 and now >= 0.05


def test_timeout_recovers_a_lost_final_ack():
    sender, receiver = GbnSender(3, window_packets=8, timeout_s=0.05), GbnReceiver(ack_every=3)
    delivered, _ = run(sender, receiver, drop_ack={0})
    assert delivered == [0, 1, 2]
    assert sender.timeouts == 1 and sender.retransmitted == 3
    assert receiver.dropped == 3  # the duplicates, each re-ACKed


def test_poll_does_nothing_before_the_deadline():
    sender = GbnSender(3, window_packets=8, timeout_s=0.5)
    sender.next_to_send(1.0)
    assert sender.deadline() == 1.5
    assert not sender.poll(1.49)
    assert sender.poll(1.5)
    assert sender.next_to_send(1.5) == [0, 1, 2]


def test_transfer_across_psn_wraparound():
    first = PSN_MOD - 3
    sender = GbnSender(8, window_packets=4, timeout_s=0.05, first_psn=first)
    receiver = GbnReceiver(first_psn=first, ack_every=2)
    delivered, _ = run(sender, receiver, drop_data={3})
    assert delivered == [PSN_MOD - 3, PSN_MOD - 2, PSN_MOD - 1, 0, 1, 2, 3, 4]
    assert sender.done and receiver.expected == 5


def test_stale_acks_are_ignored():
    sender = GbnSender(10, window_packets=4, timeout_s=1.0)
    sender.next_to_send(0.0)
    assert sender.on_ack(PSN_MOD - 1, 0.0) == 0  # "before 0"
    assert sender.on_ack(7, 0.0) == 0  # never sent
    assert sender.base == 0


@pytest.mark.parametrize("kwargs, field", [
    (dict(total_packets=0, window_packets=1, timeout_s=1), "total_packets"),
    (dict(total_packets=1, window_packets=0, timeout_s=1), "window_packets"),
    (dict(total_packets=1, window_packets=1, timeout_s=0), "timeout_s"),
])
def test_sender_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GbnSender(**kwargs)


@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 60), window=st.integers(1, 16), ack_every=st.integers(1, 8),
       first=st.sampled_from([0, 1000, PSN_MOD - 7]),
       drop_data=st.sets(st.integers(0, 150), max_size=40),
       drop_ack=st.sets(st.integers(0, 150), max_size=40))
def test_random_loss_delivers_everything_exactly_once_in_order(total, window, ack_every, first,
                                                               drop_data, drop_ack):
    sender = GbnSender(total, window, timeout_s=0.02, first_psn=first)
    receiver = GbnReceiver(first_psn=first, ack_every=ack_every)
    delivered, _ = run(sender, receiver, drop_data, drop_ack)
    assert delivered == [psn_add(first, i) for i in range(total)]
    assert sender.done and receiver.delivered == total
    assert sender.sent == total + sender.retransmitted
