"""Port telemetry: every switch egress queue's counters, sampled at >= 10 Hz.

One `tc -s -j qdisc show` call per sample reads every root-namespace qdisc
at once (bytes and packets sent, drops, backlog), which costs a few
milliseconds even for hundreds of ports.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class QueueSample:
    """Counters of one egress queue at one instant (cumulative since creation)."""

    time: float
    sent_bytes: int
    sent_packets: int
    drops: int
    backlog_bytes: int
    backlog_packets: int


def parse_qdiscs(text: str, now: float, devices: set[str] | None = None) -> dict[str, QueueSample]:
    """Root htb qdisc stats from `tc -s -j qdisc show` output, by device."""
    samples = {}
    for qdisc in json.loads(text or "[]"):
        dev = qdisc.get("dev", "")
        if not qdisc.get("root") or qdisc.get("kind") != "htb":
            continue
        if devices is not None and dev not in devices:
            continue
        samples[dev] = QueueSample(now, qdisc.get("bytes", 0), qdisc.get("packets", 0),
                                   qdisc.get("drops", 0), qdisc.get("backlog", 0),
                                   qdisc.get("qlen", 0))
    return samples


def read_queues(netns: str | None = None, devices: set[str] | None = None) -> dict[str, QueueSample]:
    """One snapshot of every shaped queue in a namespace (root by default)."""
    argv = ["tc", *(["-n", netns] if netns else []), "-s", "-j", "qdisc", "show"]
    before = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_qdiscs(out, (before + time.time()) / 2, devices)


@dataclass
class PortSampler:
    """Background sampler of switch egress queues; `series` maps device -> samples."""

    devices: set[str]
    rate_hz: float = 10.0
    series: dict[str, list[QueueSample]] = field(default_factory=dict)
    missed: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="port-sampler", daemon=True)

    def __enter__(self) -> "PortSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling and take one last snapshot."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._record()

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._record()
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: count it, do not burst
                self.missed += 1
                next_tick = time.monotonic()
            else:
                self._stop.wait(delay)

    def _record(self) -> None:
        for dev, sample in read_queues(None, self.devices).items():
            self.series.setdefault(dev, []).append(sample)

    def peak_total_backlog(self) -> int:
        """Largest sum of all sampled queues' backlogs seen in one telemetry round."""
        rounds: dict[int, int] = {}
        for series in self.series.values():
            for index, sample in enumerate(series):
                rounds[index] = rounds.get(index, 0) + sample.backlog_bytes
        return max(rounds.values(), default=0)

    def achieved_rate_hz(self) -> float:
        """Samples per second actually taken (median over devices)."""
        counts = sorted(
            (len(s) - 1) / (s[-1].time - s[0].time)
            for s in self.series.values() if len(s) > 1 and s[-1].time > s[0].time)
        return counts[len(counts) // 2] if counts else 0.0


def delta(series: list[QueueSample]) -> QueueSample:
    """Counter change from the first to the last sample (backlog: the maximum seen)."""
    first, last = series[0], series[-1]
    return QueueSample(last.time - first.time, last.sent_bytes - first.sent_bytes,
                       last.sent_packets - first.sent_packets, last.drops - first.drops,
                       max(s.backlog_bytes for s in series),
                       max(s.backlog_packets for s in series))
