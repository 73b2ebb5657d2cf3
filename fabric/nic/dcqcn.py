"""DCQCN at the NICs (Zhu et al., SIGCOMM 2015): marking at the receiver, the rate machine
at the sender.

The switches here cannot ECN-mark (no ``red`` qdisc, PLATFORM.md), but every NIC
shares one clock, so the receiver sees each data packet's one-way delay. A full
frame's delay minus the smallest one seen on its QP is its queueing delay; at
the NIC line rate that is a queue in bytes, and the receiver marks the packet
with RED's probability: 0 below ``kmin_bytes``, rising linearly to ``pmax`` at
``kmax_bytes``, 1 above (the draw is a seeded hash, so both datapaths mark the
same packets). A marked packet makes the receiver send a CNP to the sender's QP,
at most one per QP per ``cnp_interval_ms``. (Per-packet work: fabric/nic/core.py
and the compiled engine.)

The sender's rate machine (`DcqcnRate`, per-event control plane) is the paper's:
on a CNP the target rate becomes the current one, the current rate is cut by
``alpha / 2`` and ``alpha = (1 - g) alpha + g``; every ``alpha_timer_ms`` without a
CNP, ``alpha = (1 - g) alpha``; every ``increase_timer_ms`` after a cut the rate
rises, ``fast_recovery_steps`` times by fast recovery (halfway to the target),
then by additive increase (target + ``rai_fraction`` of line rate, current
halfway to it). The byte counter is off: at emulated rates a byte counter of the
paper's 10 MB never fires within a collective, so it stays at zero and hyper
increase (which needs both counters past F) never happens, as in the paper with
a silent counter.

PLB (Qureshi et al., SIGCOMM 2022), opt-in with ``plb_rounds``: a CNP that comes
within two CNP intervals of the QP's previous one continues a congested run;
after ``plb_rounds`` of them the QP re-paths. A RoCE QP is never idle inside a
collective (a ring's next step arrives before the last ACK), so waiting for
idleness, as PLB does for TCP, never comes: the QP instead sends one more packet,
which asks for an ACK (the fence), waits until everything sent on the old
path is acknowledged (a round trip without sending: go-back-N would take a
packet overtaken on the new path for a loss and resend the window), then sends
from a new UDP source port, which ECMP hashes anew. A receiver whose NIC took
frames from another QP within two CNP intervals flags its CNPs as last-hop (an
incast: the queue is its own ToR port, which no path avoids); those cut the rate
but do not count toward a re-path. (Control plane: fabric/nic/core.py; the fence
and the flag are per-packet work, in both datapaths.)

Time constants are scaled to the emulated round-trip time, not to the link rate:
at 10 Mb/s links everything is about 4,000 times slower than the paper's 40 Gb/s,
and its 50 us CNP interval scaled by the link rate (200 ms) would let a 1 s
collective see a handful of CNPs. The defaults put the CNP interval, the alpha
timer and the increase timer at about one emulated RTT (a 9000-byte frame takes
7.2 ms per hop at 10 Mb/s) and the marking thresholds at one and three frames of
a 10-frame buffer, with ``pmax`` 0.6 (the paper's 1 % at a Kmax of 200 KB assumes
buffers that hold many round trips; a 10-frame buffer holds about three, and a
2:1 collision fills it in 72 ms: measured on the headline with PLB, 5 frames and
0.2 gave 71 %, 3 frames and 0.6 gave 76 %, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import asdict, dataclass

from fabric.nic import wire

_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=4096)
def ip_number(text: str) -> int:
    """An IPv4 address as the 32-bit number the compiled engine hashes."""
    return int(ipaddress.IPv4Address(text))


@dataclass(frozen=True)
class DcqcnParams:
    """DCQCN's knobs (see the module docstring); ``[dcqcn]`` in a spec."""

    kmin_bytes: int = 9_100
    kmax_bytes: int = 27_300
    pmax: float = 0.6
    cnp_interval_ms: float = 20.0
    g: float = 1 / 16
    alpha_timer_ms: float = 20.0
    increase_timer_ms: float = 20.0
    fast_recovery_steps: int = 5
    rai_fraction: float = 0.05
    min_rate_fraction: float = 0.01
    #: PLB: after this many congested rounds in a row, a QP re-paths once drained (0: never).
    plb_rounds: int = 0

    def to_dict(self) -> dict:
        """Plain values (the agents' ``configure.dcqcn``)."""
        return asdict(self)


def mark_probability(queue_bytes: float, params: DcqcnParams) -> float:
    """RED's marking probability for a queue of ``queue_bytes``."""
    if queue_bytes < params.kmin_bytes:
        return 0.0
    if queue_bytes >= params.kmax_bytes:
        return 1.0
    return params.pmax * (queue_bytes - params.kmin_bytes) / (params.kmax_bytes - params.kmin_bytes)


def repath_port(qp: int, salt: int, repaths: int) -> int:
    """The UDP source port of a QP's ``repaths``-th re-path (ECMP hashes it anew)."""
    return wire.udp_source_port(qp, salt + repaths * 1_000_003)


def draw(salt: int, src_ip: int, qp: int, count: int) -> float:
    """A uniform number in [0, 1) for a receiver's ``count``-th draw on (src_ip, qp):
    splitmix64 of the four, so both datapaths draw the same."""
    z = (salt * 0x9E3779B97F4A7C15 + (src_ip << 24 | qp) * 0xBF58476D1CE4E5B9 + count) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


