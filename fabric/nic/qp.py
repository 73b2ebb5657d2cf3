"""Queue pairs of the emulated NIC: the send side of one QP and the fast packet codec.

A send QP carries the shares of several messages back to back: its PSNs
continue from one message to the next (first PSN 0), and one go-back-N sender
covers them all. The sender's transfer grows when a share is appended
(``GbnSender.total`` is raised), so messages on a QP pipeline without waiting
for the previous one's last ACK, as on a real RC QP.

Data packets are built in one preallocated buffer per QP with a single
``wire.DATA_HEAD.pack_into``; the bytes are exactly ``wire.encode(wire.Data(...))``'s
(checked by the unit tests), only cheaper.
"""

from __future__ import annotations

import bisect
import zlib

from fabric.nic import wire
from fabric.nic.dcqcn import DcqcnParams, DcqcnRate
from fabric.nic.swift import SwiftParams, SwiftRate
from fabric.nic.pacing import QpRate, TokenBucket, wire_bytes
from fabric.nic.records import SentMessage
from fabric.nic.gbn import GbnSender
from fabric.nic.wire import BTH_ACKREQ, BTH_U24, DATA_HEAD

_RESERVED_QPS = (0, 1)  # QP0 / QP1 are special in InfiniBand


def qp_number(local_ip: str, remote_ip: str, index: int, taken: set[int] | dict) -> int:
    """Deterministic 24-bit QP number for (local NIC, remote IP, index), unique in ``taken``."""
    qp = zlib.crc32(f"{local_ip}>{remote_ip}#{index}".encode()) & BTH_U24
    while qp in _RESERVED_QPS or qp in taken:
        qp = (qp + 1) & BTH_U24
    return qp


def split_sizes(size: int, qps: int) -> list[int]:
    """Bytes of a ``size``-byte message per QP (first QPs take the remainder; no empty share)."""
    count = max(1, min(qps, size))
    base, extra = divmod(size, count)
    return [base + (1 if index < extra else 0) for index in range(count)]


