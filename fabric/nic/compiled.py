"""The NIC with its per-packet work compiled: ``CompiledCore``, an ``AgentCore`` over the C engine.

``fabric/nic/_engine.c`` does what fabric/nic/port.py, qp.py, gbn.py and the
receive half of core.py do for every packet (pacing, framing, go-back-N, ACKs,
timeouts, delivery counts, delay samples). This module keeps the per-event
decisions in Python, shared with the reference: messages and their release,
rates (set_rate, CNP cuts and recovery, grants), announce mode
(fabric/nic/flows.py), records and the control socket. The engine reports
back through events: a QP share acknowledged, a message delivered, a QP idle, a
fenced QP drained (PLB), the delay an ACK echoed (Swift).

Selected with ``[transport] nic = "compiled"`` (the default); ``"python"`` runs
the reference. Fed the same calls, both send the same bytes and keep the same
records (tests/unit/fabric/test_datapath_diff.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

from fabric.nic.control import AgentConfig, ExpectSpec, SendSpec
from fabric.nic.core import NIC_BURST_FRAMES, NIC_IDLE_FRAMES, AgentCore
from fabric.nic.pacing import wire_bytes
from fabric.nic.port import Clock, Transport, earliest
from fabric.nic.qp import QpControl
from fabric.nic.records import Delivery, Records, SentMessage, progress

try:
    from fabric.nic._engine import Engine
except ImportError:  # not built: `make demo` / `make test` build it (scripts/setup.sh)
    Engine = None

#: Event kinds of Engine.take_events (fabric/nic/_engine.c).
SHARE_DONE, DELIVERED, IDLE, DRAINED, ECHO = 1, 2, 3, 4, 5


class EngineNic:
    """One NIC as the control plane sees it: its address, rail, QPs; control sends."""

    def __init__(self, engine: "Engine", index: int, ip: str, rail: int) -> None:
        self.engine = engine
        self.index = index
        self.ip = ip
        self.rail = rail
        self.qps: list[EngineQP] = []

    def send_ack(self, src_port: int, dst_ip: str, payload: bytes,
                 counter: str = "acks_sent") -> None:
        """Send an ACK or a control message now, queued behind earlier ones if refused."""
        self.engine.send_control(self.index, src_port, dst_ip, payload, counter == "control_sent")


class EngineQP(QpControl):
    """A send QP whose packets live in the engine (``handle`` there)."""

    def __init__(self, engine: "Engine", slots: dict[int, int], nic: EngineNic, qp: int,
                 remote_ip: str, src_port: int, config: AgentConfig, now: int,
                 target_mbps: float | None, burst_frames: int) -> None:
        self.engine = engine
        self.slots = slots
        self.handle: int | None = None
        super().__init__(qp, nic.ip, nic.rail, remote_ip, src_port, config.mtu,
                         config.line_mbps, config.window_packets, config.rto_ms / 1000.0,
                         config.ack_every, target_mbps, config.congestion)
        self.handle = engine.add_qp(nic.index, qp, remote_ip, src_port, config.window_packets,
                                    self.rate.current_mbps,
                                    float(burst_frames * self.frame_bytes), self.timeout_s(), now)

    @property
    def held(self) -> bool:
        """Announce mode: packets wait for a grant."""
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        self._held = value
        if self.handle is not None:
            self.engine.set_held(self.handle, value)

    def _fence_changed(self) -> None:
        self.engine.set_fence(self.handle, -1 if self._fence is None else self._fence)

    def indices(self) -> tuple[int, int, int]:
        """Packet indices: (oldest unacknowledged, one past the highest ever transmitted,
        one past the last queued)."""
        state = self.engine.qp_state(self.handle)
        return state[3], state[6], state[5]

    def _rate_changed(self, now_ns: int) -> None:
        self.engine.set_rate(self.handle, self.rate.current_mbps, self.timeout_s(), now_ns)

    def set_credit(self, tokens: float, now_ns: int) -> None:
        """The QP bucket's tokens from ``now_ns`` (capped at its burst)."""
        self.engine.set_credit(self.handle, tokens, now_ns)

    def set_src_port(self, port: int) -> None:
        """Send from another UDP source port from now on (a PLB re-path)."""
        self.src_port = port
        self.engine.set_src_port(self.handle, port)

    def add_share(self, message: SentMessage, base_offset: int, length: int) -> None:
        """Append ``length`` bytes of ``message`` (from ``base_offset``) to this QP."""
        self.engine.add_share(self.handle, self.slots[message.id], message.id, message.size,
                              base_offset, length)

    def idle(self) -> bool:
        """True when every packet ever queued on this QP is acknowledged."""
        return self.engine.qp_state(self.handle)[0]

    def unacked_bytes(self) -> int:
        """Message bytes queued on this QP and not yet acknowledged (about)."""
        return self.engine.qp_state(self.handle)[1]

    @property
    def pacing_mbps(self) -> float:
        """The rate its token bucket fills at."""
        return self.engine.qp_state(self.handle)[7]

    def deadline_ns(self) -> int | None:
        """Monotonic ns of the retransmission timeout, None if nothing is outstanding."""
        deadline = self.engine.qp_state(self.handle)[2]
        return None if deadline < 0 else deadline


