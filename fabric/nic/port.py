"""One emulated NIC's transmit side: line-rate pacing over its QPs, and its ACKs.

Data packets go out when both the NIC's bucket (line rate) and the QP's
bucket (its current rate) allow, QPs served round robin packet by packet.
ACK/NAKs go out at once (never held back by pacing) but are charged to the
NIC's bucket, as their bytes occupy the link. A send the kernel refuses is
retried ``RETRY_NS`` later, never dropped.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from fabric.nic import wire
from fabric.nic.pacing import TokenBucket, wire_bytes
from fabric.nic.qp import SendQP

#: Wait before retrying a send the kernel refused (ENOBUFS / EAGAIN).
RETRY_NS = 200_000
ACK_WIRE_BYTES = wire_bytes(wire.IPV4_HEADER_LEN + wire.UDP_HEADER_LEN + wire.BTH_LEN
                            + wire.AETH_LEN + wire.ICRC_LEN)


class Clock(Protocol):
    """Time source: monotonic ns for scheduling, wall-clock ns for records."""

    def mono_ns(self) -> int:
        """Monotonic nanoseconds (scheduling)."""

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds (timestamps in packets and files)."""


class Transport(Protocol):
    """Where packets go: ``send`` returns False when the kernel said 'try later'."""

    def send(self, nic_ip: str, src_port: int, dst_ip: str,
             payload: bytes | memoryview) -> bool:
        """Send one UDP payload from (nic_ip, src_port) to (dst_ip, 4791)."""

    def sends_refused(self) -> int:
        """Sends the local qdisc dropped and reported back (never sent: retried later)."""

    def socket_drops(self) -> int:
        """Datagrams the kernel dropped on receive since the agent was configured."""


def earliest(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional times."""
    return b if a is None else a if b is None else min(a, b)


class NicPort:
    """One NIC: its line-rate bucket, its QPs (served round robin), ACKs waiting to go."""

    def __init__(self, ip: str, rail: int, bucket: TokenBucket, transport: Transport,
                 clock: Clock, count: dict[str, int], idle_credit: float) -> None:
        self.ip = ip
        self.rail = rail
        self.bucket = bucket
        #: The credit an idle NIC keeps (core.NIC_IDLE_FRAMES); idle: its last pump
        #: found no QP with work (it starts so).
        self.idle_credit = idle_credit
        self.idle = True
        self.transport = transport
        self.clock = clock
        self.count = count
        self.waiting_on_line = False
        #: The QP whose own bucket we last slept for (its credit lost to a late wake-up is
        #: lateness too: with one QP at line rate, its bucket, not the NIC's, paces).
        self.waiting_qp: SendQP | None = None
        self.qps: list[SendQP] = []
        self.rr = 0
        self.acks: deque[tuple[int, str, bytes, str]] = deque()
        self.blocked_until = 0
        #: Earliest retransmission deadline created by this NIC's sends (a hint for the core).
        self.timer_hint: int | None = None

    def send_ack(self, src_port: int, dst_ip: str, payload: bytes,
                 counter: str = "acks_sent") -> None:
        """Send an ACK/NAK (or, with ``counter="control_sent"``, a control message) now,
        queued behind earlier ones if the kernel refuses."""
        if self.acks or not self.transport.send(self.ip, src_port, dst_ip, payload):
            self.acks.append((src_port, dst_ip, payload, counter))
            return
        self.bucket.consume(ACK_WIRE_BYTES)
        self.count[counter] += 1

    def pump(self, now: int) -> int | None:
        """Send every packet pacing allows at ``now``; when to try again (None: idle)."""
        send = self.transport.send
        while self.acks:
            port, dst_ip, payload, counter = self.acks[0]
            if not send(self.ip, port, dst_ip, payload):
                return now + RETRY_NS
            self.acks.popleft()
            self.bucket.consume(ACK_WIRE_BYTES)
            self.count[counter] += 1
        overflow = self.bucket.refill(now)
        if self.waiting_on_line:  # we slept until line-rate credit was due: any excess is lateness
            self.count["late_bytes"] += int(overflow)
        elif self.waiting_qp is not None:  # ... or until that QP's own credit was due
            self.count["late_bytes"] += int(self.waiting_qp.bucket.refill(now))
        if self.idle:  # nothing was due while idle: only idle_credit of that credit is kept
            self.bucket.tokens = min(self.bucket.tokens, self.idle_credit)
        self.waiting_on_line, self.waiting_qp, self.idle = False, None, False
        if self.blocked_until > now:
            return self.blocked_until
        qps, now_s = self.qps, now / 1e9
        while True:
            chosen, size, wait, count, slot = None, 0, None, len(qps), 0
            waiting_qp = None
            for step in range(count):
                slot = (self.rr + step) % count
                qp = qps[slot]
                if not qp.has_work():
                    continue
                size = qp.next_wire_size()
                ready = qp.bucket.ready_at(size, now)
                if ready <= now:
                    chosen = qp
                    break
                if wait is None or ready < wait:
                    wait, waiting_qp = ready, qp
            if chosen is None:
                self.waiting_qp = waiting_qp if wait is not None else None
                self.idle = wait is None
                return wait
            ready = self.bucket.ready_at(size, now)
            if ready > now:
                self.waiting_on_line = True
                return ready
            payload, index, share, again = chosen.take(now_s, self.clock.wall_ns())
            if not send(self.ip, chosen.src_port, chosen.remote_ip, payload):
                chosen.unsend(index)
                self.blocked_until = now + RETRY_NS
                return self.blocked_until
            self.rr = (slot + 1) % count
            chosen.sent(index)
            self.bucket.consume(size)
            chosen.bucket.consume(size)
            self.count["data_sent"] += 1
            self.count["wire_bytes_sent"] += size
            message = share.message
            message.packets += 1
            if again:
                message.retransmits += 1
            if message.start_ns is None:  # its first bit: a frame leaves with its last
                message.start_ns = self.clock.wall_ns() - int(size / self.bucket.rate)
            self.timer_hint = earliest(self.timer_hint, chosen.deadline_ns())
