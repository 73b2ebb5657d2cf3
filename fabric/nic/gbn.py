"""Go-back-N reliability as pure state machines: time is injected, nothing is sent.

The sender numbers the packets of one transfer 0..total-1 internally and puts
``(first_psn + index) mod 2**24`` on the wire, as RoCE NICs do. PSNs are
compared with serial-number arithmetic: a PSN less than 2**23 ahead is
"ahead", anything else "behind", so 24-bit wraparound is harmless as long as
the window is far below 2**23.

Semantics follow InfiniBand RC:
- ACK carries the PSN of the last packet received in order (cumulative).
- NAK "PSN sequence error" carries the PSN the receiver expects; it also
  acknowledges everything before it. The receiver sends one NAK per gap (not
  one per out-of-order packet) until the gap closes; if the resent packet is
  lost again, the sender's timeout recovers.
- The QP sets BTH AckReq on the last packet of each share and every
  ``ack_every`` packets (fabric/nic/qp.py), so a receiver that coalesces
  ACKs never stalls the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

PSN_MOD = 1 << 24
_HALF = PSN_MOD >> 1


def psn_add(psn: int, count: int) -> int:
    """``psn + count`` modulo 2**24."""
    return (psn + count) % PSN_MOD


def psn_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between PSNs, in -2**23 .. 2**23 - 1."""
    return (a - b + _HALF) % PSN_MOD - _HALF


class GbnSender:
    """Sender side of one go-back-N transfer of ``total_packets`` packets."""

    def __init__(self, total_packets: int, window_packets: int, timeout_s: float,
                 first_psn: int = 0) -> None:
        if total_packets < 1:
            raise ValueError(f"total_packets: must be >= 1, got {total_packets}")
        if not 1 <= window_packets < _HALF:
            raise ValueError(f"window_packets: must be 1..{_HALF - 1}, got {window_packets}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
        if not 0 <= first_psn < PSN_MOD:
            raise ValueError(f"first_psn: must be 0..{PSN_MOD - 1}, got {first_psn}")
        self.total = total_packets
        self.window = window_packets
        self.timeout_s = timeout_s
        self.first_psn = first_psn
        self.base = 0  # oldest unacknowledged index
        self.next_index = 0  # next index to (re)transmit
        self.high = 0  # one past the highest index ever sent
        self.sent = 0  # transmissions, first copies and retransmissions
        self.retransmitted = 0
        self.timeouts = 0
        self.naks = 0
        self._timer_start: float | None = None

    @property
    def done(self) -> bool:
        """True once every packet is acknowledged."""
        return self.base >= self.total

    @property
    def in_flight(self) -> int:
        """Packets sent and not yet acknowledged."""
        return self.next_index - self.base

    def psn(self, index: int) -> int:
        """Wire PSN of packet ``index`` of the transfer."""
        return psn_add(self.first_psn, index)

    def index(self, psn: int) -> int:
        """Transfer index a wire PSN stands for, relative to the oldest unacked packet."""
        return self.base + psn_diff(psn, self.psn(self.base))

    def deadline(self) -> float | None:
        """When ``poll`` will next declare a timeout, or None if nothing is outstanding."""
        return None if self._timer_start is None else self._timer_start + self.timeout_s

    def next_to_send(self, now: float, limit: int | None = None) -> list[int]:
        """PSNs to transmit now (window permitting, at most ``limit``), in order."""
        stop = min(self.base + self.window, self.total)
        if limit is not None:
            stop = min(stop, self.next_index + max(0, limit))
        indices = range(self.next_index, max(self.next_index, stop))
        for index in indices:
            self.sent += 1
            if index < self.high:
                self.retransmitted += 1
        if indices:
            self.next_index = stop
            self.high = max(self.high, stop)
            if self._timer_start is None:
                self._timer_start = now
        return [self.psn(index) for index in indices]

    def _advance(self, new_base: int, now: float) -> None:
        self.base = new_base
        self.next_index = max(self.next_index, new_base)
        self._timer_start = None if self.base >= self.high else now

    def on_ack(self, psn: int, now: float) -> int:
        """Cumulative ACK of everything up to ``psn``; returns packets newly acknowledged."""
        index = self.index(psn)
        if not self.base <= index < self.high:
            return 0  # stale or bogus
        before = self.base
        self._advance(index + 1, now)
        return self.base - before

    def on_nak(self, psn: int, now: float) -> int:
        """NAK expecting ``psn``: acknowledge before it, resend from it; returns new acks."""
        index = self.index(psn)
        if not self.base <= index <= self.high:
            return 0
        before = self.base
        self.naks += 1
        self._advance(index, now)
        if index < self.high:
            self.next_index = index
            self._timer_start = now
        return self.base - before

    def poll(self, now: float) -> bool:
        """Declare a timeout if the oldest packet waited ``timeout_s``: go back to it."""
        deadline = self.deadline()
        if deadline is None or now < deadline or self.done:
            return False
        self.timeouts += 1
        self.next_index = self.base
        self._timer_start = now
        return True


@dataclass(frozen=True)
class RxAction:
    """What the receiver does with one data packet: deliver it, and ACK / NAK PSNs to send."""

    deliver: bool
    ack: int | None = None
    nak: int | None = None


class GbnReceiver:
    """Receiver side: accepts packets strictly in order, ACKs, NAKs once per gap."""

    def __init__(self, first_psn: int = 0, ack_every: int = 1) -> None:
        if not 0 <= first_psn < PSN_MOD:
            raise ValueError(f"first_psn: must be 0..{PSN_MOD - 1}, got {first_psn}")
        if ack_every < 1:
            raise ValueError(f"ack_every: must be >= 1, got {ack_every}")
        self.expected = first_psn
        self.ack_every = ack_every
        self.delivered = 0
        self.dropped = 0
        self.naks_sent = 0
        self._unacked = 0
        self._nak_pending_gap = False

    @property
    def last_in_order(self) -> int:
        """PSN of the last packet accepted in order (what an ACK carries)."""
        return psn_add(self.expected, -1)

    def on_data(self, psn: int, ack_req: bool = False) -> RxAction:
        """Handle one data packet's PSN (and its AckReq bit)."""
        distance = psn_diff(psn, self.expected)
        if distance == 0:
            self.expected = psn_add(self.expected, 1)
            self.delivered += 1
            self._unacked += 1
            self._nak_pending_gap = False
            if ack_req or self._unacked >= self.ack_every:
                self._unacked = 0
                return RxAction(True, ack=self.last_in_order)
            return RxAction(True)
        self.dropped += 1
        if distance > 0:
            if self._nak_pending_gap:
                return RxAction(False)
            self._nak_pending_gap = True
            self._unacked = 0
            self.naks_sent += 1
            return RxAction(False, nak=self.expected)
        self._unacked = 0
        return RxAction(False, ack=self.last_in_order)
