"""CPU samples for the fidelity verdict: the machine's busy share and ovs-vswitchd's share of a core."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


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
