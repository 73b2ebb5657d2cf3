"""Swift at the NICs (Kumar et al., SIGCOMM 2020): delay-based congestion control.

Every NIC shares one clock, so the receiver knows each data packet's one-way
delay exactly; it echoes the delay of the full frame that asked for an ACK in
the ACK itself (the AETH's MSN field, in microseconds; 0 = no sample: a NAK, or a
short last frame, whose delay says less about the queues). The sender keeps the
smallest delay seen on the QP as its path's base, the delay of an empty path.

Swift's target delay grows with the path's hop count (each switch may add
queueing); real NICs read it from the IP TTL, here the harness tells each
message's NIC how many switches its path crosses (topologies/hops.py: 1 under
one ToR, 3 across a two-tier fabric's spines, 5 across a three-tier one). The
target is ``base + hops x hop_target_frames`` frame times at the line rate.
(The base is near zero here: an idle shaped link passes a frame at once.) Per echoed delay (the
sender's rate machine, `SwiftRate`, the per-event control plane):
- below the target: additive increase, ``ai_fraction`` of the line rate per
  round trip (about the echoed delay: ACKs are small), spread over its ACKs;
- at or above it: multiplicative decrease by ``beta x (delay - target) / delay``,
  at most ``max_mdf``, at most once per round trip (the paper's rule).
Swift's window becomes a rate here (the NIC paces; its go-back-N window caps
what is in flight), never above the rate the harness set (line rate by default).
Delay samples come with ACKs, so Swift's NICs ACK every ``ack_every`` packets (2;
the transport's default 8 left a 2:1 collision unanswered: 19 % against 41 % on the
headline, benchmarks/RESULTS.md). `swift` runs on ECMP's hashed paths; ``plb_rounds`` re-paths a QP after that
many decreases in a row, each within two round trips of the last, as DCQCN's
PLB does (fabric/nic/dcqcn.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: The largest delay an ACK can echo (24 bits of microseconds: 16.7 s).
MAX_ECHO_US = (1 << 24) - 1


@dataclass(frozen=True)
class SwiftParams:
    """Swift's knobs (see the module docstring); ``[swift]`` in a spec."""

    hop_target_frames: float = 0.5
    ai_fraction: float = 0.05
    beta: float = 0.8
    max_mdf: float = 0.5
    min_rate_fraction: float = 0.01
    #: Swift needs a delay sample every packet or two: its receivers ACK at least this often
    #: (the transport's ``ack_every`` if smaller).
    ack_every: int = 2
    #: PLB: after this many decreases in a row, a QP re-paths once drained (0: never).
    plb_rounds: int = 0

    def to_dict(self) -> dict:
        """Plain values (the agents' ``configure.swift``)."""
        return asdict(self)


def echo_us(delay_ns: int) -> int:
    """The MSN value an ACK carries for a one-way delay (1 us at least: 0 means none)."""
    return min(MAX_ECHO_US, max(1, delay_ns // 1000))


class SwiftRate:
    """A QP's Swift rate state (the interface of `fabric.nic.pacing.QpRate`)."""

    __slots__ = ("line_mbps", "target_mbps", "current_mbps", "next_recovery", "params",
                 "set_mbps", "frame_ns", "base_ns", "last_ns", "last_decrease_ns", "hops")

    def __init__(self, line_mbps: float, params: SwiftParams, frame_bytes: int,
                 target_mbps: float | None = None) -> None:
        self.line_mbps = line_mbps
        self.params = params
        self.set_mbps = self.target_mbps = self.current_mbps = target_mbps or line_mbps
        self.next_recovery: int | None = None  # no timers: every change comes with an ACK
        self.frame_ns = frame_bytes * 8_000 / line_mbps
        self.base_ns: int | None = None
        self.last_ns: int | None = None
        self.last_decrease_ns: int | None = None
        #: Switches on the QP's path (the harness knows the fabric; real NICs read the TTL).
        self.hops = 1

    def set_target(self, mbps: float) -> None:
        """A rate set by the harness: the ceiling, applied at once."""
        self.set_mbps = self.target_mbps = self.current_mbps = mbps

    def on_cnp(self, now_ns: int) -> None:
        """Swift does not use CNPs."""

    def recover(self, now_ns: int) -> bool:
        """No timers: nothing to do."""
        return False

    def on_repath(self) -> None:
        """PLB moved the QP: the old path's base and decreases no longer apply."""
        self.set_target(self.set_mbps)
        self.base_ns = self.last_decrease_ns = None

    def target_ns(self) -> float:
        """The target one-way delay: the base plus ``hop_target_frames`` per switch."""
        return self.base_ns + self.hops * self.params.hop_target_frames * self.frame_ns

    def on_delay(self, now_ns: int, delay_ns: int) -> tuple[bool, bool]:
        """An ACK echoed ``delay_ns``: (the rate changed, it was a decrease)."""
        if self.base_ns is None or delay_ns < self.base_ns:
            self.base_ns = delay_ns
        p, before = self.params, self.current_mbps
        # The round trip now: the forward delay, queues included; an ACK's way back is
        # a few small frames, negligible beside a data frame's serialization per hop.
        rtt_ns = delay_ns
        since = rtt_ns if self.last_ns is None else now_ns - self.last_ns
        self.last_ns = now_ns
        target = self.target_ns()
        decreased = False
        if delay_ns < target:
            step = p.ai_fraction * self.line_mbps * min(1.0, since / rtt_ns)
            self.current_mbps = min(self.set_mbps, self.current_mbps + step)
        elif self.last_decrease_ns is None or now_ns - self.last_decrease_ns >= rtt_ns:
            cut = max(1 - p.beta * (delay_ns - target) / delay_ns, 1 - p.max_mdf)
            floor = self.line_mbps * p.min_rate_fraction
            self.current_mbps = max(floor, self.current_mbps * cut)
            self.last_decrease_ns = now_ns
            decreased = True
        self.target_mbps = self.current_mbps
        return self.current_mbps != before, decreased