class Marker:
    """The receiver side: per (sender, QP) the smallest delay seen, the draws made and the
    last CNP sent; `on_frame` says whether a full frame asks for a CNP now."""

    def __init__(self, params: DcqcnParams, line_mbps: float, salt: int) -> None:
        self.params = params
        self.bytes_per_ns = line_mbps / 8000.0
        self.salt = salt
        self.interval_ns = int(params.cnp_interval_ms * 1e6)
        #: (src_ip as int, qp) -> [base delay ns, draws, last CNP ns or None]
        self.state: dict[tuple[int, int], list] = {}
        #: Per receiving NIC (rail): (src_ip as int, qp) -> when its last frame arrived.
        self.arrivals: dict[int, dict[tuple[int, int], int]] = {}
        self.window_ns = 2 * self.interval_ns

    def arrived(self, rail: int, src_ip: int, qp: int, now_ns: int) -> None:
        """A data frame of (src_ip, qp) reached the NIC on ``rail``."""
        self.arrivals.setdefault(rail, {})[(src_ip, qp)] = now_ns

    def last_hop(self, rail: int, src_ip: int, qp: int, now_ns: int) -> bool:
        """Whether another QP sent to this NIC within two CNP intervals: the queue a CNP
        reports is then likely the NIC's own last hop (incast)."""
        return any(key != (src_ip, qp) and now_ns - at <= self.window_ns
                   for key, at in self.arrivals.get(rail, {}).items())

    def on_frame(self, src_ip: int, qp: int, delay_ns: int, now_ns: int) -> bool:
        """A full data frame arrived ``delay_ns`` after it was sent: True to send a CNP."""
        state = self.state.get((src_ip, qp))
        if state is None:
            state = self.state[(src_ip, qp)] = [delay_ns, 0, None]
        elif delay_ns < state[0]:
            state[0] = delay_ns
        queue = (delay_ns - state[0]) * self.bytes_per_ns
        p = self.params
        if queue < p.kmin_bytes:
            return False
        chance = 1.0 if queue >= p.kmax_bytes else mark_probability(queue, p)
        u = draw(self.salt, src_ip, qp, state[1])
        state[1] += 1
        if not u < chance:
            return False
        if state[2] is not None and now_ns - state[2] < self.interval_ns:
            return False
        state[2] = now_ns
        return True


class DcqcnRate:
    """A QP's DCQCN rate state (the interface of `fabric.nic.pacing.QpRate`)."""

    __slots__ = ("line_mbps", "target_mbps", "current_mbps", "next_recovery", "params",
                 "alpha", "next_alpha", "next_increase", "increases", "set_mbps")

    def __init__(self, line_mbps: float, params: DcqcnParams,
                 target_mbps: float | None = None) -> None:
        self.line_mbps = line_mbps
        self.params = params
        self.target_mbps = target_mbps or line_mbps
        self.current_mbps = self.target_mbps
        self.set_mbps = self.target_mbps
        self.alpha = 1.0
        self.next_alpha: int | None = None
        self.next_increase: int | None = None
        self.increases = 0
        self.next_recovery: int | None = None

    def _schedule(self) -> None:
        dues = [d for d in (self.next_alpha, self.next_increase) if d is not None]
        self.next_recovery = min(dues) if dues else None

    def set_target(self, mbps: float) -> None:
        """A rate set by the harness: apply it at once, forget the congestion state."""
        self.target_mbps = self.current_mbps = self.set_mbps = mbps
        self.next_alpha = self.next_increase = None
        self._schedule()

    def on_repath(self) -> None:
        """PLB moved the QP to a new path: the cuts the old one caused no longer apply;
        back to the rate set by the harness (or line rate), as a new QP starts."""
        self.set_target(self.set_mbps)
        self.alpha = 1.0

    def on_cnp(self, now_ns: int) -> None:
        """Cut: target = current, current x (1 - alpha / 2), alpha grows; timers restart."""
        p = self.params
        self.target_mbps = self.current_mbps
        floor = self.line_mbps * p.min_rate_fraction
        self.current_mbps = max(floor, self.current_mbps * (1 - self.alpha / 2))
        self.alpha = (1 - p.g) * self.alpha + p.g
        self.increases = 0
        self.next_alpha = now_ns + int(p.alpha_timer_ms * 1e6)
        self.next_increase = now_ns + int(p.increase_timer_ms * 1e6)
        self._schedule()

    def recover(self, now_ns: int) -> bool:
        """Run the alpha and rate-increase timers that are due; True if the rate changed."""
        if self.next_recovery is None or now_ns < self.next_recovery:
            return False
        p, before = self.params, self.current_mbps
        while self.next_alpha is not None and now_ns >= self.next_alpha:
            self.alpha *= 1 - p.g
            self.next_alpha += int(p.alpha_timer_ms * 1e6)
        while self.next_increase is not None and now_ns >= self.next_increase:
            self.increases += 1
            if self.increases > p.fast_recovery_steps:
                self.target_mbps = min(self.line_mbps,
                                       self.target_mbps + p.rai_fraction * self.line_mbps)
            self.current_mbps = min(self.line_mbps, (self.target_mbps + self.current_mbps) / 2)
            if self.current_mbps >= self.line_mbps * (1 - 1e-9):
                self.current_mbps = self.target_mbps = self.line_mbps
                self.next_increase = self.next_alpha = None  # recovered: timers stop
            else:
                self.next_increase += int(p.increase_timer_ms * 1e6)
        self._schedule()
        return self.current_mbps != before
