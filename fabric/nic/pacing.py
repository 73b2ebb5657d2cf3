"""Pacing of the emulated NIC: token buckets (time injected) and the per-QP rate reaction.

Rates are in Mb/s, sizes in wire bytes (IP packet + 14-byte Ethernet header,
what the host's htb counts), times in monotonic nanoseconds.

CNP reaction (``QpRate``, a simplified DCQCN; a later issue refines it):
- on a CNP the QP's current rate is multiplied by ``CNP_DECREASE`` (0.5),
  never below ``CNP_FLOOR_FRACTION`` (1 %) of the line rate;
- every ``RECOVERY_PERIOD_NS`` (10 ms) after the last cut it climbs back by
  ``RECOVERY_STEP_FRACTION`` (5 %) of the line rate, up to its target (the
  rate set by ``set_rate`` / a RATE_GRANT, line rate by default).
"""

from __future__ import annotations

from fabric.nic.wire import ETH_HEADER_LEN

ETHERNET_HEADER = ETH_HEADER_LEN  # 14
CNP_DECREASE = 0.5
CNP_FLOOR_FRACTION = 0.01
RECOVERY_PERIOD_NS = 10_000_000
RECOVERY_STEP_FRACTION = 0.05


def wire_bytes(ip_packet_bytes: int) -> int:
    """Bytes an IP packet costs on the emulated link (htb counts the Ethernet header)."""
    return ip_packet_bytes + ETHERNET_HEADER


def bytes_per_ns(mbps: float) -> float:
    """A rate in Mb/s as bytes per nanosecond."""
    return mbps / 8000.0


class TokenBucket:
    """Token bucket in bytes; ``ready_at`` says when a packet of a size may go."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, mbps: float, burst_bytes: int, now_ns: int) -> None:
        if mbps <= 0:
            raise ValueError(f"rate: must be > 0 Mb/s, got {mbps}")
        if burst_bytes <= 0:
            raise ValueError(f"burst: must be > 0 bytes, got {burst_bytes}")
        self.rate = bytes_per_ns(mbps)
        self.burst = float(burst_bytes)
        self.tokens = float(burst_bytes)
        self.last = now_ns

    @property
    def mbps(self) -> float:
        """The bucket's fill rate in Mb/s."""
        return self.rate * 8000.0

    def refill(self, now_ns: int) -> float:
        """Add the tokens earned since the last refill (capped at the burst); returns the
        tokens the cap threw away."""
        overflow = 0.0
        if now_ns > self.last:
            earned = self.tokens + (now_ns - self.last) * self.rate
            overflow = max(0.0, earned - self.burst)
            self.tokens = min(self.burst, earned)
            self.last = now_ns
        return overflow

    def ready_at(self, size: int, now_ns: int) -> int:
        """Earliest time (>= now) at which ``size`` bytes may be sent."""
        self.refill(now_ns)
        if self.tokens >= size - 1e-6:  # float slack: never wait a nanosecond
            return now_ns
        return now_ns + int((size - self.tokens) / self.rate) + 1

    def consume(self, size: int) -> None:
        """Spend tokens for a sent packet (may go negative for unpaced ACKs)."""
        self.tokens -= size

    def set_rate(self, mbps: float, now_ns: int) -> None:
        """Change the fill rate from now on (tokens earned so far are kept)."""
        if mbps <= 0:
            raise ValueError(f"rate: must be > 0 Mb/s, got {mbps}")
        self.refill(now_ns)
        self.rate = bytes_per_ns(mbps)


class QpRate:
    """A QP's sending rate: target (granted / set) and current (after CNP cuts)."""

    __slots__ = ("line_mbps", "target_mbps", "current_mbps", "next_recovery")

    def __init__(self, line_mbps: float, target_mbps: float | None = None) -> None:
        self.line_mbps = line_mbps
        self.target_mbps = target_mbps or line_mbps
        self.current_mbps = self.target_mbps
        self.next_recovery: int | None = None

    def set_target(self, mbps: float) -> None:
        """A rate set by the harness or granted by the controller: apply it at once."""
        self.target_mbps = mbps
        self.current_mbps = mbps
        self.next_recovery = None

    def on_cnp(self, now_ns: int) -> None:
        """Multiplicative decrease after a congestion notification."""
        floor = self.line_mbps * CNP_FLOOR_FRACTION
        self.current_mbps = max(floor, min(self.current_mbps * CNP_DECREASE, self.target_mbps))
        self.next_recovery = now_ns + RECOVERY_PERIOD_NS

    def recover(self, now_ns: int) -> bool:
        """Additive increase for every recovery period passed; True if the rate changed."""
        if self.next_recovery is None or now_ns < self.next_recovery:
            return False
        step = self.line_mbps * RECOVERY_STEP_FRACTION
        while self.next_recovery is not None and now_ns >= self.next_recovery:
            self.current_mbps = min(self.target_mbps, self.current_mbps + step)
            if self.current_mbps >= self.target_mbps:
                self.next_recovery = None
            else:
                self.next_recovery += RECOVERY_PERIOD_NS
        return True
