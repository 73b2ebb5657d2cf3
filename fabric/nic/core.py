"""The NIC agent's logic without sockets: messages, QPs, pacing, ACKs, records.

``AgentCore`` is driven from outside: ``on_datagram`` for every UDP payload
that arrived on a NIC, ``pump`` to transmit whatever pacing and windows allow
now (it returns the monotonic ns of the next thing to do), plus the control
operations. It sends through a ``Transport`` and reads time from a ``Clock``,
so tests can join two cores with an in-memory lossy link and a fake clock.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fabric.nic import wire
from fabric.nic.control import AgentConfig, ExpectSpec, RequestError, SendSpec
from fabric.nic.dcqcn import Marker, ip_number, repath_port
from fabric.nic.swift import echo_us
from fabric.nic.flows import FlowAnnouncer
from fabric.nic.port import Clock, NicPort, Transport, earliest
from fabric.nic.pacing import TokenBucket, wire_bytes
from fabric.nic.qp import QpControl, SendQP, qp_number, split_sizes
from fabric.nic.wire import BTH_ACKREQ, BTH_U24, DATA_HEAD
from fabric.nic.records import (COUNTER_NAMES, Delivery, Records, SentMessage, progress,
                                  write_csvs)
from fabric.nic.gbn import GbnReceiver

log = logging.getLogger(__name__)

#: Frames of burst in every NIC and QP token bucket (see AgentCore.__init__).
NIC_BURST_FRAMES = 2
#: Frames of credit a NIC keeps while it has nothing to send. The emulator hands a frame
#: over whole, so a NIC releases it when its last bit would have left (its bucket must
#: hold the frame's bytes); a wire cannot have sent any of it earlier, so an idle NIC
#: keeps no credit and its first frame leaves a frame time after the work came (the
#: message's start is backdated to its first bit: port.NicPort.pump). The burst's two
#: frames are only ever credit a backlogged NIC earned while it woke late.
NIC_IDLE_FRAMES = 0
_DATA_OPS = frozenset(int(op) for op in wire.DATA_OPCODES)
_DATA_MIN = DATA_HEAD.size + wire.ICRC_LEN  # BTH + data header + ICRC


class AgentCore:
    """State of one server's emulated RDMA NICs (see the module docstring)."""

    def __init__(self, server: str, config: AgentConfig, transport: Transport,
                 clock: Clock) -> None:
        self.server = server
        self.config = config
        self.transport = transport
        self.clock = clock
        now = clock.mono_ns()
        # Two frames of burst in the NIC's bucket, kept only while it is backlogged (an
        # idle NIC keeps none: NIC_IDLE_FRAMES): a NIC never sends more than its rate
        # plus one extra frame over any window. One frame was measured (RESULTS.md,
        # "Bursts"): an uncontended ring fell from 99.7 % to 97.9 % efficiency, the
        # credit of late wake-ups lost. Announced QPs are paced to their granted share
        # with one frame: with two, proactive's trusted headline dropped 24 frames.
        burst = NIC_BURST_FRAMES * wire_bytes(config.mtu)
        self.count = dict.fromkeys(COUNTER_NAMES, 0)
        self.nics = {nic.ip: self._port(nic.ip, nic.rail, burst, now) for nic in config.nics}
        self.nic_by_rail = {nic.rail: self.nics[nic.ip] for nic in config.nics}
        self.send_qps: dict[int, SendQP] = {}
        self.conns: dict[tuple[str, str, int], SendQP] = {}
        self.recv_qps: dict[tuple[str, int], GbnReceiver] = {}
        self.rates_by_dst: dict[str, float] = {}
        self.records = Records()
        self.unstarted: list[SentMessage] = []
        self.pending: list[SentMessage] = []
        self.received_ids: set[int] = set()
        self.sent_done = 0
        self.received_expected = 0
        self.malformed = 0
        self._release_due = False
        self._next_start: int | None = None
        self._next_timer: int | None = None
        self._ports: dict[int, int] = {}
        self.flows = FlowAnnouncer(config, self.count) if config.announce else None
        self.marker = (None if config.dcqcn is None
                       else Marker(config.dcqcn, config.line_mbps, config.salt))
        self.full_padding = wire.max_padding(config.mtu)
        self.plb_rounds = config.plb_rounds
        #: PLB under DCQCN: a CNP within this long of the previous one continues a
        #: congested run (under Swift: a decrease within two round trips of the last).
        self.plb_round_ns = int(2 * config.dcqcn.cnp_interval_ms * 1e6) if config.dcqcn else 0
        self.swift = config.swift is not None

    def _port(self, ip: str, rail: int, burst: int, now: int) -> NicPort:
        """One NIC of the datapath (the compiled core makes its own)."""
        return NicPort(ip, rail, TokenBucket(self.config.line_mbps, burst, now), self.transport,
                       self.clock, self.count,
                       idle_credit=NIC_IDLE_FRAMES * wire_bytes(self.config.mtu))

    # -- control ------------------------------------------------------------------
    def load(self, sends: list[SendSpec], expects: list[ExpectSpec]) -> None:
        """Add messages to send (they wait for the next ``start``) and to receive."""
        clash = [s.id for s in sends if s.id in self.records.sent]
        if clash:
            raise RequestError(f"load.send: message id {clash[0]} already loaded")
        for spec in sends:
            message = SentMessage(spec.id, spec.src_rail, spec.dst_ip, spec.size,
                                  spec.qps or self.config.qps_per_connection, spec.after,
                                  spec.hops)
            self.records.sent[spec.id] = message
            self.unstarted.append(message)
        if self.flows is not None:
            self._announce([self.records.sent[spec.id] for spec in sends])
        for spec in expects:
            self._expect(spec)

    def _announce(self, messages: list[SentMessage]) -> None:
        """Announce mode: the QPs of newly loaded messages ask for their flows now, once."""
        now, qps = self.clock.mono_ns(), {}
        for message in messages:
            nic = self.nic_by_rail[message.src_rail]
            for index, length in enumerate(split_sizes(message.size, message.qps)):
                qp = self._qp(nic, message.dst_ip, index, message.hops)
                qp.unqueued_shares += 1
                qp.unqueued_bytes += length
                qps[qp.qp] = (qp, nic)
        for qp, nic in qps.values():
            self._next_timer = earliest(self._next_timer, self.flows.on_loaded(qp, nic, now))

    def _expect(self, spec: ExpectSpec) -> bool:
        """Record that message ``spec.id`` is to be received; False if it already was."""
        delivery = self.records.delivered.get(spec.id)
        if delivery is None:
            delivery = self.records.delivered[spec.id] = Delivery(spec.id, spec.dst_rail,
                                                                  spec.size)
        if delivery.expected:
            return False
        delivery.expected = True
        delivery.dst_rail = spec.dst_rail
        if spec.id in self.received_ids:
            self.received_expected += 1
        return True

    def start(self, at_wall_ns: int | None) -> None:
        """Let every loaded, not yet started message go from wall-clock time ``at_wall_ns``."""
        now = self.clock.mono_ns()
        at = now if at_wall_ns is None else now + (at_wall_ns - self.clock.wall_ns())
        if not self.unstarted:
            return
        for message in self.unstarted:
            message.not_before = at
        self.pending += self.unstarted
        self.unstarted = []
        self._next_start = earliest(self._next_start, at)

    def set_rate(self, dst_ip: str, mbps: float) -> int:
        """Pace every QP toward ``dst_ip`` (now and later) at ``mbps``; QPs changed."""
        now = self.clock.mono_ns()
        self.rates_by_dst[dst_ip] = mbps
        changed = 0
        for qp in self.send_qps.values():
            if qp.remote_ip == dst_ip:
                qp.set_rate(mbps, now)
                self._rate_hint(qp)
                changed += 1
        return changed

    def _rate_hint(self, qp: SendQP) -> None:
        """A rate change moved ``qp``'s retransmission deadline (maybe earlier): wake for it."""
        self._next_timer = earliest(self._next_timer, qp.deadline_ns())

    def counters(self, fresh: bool = True) -> dict[str, int]:
        """The counters of docs/run-folder.md (``fresh=False``: socket drops as last read,
        without reading the kernel's counter file)."""
        if fresh:
            self.count["socket_drops"] = self.transport.socket_drops()
        self.count["sends_refused"] = self.transport.sends_refused()
        return dict(self.count)

    def status(self) -> dict:
        """Progress of the loaded messages (the ``status`` reply without ``ok``; polled
        often, so socket drops are those of the last ``counters()``)."""
        return progress(self.records, self.sent_done, self.received_expected,
                        self.counters(fresh=False), self.held_qps())

    def held_qps(self) -> int:
        """Send QPs waiting for a grant (announce mode)."""
        return sum(1 for qp in self.send_qps.values() if qp.held)

    def finish(self, out_dir: str | Path | None = None) -> list[Path]:
        """Write the three CSV files; their paths."""
        return write_csvs(out_dir or self.config.out_dir, self.server, self.records)

    # -- receiving ----------------------------------------------------------------
    def on_datagram(self, nic_ip: str, src_ip: str, data: bytes | memoryview) -> None:
        """Handle one UDP payload that arrived at NIC ``nic_ip`` from ``src_ip``."""
        size = len(data)
        if size >= _DATA_MIN and data[0] in _DATA_OPS:
            _, _, _, qpw, psnw, ts, mid, mlen, offset = DATA_HEAD.unpack_from(data)
            self._on_data(self.nics[nic_ip], src_ip, qpw & BTH_U24, psnw & BTH_U24,
                          bool(psnw & BTH_ACKREQ), ts, mid, mlen, size - _DATA_MIN)
            return
        try:
            message = wire.decode(bytes(data))
        except wire.WireError as error:
            self.malformed += 1
            log.debug("malformed packet from %s: %s", src_ip, error)
            return
        now = self.clock.mono_ns()
        if isinstance(message, wire.Ack):
            self.count["acks_received"] += 1
            self._on_ack(message, now)
        elif isinstance(message, wire.Cnp):
            self.count["cnps_received"] += 1
            qp = self.send_qps.get(message.dest_qp)
            if qp is not None:
                qp.on_cnp(now)
                if self.plb_rounds and not message.last_hop:
                    self._plb_on_congestion(qp, now, self.plb_round_ns)
                self._rate_hint(qp)
                self._next_timer = earliest(self._next_timer, qp.rate.next_recovery)
        else:
            self.count["control_received"] += 1
            if isinstance(message, wire.RateGrant):
                self._on_grant(message, now)
            elif isinstance(message, wire.RateGrants):
                for grant in message.grants:
                    self._on_grant(grant, now)

    def _on_grant(self, grant: wire.RateGrant, now: int) -> None:
        """The fabric manager granted one of our QPs a rate."""
        qp = self.send_qps.get(grant.qp)
        if qp is None:
            return
        if self.flows is not None:
            self.flows.on_grant(qp, grant, now)
        elif grant.rate_kbps > 0:
            qp.set_rate(grant.rate_kbps / 1000.0, now)
        self._rate_hint(qp)

    def _on_data(self, nic: NicPort, src_ip: str, qp: int, psn: int, ack_req: bool, ts: int,
                 message_id: int, length: int, padding: int) -> None:
        self.count["data_received"] += 1
        wall = self.clock.wall_ns()
        every = self.config.delay_sample_every
        if every and self.count["data_received"] % every == 0:
            self.records.delays.append((wall, src_ip, nic.ip, nic.rail, wall - ts))
        if self.marker is not None:
            mono, source = self.clock.mono_ns(), ip_number(src_ip)
            self.marker.arrived(nic.rail, source, qp, mono)
            if padding == self.full_padding and self.marker.on_frame(source, qp, wall - ts, mono):
                last_hop = self.marker.last_hop(nic.rail, source, qp, mono)
                self._send_ack(nic, src_ip, wire.Cnp(qp, last_hop), "cnps_sent")
        receiver = self.recv_qps.get((src_ip, qp))
        if receiver is None:
            receiver = self.recv_qps[(src_ip, qp)] = GbnReceiver(0, self.config.ack_every)
        action = receiver.on_data(psn, ack_req)
        if action.deliver:
            self._deliver(nic, message_id, length, padding, wall)
        if action.ack is not None:  # with the one-way delay of a full frame (Swift)
            echo = echo_us(wall - ts) if padding == self.full_padding else 0
            self._send_ack(nic, src_ip, wire.Ack(qp, action.ack, echo))
        if action.nak is not None:
            self._send_ack(nic, src_ip, wire.nak(qp, action.nak))

    def _deliver(self, nic: NicPort, message_id: int, length: int, padding: int,
                 wall: int) -> None:
        delivery = self.records.delivered.get(message_id)
        if delivery is None:
            delivery = self.records.delivered[message_id] = Delivery(message_id, nic.rail, length)
        if delivery.first_ns is None:
            delivery.first_ns = wall
        delivery.bytes += padding
        delivery.last_ns = wall
        if delivery.complete and message_id not in self.received_ids:
            self.received_ids.add(message_id)
            if delivery.expected:
                self.received_expected += 1
            self._release_due = True

    def _send_ack(self, nic: NicPort, dst_ip: str, ack: wire.Ack | wire.Cnp,
                  counter: str = "acks_sent") -> None:
        port = self._ports.get(ack.dest_qp)
        if port is None:
            port = self._ports[ack.dest_qp] = wire.udp_source_port(ack.dest_qp, self.config.salt)
        nic.send_ack(port, dst_ip, wire.encode(ack), counter)

    def _on_ack(self, ack: wire.Ack, now: int) -> None:
        qp = self.send_qps.get(ack.dest_qp)
        if qp is None:
            return
        for share in qp.on_ack(ack.psn, ack.is_nak, now / 1e9):
            message = share.message
            message.shares_left -= 1
            if message.shares_left == 0:
                message.acked_ns = self.clock.wall_ns()
                self.sent_done += 1
        if qp.fence is not None and qp.gbn.base >= qp.fence:
            self._repath(qp)
        if self.flows is not None and qp.idle():
            self._on_idle(qp, now)
        if self.swift and ack.msn and not ack.is_nak:
            self._on_echo(qp, ack.msn * 1000, now)

    def _on_echo(self, qp: QpControl, delay_ns: int, now: int) -> None:
        """Swift: an ACK echoed the one-way delay of the frame it acknowledges."""
        changed, decreased = qp.on_delay(now, delay_ns)
        if changed:
            self._rate_hint(qp)
        if decreased:
            self.count["swift_cuts"] += 1
            if self.plb_rounds:
                self._plb_on_congestion(qp, now, 4 * delay_ns)

    def _on_idle(self, qp: SendQP, now: int) -> None:
        """Every packet of ``qp`` is acknowledged: announce mode's done timer."""
        self._next_timer = earliest(self._next_timer, self.flows.on_idle(qp, now))

    # -- PLB (fabric/nic/dcqcn.py) ---------------------------------------------
    def _plb_on_congestion(self, qp: QpControl, now: int, round_ns: int) -> None:
        """A CNP or a Swift decrease: one more congested round if the last came within
        ``round_ns``; after ``plb_rounds`` in a row, fence the QP one packet past what it
        has sent, to re-path once that is acknowledged (the fence's last packet asks for an
        ACK whatever ``ack_every`` says, so the drain starts at once)."""
        recent = qp.last_congestion_ns is not None and now - qp.last_congestion_ns <= round_ns
        qp.congested_rounds = qp.congested_rounds + 1 if recent else 1
        qp.last_congestion_ns = now
        if qp.congested_rounds < self.plb_rounds or qp.fence is not None:
            return
        base, high, total = qp.indices()
        fence = min(high + 1, total)
        if base >= fence:
            self._repath(qp)
        else:
            qp.fence = fence

    def _repath(self, qp: QpControl) -> None:
        """Nothing is in flight on the old path: take a new UDP source port, lift the fence."""
        qp.repaths += 1
        qp.congested_rounds = 0
        self.count["repaths"] += 1
        qp.set_src_port(repath_port(qp.qp, self.config.salt, qp.repaths))
        qp.fence = None
        qp.on_repath(self.clock.mono_ns())

    # -- sending ------------------------------------------------------------------
    def _qp(self, nic: NicPort, remote_ip: str, index: int, hops: int = 1) -> SendQP:
        key = (nic.ip, remote_ip, index)
        qp = self.conns.get(key)
        if qp is None:
            number = qp_number(nic.ip, remote_ip, index, self.send_qps)
            cfg = self.config
            qp = self._new_qp(nic, number, remote_ip, wire.udp_source_port(number, cfg.salt),
                              self.clock.mono_ns(),
                              burst_frames=NIC_BURST_FRAMES)
            self.conns[key] = self.send_qps[number] = qp
            nic.qps.append(qp)
            if self.swift:
                qp.rate.hops = hops  # Swift's target scales with the switches on the way
        return qp

    def _new_qp(self, nic: NicPort, number: int, remote_ip: str, src_port: int, now: int,
                burst_frames: int) -> SendQP:
        """A send QP of the datapath (the compiled core makes its own)."""
        cfg = self.config
        return SendQP(number, nic.ip, nic.rail, remote_ip, src_port, cfg.mtu, cfg.line_mbps,
                      cfg.window_packets, cfg.rto_ms / 1000.0, cfg.ack_every, now,
                      self.rates_by_dst.get(remote_ip), burst_frames=burst_frames,
                      congestion=cfg.congestion)

    def _release(self, now: int) -> None:
        """Queue the messages whose start time came and whose dependencies were received."""
        waiting, self._next_start, self._release_due = [], None, False
        for message in self.pending:
            if message.not_before > now:
                self._next_start = earliest(self._next_start, message.not_before)
                waiting.append(message)
            elif all(dep in self.received_ids for dep in message.after):
                self._queue(message, now)
            else:
                waiting.append(message)
        self.pending = waiting

    def _queue(self, message: SentMessage, now: int) -> None:
        nic = self.nic_by_rail[message.src_rail]
        sizes = split_sizes(message.size, message.qps)
        message.released = True
        message.shares_left = len(sizes)
        offset = 0
        for index, length in enumerate(sizes):
            qp = self._qp(nic, message.dst_ip, index, message.hops)
            qp.add_share(message, offset, length)
            offset += length
            if self.flows is not None:
                qp.unqueued_shares -= 1
                qp.unqueued_bytes -= length
                if qp.phase_pending:
                    self.flows.on_first_work(qp, now)
                self._next_timer = earliest(self._next_timer, self.flows.on_queued(qp, nic, now))

    def _pump_control(self, now: int) -> int | None:
        """Release due messages and run due timers; the control plane's next deadline."""
        if self.pending and (self._release_due or (self._next_start is not None
                                                   and now >= self._next_start)):
            self._release(now)
        if self._next_timer is not None and now >= self._next_timer:
            self._timers(now)
        return earliest(self._next_start if self.pending else None, self._next_timer)

    def pump(self) -> int | None:
        """Transmit what pacing and windows allow now; monotonic ns of the next deadline."""
        now = self.clock.mono_ns()
        deadline = self._pump_control(now)
        for nic in self.nics.values():
            deadline = earliest(deadline, nic.pump(now))
            if nic.timer_hint is not None:
                self._next_timer = earliest(self._next_timer, nic.timer_hint)
                nic.timer_hint = None
        return earliest(deadline, self._next_timer)

    def _control_timers(self, now: int) -> int | None:
        """Rate recovery and announce-mode timers of every QP; the next of them."""
        next_timer = None
        for qp in self.send_qps.values():
            recovery = qp.rate.next_recovery
            if recovery is not None and recovery <= now:
                recovery = qp.recover(now)
            next_timer = earliest(next_timer, recovery)
            if self.flows is not None:
                flow_timer = self.flows.on_timer(qp, self.nic_by_rail[qp.rail], now)
                next_timer = earliest(next_timer, flow_timer)
        return next_timer

    def _timers(self, now: int) -> None:
        """The control timers, then the retransmission timeouts (after: a recovered rate
        shortens the timeout); the next timer."""
        next_timer, now_s = self._control_timers(now), now / 1e9
        for qp in self.send_qps.values():
            rto = qp.deadline_ns()
            if rto is not None and rto <= now:
                qp.poll(now_s)
                rto = qp.deadline_ns()
            next_timer = earliest(next_timer, rto)
        self._next_timer = next_timer