class CompiledCore(AgentCore):
    """``AgentCore`` with the compiled datapath (see the module docstring).

    ``transport`` either has ``fd_for(nic_ip, src_port) -> socket`` (kernel UDP
    sockets: the engine sends on them and, in ``serve``, receives on them itself)
    or only ``send`` (tests: every packet goes through it, as in the reference).
    """

    def __init__(self, server: str, config: AgentConfig, transport: Transport,
                 clock: Clock) -> None:
        if Engine is None:
            raise RuntimeError("the compiled NIC datapath is not built (run `make test` or "
                               "`make demo` once, or choose [transport] nic = \"python\")")
        fd_for = getattr(transport, "fd_for", None)
        frame = wire_bytes(config.mtu)
        self.engine = Engine(config.line_mbps, float(NIC_BURST_FRAMES * frame),
                             float(NIC_IDLE_FRAMES * frame), config.mtu, config.ack_every,
                             config.delay_sample_every, config.announce, config.salt,
                             sender=None if fd_for else transport.send,
                             fd_for=(lambda ip, port: fd_for(ip, port).fileno()) if fd_for else None,
                             dcqcn=None if config.dcqcn is None else (
                                 float(config.dcqcn.kmin_bytes), float(config.dcqcn.kmax_bytes),
                                 config.dcqcn.pmax, int(config.dcqcn.cnp_interval_ms * 1e6)),
                             echo_events=config.swift is not None)
        self._stale = self._receivers = False
        self.slots: list[SentMessage] = []
        self.slot_of: dict[int, int] = {}
        self.by_handle: list[EngineQP] = []
        super().__init__(server, config, transport, clock)
        self.nic_by_index = {nic.index: nic for nic in self.nics.values()}

    def _port(self, ip: str, rail: int, burst: int, now: int) -> EngineNic:
        return EngineNic(self.engine, self.engine.add_nic(ip, rail, now), ip, rail)

    # -- control ------------------------------------------------------------------
    def load(self, sends: list[SendSpec], expects: list[ExpectSpec]) -> None:
        """Add messages to send and to receive (see AgentCore.load)."""
        super().load(sends, expects)  # refuses an id loaded before, before any change
        for spec in sends:
            self.slot_of[spec.id] = len(self.slots)
            self.engine.add_message(len(self.slots))
            self.slots.append(self._records.sent[spec.id])

    def _expect(self, spec: ExpectSpec) -> bool:
        if not super()._expect(spec):
            return False
        self.engine.expect(spec.id, spec.dst_rail, spec.size)
        return True

    @property
    def records(self) -> Records:
        """The records, with the engine's per-packet counts copied in (when they moved)."""
        if self._stale:
            self._stale = False
            self._sync()
        return self._records

    @records.setter
    def records(self, records: Records) -> None:
        self._records, self._stale = records, False

    @property
    def recv_qps(self) -> dict[tuple[str, int], None]:
        """The receive QPs, by (source IP, QP number)."""
        return dict.fromkeys(self.engine.receivers())

    @recv_qps.setter
    def recv_qps(self, value: dict) -> None:
        """The engine keeps the receive QPs (AgentCore.__init__ sets an empty dict)."""

    def _sync(self) -> None:
        records = self._records
        for slot, message in enumerate(self.slots):
            (message.packets, message.retransmits, message.timeouts, message.naks,
             message.start_ns) = self.engine.message_stats(slot)
        delivered = records.delivered
        for mid, rail, size, got, first, last in self.engine.deliveries():
            delivery = delivered.get(mid) or delivered.setdefault(mid, Delivery(mid, rail, size))
            delivery.dst_rail, delivery.size, delivery.bytes = rail, size, got
            delivery.first_ns, delivery.last_ns = first, last
        nics = self.nic_by_index
        records.delays += [(wall, src, nics[nic].ip, nics[nic].rail, delay)
                           for wall, src, nic, delay in self.engine.delays(len(records.delays))]

    def status(self) -> dict:
        """Progress of the loaded messages (no per-packet counts needed: no sync)."""
        return progress(self._records, self.sent_done, self.received_expected,
                        self.counters(fresh=False), self.held_qps())

    def counters(self, fresh: bool = True) -> dict[str, int]:
        """The counters of docs/run-folder.md (the datapath's from the engine)."""
        count = super().counters(fresh)
        count.update(self.engine.counters())
        return count

    # -- datapath -------------------------------------------------------------------
    def on_datagram(self, nic_ip: str, src_ip: str, data: bytes | memoryview) -> None:
        """Handle one UDP payload that arrived at NIC ``nic_ip`` from ``src_ip``."""
        nic = self.nics[nic_ip]
        now, self._stale = self.clock.mono_ns(), True
        if self.engine.on_datagram(nic.index, src_ip, data, now, self.clock.wall_ns()):
            self._events()
        else:
            super().on_datagram(nic_ip, src_ip, data)

    def serve(self, sockets: dict[str, socket.socket], control_fds: list[int]) -> bool:
        """One turn of the agent's event loop: due control work, then the engine's own loop
        (pump, wait, receive) until the control plane has work; True if a control
        descriptor is readable. ``sockets``: the NICs' receive sockets, handed over once."""
        if not self._receivers:
            for ip, sock in sockets.items():
                self.engine.add_receiver(sock.fileno(), self.nics[ip].index)
            self._receivers = True
        deadline = self._pump_control(self.clock.mono_ns())
        control, rest = self.engine.run(control_fds, deadline)
        self._stale = True
        self._events()
        for nic, src_ip, data, _now in rest or ():  # CNPs, grants, malformed: the reference's
            super().on_datagram(self.nic_by_index[nic].ip, src_ip, data)
        return control

    def _events(self) -> None:
        events = self.engine.take_events()
        if not events:
            return
        for kind, value, now, wall in events:
            if kind == SHARE_DONE:
                message = self.slots[value]
                message.shares_left -= 1
                if message.shares_left == 0:
                    message.acked_ns = wall
                    self.sent_done += 1
            elif kind == DELIVERED:
                if value not in self.received_ids:
                    self.received_ids.add(value)
                    delivery = self._records.delivered.get(value)  # no sync: hot path
                    if delivery is not None and delivery.expected:
                        self.received_expected += 1
                    self._release_due = True
            elif kind == IDLE:
                self._on_idle(self.by_handle[value], now)
            elif kind == DRAINED:
                self._repath(self.by_handle[value])
            elif kind == ECHO:
                self._on_echo(self.by_handle[value >> 24], (value & 0xFFFFFF) * 1000, now)

    def _new_qp(self, nic: EngineNic, number: int, remote_ip: str, src_port: int, now: int,
                burst_frames: int) -> EngineQP:
        qp = EngineQP(self.engine, self.slot_of, nic, number, remote_ip, src_port, self.config,
                      now, self.rates_by_dst.get(remote_ip), burst_frames)
        self.by_handle.append(qp)
        return qp

    def pump(self) -> int | None:
        """Run due control work, then the engine (timeouts, pacing); the next deadline."""
        now, self._stale = self.clock.mono_ns(), True
        deadline = self._pump_control(now)
        return earliest(deadline, self.engine.pump(now, self.clock.wall_ns()))

    def _timers(self, now: int) -> None:
        self._next_timer = self._control_timers(now)

    def _rate_hint(self, qp: QpControl) -> None:
        """The engine finds its retransmission deadlines itself at every pump."""
