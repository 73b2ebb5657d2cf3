"""Fidelity: was the emulator fast enough for its numbers to mean anything?

A run is *trusted* only when
- the machine was not CPU-bound: total CPU busy stayed under
  `CPU_BUSY_LIMIT` (saturation is 100 %; the direct checks below catch a
  machine that fell behind, so a second at 92 % is no verdict by itself) and the OVS forwarding thread (PLATFORM.md: the whole
  userspace datapath runs on about one core) under `OVS_BUSY_LIMIT` of a core,
  in all but a few per-second samples. The userspace datapath's cost is per
  wake-up (it polls every port each time), so 80-90 % of a core at light load
  is normal and it batches more as load grows; only a pegged thread means it
  fell behind. What it then drops in its socket buffers shows up as
  unexplained loss in the conservation check (analysis), which also makes a
  run untrusted; and
- every link ran at its configured rate when it had work: over each
  telemetry interval in which a switch egress queue stayed backlogged, it
  must have sent at least (1 - `RATE_TOLERANCE`) x its capacity.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CPU_BUSY_LIMIT = 0.95
OVS_BUSY_LIMIT = 0.97
RATE_TOLERANCE = 0.05
#: Fraction of 1-s samples allowed over the limits (start-up blips).
BUSY_SAMPLE_ALLOWANCE = 0.10


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def ovs_vswitchd_pid() -> int | None:
    """PID of the running ovs-vswitchd (from its pid file)."""
    try:
        return int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class CpuSampler:
    """Samples, once per `period_s`, the machine's CPU busy fraction and OVS's share of a core."""

    period_s: float = 1.0
    machine_busy: list[float] = field(default_factory=list)
    ovs_busy: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._ovs_pid = ovs_vswitchd_pid()

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        busy0, total0 = _cpu_times()
        ovs0, wall0 = self._ovs_cpu(), time.monotonic()
        while not self._stop.wait(self.period_s):
            busy1, total1 = _cpu_times()
            ovs1, wall1 = self._ovs_cpu(), time.monotonic()
            if total1 > total0:
                self.machine_busy.append((busy1 - busy0) / (total1 - total0))
            if wall1 > wall0:
                self.ovs_busy.append((ovs1 - ovs0) / (wall1 - wall0))
            busy0, total0, ovs0, wall0 = busy1, total1, ovs1, wall1

    def _ovs_cpu(self) -> float:
        return _process_cpu_s(self._ovs_pid) if self._ovs_pid else 0.0


@dataclass(frozen=True)
class PortInterval:
    """One telemetry interval of one switch egress queue."""

    port: str
    seconds: float
    sent_bytes: int
    capacity_mbps: float
    backlogged: bool


def _backlogged_stretches(intervals: list[PortInterval]) -> list[tuple[str, float, int, float]]:
    """(port, seconds, bytes, capacity) of each run of consecutive backlogged intervals."""
    stretches = []
    current: list[PortInterval] = []
    for interval in intervals + [PortInterval("", 0.0, 0, 1.0, False)]:
        if interval.backlogged and (not current or current[-1].port == interval.port):
            current.append(interval)
            continue
        if current:
            stretches.append((current[0].port, sum(i.seconds for i in current),
                              sum(i.sent_bytes for i in current), current[0].capacity_mbps))
        current = [interval] if interval.backlogged else []
    return stretches


def rate_shortfalls(intervals: list[PortInterval], min_seconds: float = 0.5) -> list[str]:
    """Ports that stayed backlogged for ``min_seconds`` or more yet sent under
    (1 - RATE_TOLERANCE) x capacity (intervals in time order per port).

    Short stretches are skipped: a 0.1 s sample holds ~14 jumbo frames at
    10 Mb/s, so one frame more or less is already a 7 % error.
    """
    worst: dict[str, float] = {}
    for port, seconds, sent, capacity in _backlogged_stretches(intervals):
        if seconds < min_seconds:
            continue
        ratio = 8 * sent / seconds / 1e6 / capacity
        if ratio < 1 - RATE_TOLERANCE:
            worst[port] = min(ratio, worst.get(port, 1.0))
    return [f"{port} sent {100 * ratio:.0f} % of its rate while backlogged"
            for port, ratio in sorted(worst.items(), key=lambda item: item[1])]


def verdict(machine_busy: list[float], ovs_busy: list[float],
            shortfalls: list[str]) -> tuple[bool, list[str]]:
    """(trusted, reasons) from CPU samples and link-rate shortfalls."""
    reasons = []
    allowance = max(1, int(BUSY_SAMPLE_ALLOWANCE * max(len(machine_busy), 1)))
    hot = [b for b in machine_busy if b > CPU_BUSY_LIMIT]
    if len(hot) > allowance:
        reasons.append(f"CPU-bound: machine over {CPU_BUSY_LIMIT:.0%} busy in {len(hot)} of "
                       f"{len(machine_busy)} seconds (max {max(hot):.0%})")
    hot_ovs = [b for b in ovs_busy if b > OVS_BUSY_LIMIT]
    if len(hot_ovs) > allowance:
        reasons.append(f"datapath-bound: ovs-vswitchd over {OVS_BUSY_LIMIT:.0%} of a core in "
                       f"{len(hot_ovs)} of {len(ovs_busy)} seconds (max {max(hot_ovs):.0%})")
    if shortfalls:
        more = f" (and {len(shortfalls) - 3} more)" if len(shortfalls) > 3 else ""
        reasons.append("link rates off by more than 5 %: " + "; ".join(shortfalls[:3]) + more)
    return not reasons, reasons
