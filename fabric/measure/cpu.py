"""CPU samples for the fidelity verdict: the machine's busy share, each ovs-vswitchd's
share of a core, and (with pollgate) how long its main loop's turns took each second."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabric.measure.turns import Turns, read_turns


def _kernel_s() -> float:
    """CPU seconds all CPUs spent in interrupts and softirqs (packet forwarding in the kernel)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSampler:
    """Samples, once per `period_s`, the machine's CPU busy fraction, each ovs-vswitchd's
    share of a core (``ovs_pids``: name -> PID, the run's shards) and, for the instances in
    ``turn_stats`` (name -> pollgate's stats file), the turn length that the turns of 99 %
    of the period stayed under (`Turns.wall_quantile_us`)."""

    ovs_pids: dict[str, int] = field(default_factory=dict)
    period_s: float = 1.0
    machine_busy: list[float] = field(default_factory=list)
    #: Per sample, the busiest instance's share of a core (each is single-threaded).
    ovs_busy: list[float] = field(default_factory=list)
    ovs_busy_by: dict[str, list[float]] = field(default_factory=dict)
    turn_stats: dict[str, Path] = field(default_factory=dict)
    #: Per sample and instance, the p99 turn over the period's wall time, in ms.
    ovs_turn_ms_by: dict[str, list[float]] = field(default_factory=dict)
    #: Processes whose CPU the run's split reports, by group (e.g. "agents": [pids]).
    groups: dict[str, list[int]] = field(default_factory=dict)
    #: After exit: CPU seconds per group, per ovs-vswitchd, kernel, rest, and the wall time.
    split: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self.ovs_busy_by = {name: [] for name in self.ovs_pids}
        self.ovs_turn_ms_by = {name: [] for name in self.turn_stats}

    def __enter__(self) -> "CpuSampler":
        self._split0 = self._split_now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        end = self._split_now()
        self.split = {key: round(max(0.0, end[key] - self._split0[key]), 3) for key in end}
        named = sum(v for k, v in self.split.items() if k not in ("busy", "wall"))
        self.split["rest"] = round(max(0.0, self.split["busy"] - named), 3)

    def _split_now(self) -> dict[str, float]:
        """Cumulative CPU seconds of every group, each ovs-vswitchd, the kernel, all CPUs."""
        busy, _ = _cpu_times()
        now = {name: sum(process_cpu_s(pid) for pid in pids)
               for name, pids in self.groups.items()}
        now.update({f"ovs-vswitchd {name}": process_cpu_s(pid)
                    for name, pid in self.ovs_pids.items()})
        now["kernel"] = _kernel_s()
        now["busy"] = busy / os.sysconf("SC_CLK_TCK")
        now["wall"] = time.monotonic()
        return now

    def _loop(self) -> None:
        busy0, total0 = _cpu_times()
        ovs0, wall0 = self._ovs_cpu(), time.monotonic()
        turns0 = self._turns()
        while not self._stop.wait(self.period_s):
            busy1, total1 = _cpu_times()
            ovs1, wall1 = self._ovs_cpu(), time.monotonic()
            turns1 = self._turns()
            for name, now in turns1.items():
                before = turns0.get(name)
                if before is not None:
                    turns = now.since(before)
                    self.ovs_turn_ms_by[name].append(
                        turns.wall_quantile_us(0.99, (wall1 - wall0) * 1e9) / 1e3)
            turns0 = turns1
            if total1 > total0:
                self.machine_busy.append((busy1 - busy0) / (total1 - total0))
            if wall1 > wall0 and ovs1:
                shares = {name: (ovs1[name] - ovs0[name]) / (wall1 - wall0) for name in ovs1}
                for name, share in shares.items():
                    self.ovs_busy_by[name].append(share)
                self.ovs_busy.append(max(shares.values()))
            busy0, total0, ovs0, wall0 = busy1, total1, ovs1, wall1

    def _turns(self) -> dict[str, Turns]:
        found = {name: read_turns(path) for name, path in self.turn_stats.items()}
        return {name: turns for name, turns in found.items() if turns is not None}

    def _ovs_cpu(self) -> dict[str, float]:
        return {name: process_cpu_s(pid) for name, pid in self.ovs_pids.items()}