def packet_count(length: int, chunk: int) -> int:
    """Data packets needed for ``length`` bytes with ``chunk`` bytes per packet."""
    return -(-length // chunk)


def segment(length: int, chunk: int, index: int) -> tuple[int, int, wire.Opcode]:
    """Packet ``index`` of a ``length``-byte share: (offset, bytes, opcode: FIRST/MIDDLE/LAST or ONLY)."""
    count = packet_count(length, chunk)
    offset = index * chunk
    if count == 1:
        opcode = wire.Opcode.SEND_ONLY
    elif index == 0:
        opcode = wire.Opcode.SEND_FIRST
    elif index == count - 1:
        opcode = wire.Opcode.SEND_LAST
    else:
        opcode = wire.Opcode.SEND_MIDDLE
    return offset, min(chunk, length - offset), opcode


class Share:
    """The bytes of one message one QP carries: packets start_index .. end_index - 1."""

    __slots__ = ("message", "base_offset", "length", "start_index", "end_index")

    def __init__(self, message: SentMessage, base_offset: int, length: int, start_index: int,
                 packets: int) -> None:
        self.message = message
        self.base_offset = base_offset
        self.length = length
        self.start_index = start_index
        self.end_index = start_index + packets


class QpControl:
    """What the control plane knows of a send QP: identity, rate, announce state.

    The datapath (``SendQP`` here, or the compiled one in fabric/nic/compiled.py)
    adds the packets; ``_rate_changed`` tells it the rate or the timeout moved.
    """

    def __init__(self, qp: int, nic_ip: str, rail: int, remote_ip: str, src_port: int,
                 mtu: int, line_mbps: float, window: int, rto_s: float, ack_every: int,
                 target_mbps: float | None = None,
                 congestion: DcqcnParams | SwiftParams | None = None) -> None:
        self.qp = qp
        self.nic_ip = nic_ip
        self.rail = rail
        self.remote_ip = remote_ip
        self.src_port = src_port
        self.chunk = wire.max_padding(mtu)
        self.window = window
        self.rto_s = rto_s
        self.ack_every = ack_every
        self.frame_bytes = wire_bytes(mtu)
        self.rate: QpRate | DcqcnRate | SwiftRate
        if isinstance(congestion, DcqcnParams):
            self.rate = DcqcnRate(line_mbps, congestion, target_mbps)
        elif isinstance(congestion, SwiftParams):
            self.rate = SwiftRate(line_mbps, congestion, self.frame_bytes, target_mbps)
        else:
            self.rate = QpRate(line_mbps, target_mbps)
        # Announce mode (fabric/nic/flows.py): the fabric manager knows this QP's flow,
        # the QP waits for a grant, and when it asked / will report the flow done.
        self.announced = False
        self.held = False
        self.request_seq = 0
        self.request_tries = 0
        self.request_deadline: int | None = None
        self.done_deadline: int | None = None
        #: Announce mode: granted while held, so its first work starts at a seeded phase.
        self.phase_pending = False
        #: PLB (fabric/nic/dcqcn.py): the last CNP or Swift decrease, congested rounds in a
        #: row, re-paths so far, and the fence: while a re-path waits for the packets in
        #: flight on the old path to be acknowledged, nothing at or past this index is sent
        #: (None: no fence).
        self.last_congestion_ns: int | None = None
        self.congested_rounds = 0
        self.repaths = 0
        self._fence: int | None = None
        #: Shares (and their bytes) loaded for this QP but not queued on it yet.
        self.unqueued_shares = 0
        self.unqueued_bytes = 0

    def timeout_s(self) -> float:
        """Effective RTO: ``rto_ms`` plus sending ``ack_every`` full packets at the QP's rate.

        ACKs are coalesced, so none can come sooner than that; at emulated rates
        (a 9000-byte frame takes 7.2 ms at 10 Mb/s) a bare ``rto_ms`` would fire
        on a loss-free path.
        """
        frame_s = self.frame_bytes * 8 / (self.rate.current_mbps * 1e6)
        return self.rto_s + self.ack_every * frame_s

    def _rate_changed(self, now_ns: int) -> None:
        raise NotImplementedError

    def set_credit(self, tokens: float, now_ns: int) -> None:
        """The QP bucket's tokens from ``now_ns`` (capped at its burst)."""
        raise NotImplementedError

    def set_src_port(self, port: int) -> None:
        """Send from another UDP source port from now on (a PLB re-path)."""
        self.src_port = port

    def set_rate(self, mbps: float, now_ns: int) -> None:
        """New target rate (set_rate request or RATE_GRANT), applied at once."""
        self.rate.set_target(mbps)
        self._rate_changed(now_ns)

    @property
    def fence(self) -> int | None:
        """PLB: the packet index a re-path waits at (None: none)."""
        return self._fence

    @fence.setter
    def fence(self, index: int | None) -> None:
        self._fence = index
        self._fence_changed()

    def _fence_changed(self) -> None:
        """The datapath's hook for a new fence (the reference reads ``_fence`` itself)."""

    def indices(self) -> tuple[int, int, int]:
        """Packet indices: (oldest unacknowledged, one past the highest ever transmitted,
        one past the last queued)."""
        raise NotImplementedError

    def on_delay(self, now_ns: int, delay_ns: int) -> tuple[bool, bool]:
        """An ACK echoed a one-way delay (Swift): (the rate changed, it was cut)."""
        changed, decreased = self.rate.on_delay(now_ns, delay_ns)
        if changed:
            self._rate_changed(now_ns)
        return changed, decreased

    def on_repath(self, now_ns: int) -> None:
        """PLB re-pathed the QP: its rate machine starts over (DCQCN, Swift)."""
        self.rate.on_repath()
        self._rate_changed(now_ns)

    def on_cnp(self, now_ns: int) -> None:
        """Congestion notification hook: cut the rate (see pacing.QpRate)."""
        self.rate.on_cnp(now_ns)
        self._rate_changed(now_ns)

    def recover(self, now_ns: int) -> int | None:
        """Apply due rate recovery; the next recovery time, if any."""
        if self.rate.recover(now_ns):
            self._rate_changed(now_ns)
        return self.rate.next_recovery


class SendQP(QpControl):
    """Send side of one QP in Python (the reference datapath): queued shares, go-back-N
    state, token bucket."""

    def __init__(self, qp: int, nic_ip: str, rail: int, remote_ip: str, src_port: int,
                 mtu: int, line_mbps: float, window: int, rto_s: float, ack_every: int,
                 now_ns: int, target_mbps: float | None = None, burst_frames: int = 2,
                 congestion: DcqcnParams | SwiftParams | None = None) -> None:
        super().__init__(qp, nic_ip, rail, remote_ip, src_port, mtu, line_mbps, window, rto_s,
                         ack_every, target_mbps, congestion)
        self.bucket = TokenBucket(self.rate.current_mbps, burst_frames * self.frame_bytes, now_ns)
        self.gbn: GbnSender | None = None
        self.shares: list[Share] = []
        self.starts: list[int] = []
        self.done_shares = 0
        self.high = 0  # one past the highest packet index ever transmitted
        self.buf = bytearray(mtu - wire.IPV4_HEADER_LEN - wire.UDP_HEADER_LEN)
        self.view = memoryview(self.buf)

    def set_credit(self, tokens: float, now_ns: int) -> None:
        """The QP bucket's tokens from ``now_ns`` (capped at its burst)."""
        self.bucket.tokens = min(tokens, self.bucket.burst)
        self.bucket.last = now_ns

    # -- queueing -------------------------------------------------------------
    def add_share(self, message: SentMessage, base_offset: int, length: int) -> None:
        """Append ``length`` bytes of ``message`` (from ``base_offset``) to this QP."""
        packets = packet_count(length, self.chunk)
        start = self.gbn.total if self.gbn else 0
        self.shares.append(Share(message, base_offset, length, start, packets))
        self.starts.append(start)
        if self.gbn is None:
            self.gbn = GbnSender(packets, self.window, self.timeout_s(), 0)
        else:
            self.gbn.total += packets  # the transfer grows; see the module docstring

    def _rate_changed(self, now_ns: int) -> None:
        self.bucket.set_rate(self.rate.current_mbps, now_ns)
        if self.gbn is not None:
            self.gbn.timeout_s = self.timeout_s()

    @property
    def pacing_mbps(self) -> float:
        """The rate its token bucket fills at."""
        return self.bucket.mbps

    def share_of(self, index: int) -> Share:
        """The share packet ``index`` belongs to."""
        return self.shares[bisect.bisect_right(self.starts, index) - 1]

    def has_work(self) -> bool:
        """Whether the window allows a packet to be (re)transmitted now."""
        gbn = self.gbn
        return (not self.held and gbn is not None and gbn.next_index < gbn.total
                and gbn.next_index < gbn.base + gbn.window
                and (self._fence is None or gbn.next_index < self._fence))

    def next_wire_size(self) -> int:
        """Wire bytes of the next packet to transmit (``has_work`` must be true)."""
        index = self.gbn.next_index
        share = self.share_of(index)
        offset = (index - share.start_index) * self.chunk
        return wire_bytes(wire.ip_packet_size(min(self.chunk, share.length - offset)))

    def deadline_ns(self) -> int | None:
        """Monotonic ns of the retransmission timeout, None if nothing is outstanding."""
        deadline = self.gbn.deadline() if self.gbn else None
        # 1 us past the float deadline, so poll() surely sees it expired
        return None if deadline is None else int(deadline * 1e9) + 1000

    # -- transmitting -----------------------------------------------------------
    def take(self, now_s: float, ts_ns: int) -> tuple[memoryview, int, Share, bool]:
        """Pop the next packet: (UDP payload, index, share, is_retransmission)."""
        gbn = self.gbn
        index = gbn.next_index
        gbn.next_to_send(now_s, limit=1)
        share = self.share_of(index)
        local = index - share.start_index
        offset, length, opcode = segment(share.length, self.chunk, local)
        ack_req = local == packet_count(share.length, self.chunk) - 1 or \
            (index + 1) % self.ack_every == 0 or index + 1 == self._fence
        DATA_HEAD.pack_into(self.buf, 0, opcode, 0, wire.DEFAULT_PKEY, self.qp,
                            (BTH_ACKREQ if ack_req else 0) | gbn.psn(index), ts_ns,
                            share.message.id, share.message.size, share.base_offset + offset)
        end = wire.DATA_HEADER_LEN + wire.BTH_LEN + length + wire.ICRC_LEN
        return self.view[:end], index, share, index < self.high

    def sent(self, index: int) -> None:
        """The packet ``index`` went out."""
        if index >= self.high:
            self.high = index + 1

    def unsend(self, index: int) -> None:
        """The packet ``index`` could not be handed to the kernel: send it again later."""
        self.gbn.next_index = index

    # -- feedback ---------------------------------------------------------------
    def indices(self) -> tuple[int, int, int]:
        """Packet indices: (oldest unacknowledged, one past the highest ever transmitted,
        one past the last queued)."""
        gbn = self.gbn
        return (gbn.base, self.high, gbn.total) if gbn else (0, 0, 0)

    def idle(self) -> bool:
        """True when every packet ever queued on this QP is acknowledged."""
        return self.gbn is None or self.gbn.base >= self.gbn.total

    def unacked_bytes(self) -> int:
        """Message bytes queued on this QP and not yet acknowledged (about)."""
        if self.gbn is None:
            return 0
        return max(0, (self.gbn.total - self.gbn.base) * self.chunk)

    def oldest_message(self) -> SentMessage | None:
        """The message of the oldest unacknowledged packet."""
        if self.gbn is None or self.gbn.done:
            return None
        return self.share_of(self.gbn.base).message

    def on_ack(self, psn: int, is_nak: bool, now_s: float) -> list[Share]:
        """Apply an ACK / NAK; the shares it completed."""
        gbn = self.gbn
        if gbn is None:
            return []
        if is_nak:
            before = gbn.naks
            gbn.on_nak(psn, now_s)
            victim = self.oldest_message()
            if gbn.naks > before and victim is not None:
                victim.naks += 1
        else:
            gbn.on_ack(psn, now_s)
        done = []
        while self.done_shares < len(self.shares) and \
                self.shares[self.done_shares].end_index <= gbn.base:
            done.append(self.shares[self.done_shares])
            self.done_shares += 1
        return done

    def poll(self, now_s: float) -> bool:
        """Retransmission timeout check; True if it fired (go back to the oldest packet)."""
        victim = self.oldest_message()
        if self.gbn is not None and self.gbn.poll(now_s):
            if victim is not None:
                victim.timeouts += 1
            return True
        return False
