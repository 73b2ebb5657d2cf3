"""Port telemetry: every switch egress queue's counters, sampled at >= 10 Hz.

One rtnetlink qdisc dump per namespace and round, over a socket opened once
(`QueueReader`), reads every root htb qdisc of that namespace at
once (bytes and packets sent, drops, backlog): no process is forked per
sample (the `tc -s -j` reader it replaced forked one; both are measured in
benchmarks/telemetry.py).

Between two rounds, a queue found backlogged is read again (one get request)
when it could first have drained, until a read finds it empty: the link check
judges a queue only while it stays backlogged, and at 10 Hz a queue that
drained and refilled between two rounds looked backlogged throughout (a jumbo
frame lasts 29 ms at 2.5 Mb/s; RESULTS.md, "Telemetry focus reads").
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field

from fabric.measure import rtnetlink
from fabric.net.netns import in_netns

#: Seed of the sampling jitter (reproducible sample times relative to the start).
SAMPLING_SEED = 7
#: At most this many queues are read at a time between rounds (earliest due first), at
#: most focus_hz times a second: at ~20 us of CPU a read, 32 at 50 Hz cost ~3 % of a core.
FOCUS_MAX = 32


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


def read_queues_tc(netns: str | None = None, devices: set[str] | None = None
                   ) -> dict[str, QueueSample]:
    """The same snapshot as `QueueReader.read`, from a forked `tc -s -j qdisc show`."""
    argv = ["tc", *(["-n", netns] if netns else []), "-s", "-j", "qdisc", "show"]
    before = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_qdiscs(out, (before + time.time()) / 2, devices)


class QueueReader:
    """Root htb qdisc counters of one namespace over one rtnetlink socket, kept open.

    The dump is decoded with `struct` (fabric.measure.rtnetlink): pyroute2 decoded
    the same dump at about 75 us of CPU per message, slower than forking `tc`
    (benchmarks/telemetry.py), and its sockets belong to the thread that made them."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        with in_netns(netns):
            self._sock = rtnetlink.Socket()
        self._names: dict[int, str] = {}
        self._indexes: dict[str, int] = {}

    def close(self) -> None:
        """Close the netlink socket."""
        self._sock.close()

    def __enter__(self) -> "QueueReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh_names(self) -> None:
        self._names = self._sock.link_names()
        self._indexes = {name: index for index, name in self._names.items()}

    def _name(self, index: int) -> str | None:
        if index not in self._names:
            self._refresh_names()
        return self._names.get(index)

    def read_devices(self, devices: list[str]) -> dict[str, QueueSample]:
        """A snapshot of only ``devices`` (one get request each: `rtnetlink.Socket.root_qdiscs_of`)."""
        if any(dev not in self._indexes for dev in devices):
            self._refresh_names()
        wanted = [self._indexes[dev] for dev in devices if dev in self._indexes]
        before = time.time()
        qdiscs = self._sock.root_qdiscs_of(wanted, "htb")
        now = (before + time.time()) / 2
        return {self._names[index]: QueueSample(now, *stats) for index, stats in qdiscs.items()}

    def read(self, devices: set[str] | None = None) -> dict[str, QueueSample]:
        """One snapshot of the namespace's shaped queues (only ``devices`` if given)."""
        before = time.time()
        qdiscs = self._sock.root_qdiscs("htb")
        now = (before + time.time()) / 2
        samples = {}
        for index, stats in qdiscs.items():
            dev = self._name(index)
            if dev is None or (devices is not None and dev not in devices):
                continue
            samples[dev] = QueueSample(now, *stats)
        return samples


def read_queues(netns: str | None = None, devices: set[str] | None = None) -> dict[str, QueueSample]:
    """One snapshot of every shaped queue in a namespace (root by default)."""
    with QueueReader(netns) as reader:
        return reader.read(devices)


@dataclass
class PortSampler:
    """Background sampler of switch egress queues; `series` maps device -> samples.

    ``devices`` maps each namespace (an OVS shard's, or None for the root) to the
    devices sampled there; one netlink dump per namespace per round, at ``rate_hz``.

    Between rounds a backlogged queue is read again when it could first have
    drained: its backlog's time at its rate (``rates_mbps``), at least
    1/``focus_hz`` after the read before (0 or <= rate_hz: no focus reads), until a
    read finds it empty; at most ``focus_max`` reads at a time, earliest due first."""

    devices: dict[str | None, set[str]]
    rate_hz: float = 10.0
    focus_hz: float = 0.0
    rates_mbps: dict[str, float] = field(default_factory=dict)
    focus_max: int = FOCUS_MAX
    series: dict[str, list[QueueSample]] = field(default_factory=dict)
    missed: int = 0
    #: Reads of backlogged queues between rounds, and why focusing stopped (if it did).
    focus_reads: int = 0
    focus_error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="port-sampler", daemon=True)
        self._readers = {ns: QueueReader(ns) for ns in self.devices}
        self._focus_s = 1.0 / self.focus_hz if self.focus_hz > self.rate_hz else None
        self._rng = random.Random(SAMPLING_SEED)
        #: (namespace, device) -> when to read it again (monotonic s).
        self._due: dict[tuple[str | None, str], float] = {}
        self._round_times: list[float] = []
        self._round_backlogs: list[int] = []

    def __enter__(self) -> "PortSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling, take one last snapshot and close the sockets."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            self._record()
            for reader in self._readers.values():
                reader.close()

    def _loop(self) -> None:
        # Intervals drawn uniformly from 0.5..1.5 periods (mean: the period). Evenly
        # spaced samples phase-lock with paced NICs: a port fed by two flows paced at
        # 6 frames per 100 ms showed one frame queued in every 100-ms sample for
        # seconds while it sent 87 % of its rate, which looked like a link falling
        # short. Jittered sampling sees the time average (PASTA).
        period = 1.0 / self.rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_tick:
                self._record()
                next_tick += period * self._rng.uniform(0.5, 1.5)
                if next_tick < time.monotonic():  # fell behind: count it, do not burst
                    self.missed += 1
                    next_tick = time.monotonic()
            else:
                self._record_focus()
            wake = min([next_tick, *self._due.values()])
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _again_at(self, now: float, dev: str, sample: QueueSample) -> float:
        """When a queue read now with this backlog could first have drained (jittered
        up to half as late again), never sooner than one focus period."""
        mbps = self.rates_mbps.get(dev)
        drain = sample.backlog_bytes * 8 / (mbps * 1e6) if mbps else 0.0
        return now + max(self._focus_s, drain) * self._rng.uniform(1.0, 1.5)

    def _record(self) -> None:
        """One round: every queue of every namespace; the backlogged ones fall due."""
        total = 0
        due: dict[tuple[str | None, str], float] = {}
        for ns, reader in self._readers.items():
            for dev, sample in reader.read(self.devices[ns]).items():
                self.series.setdefault(dev, []).append(sample)
                total += sample.backlog_bytes
                if sample.backlog_bytes and self._focus_s and self.focus_error is None:
                    due[(ns, dev)] = self._again_at(time.monotonic(), dev, sample)
        self._round_times.append(time.monotonic())
        self._round_backlogs.append(total)
        self._due = due

    def _record_focus(self) -> None:
        """Read the queues that are due again (earliest first); one found empty is done."""
        now = time.monotonic()
        ready = sorted(((when, key) for key, when in self._due.items() if when <= now),
                       key=lambda item: item[0])
        by_ns: dict[str | None, list[str]] = {}
        for _, (ns, dev) in ready[:self.focus_max]:
            by_ns.setdefault(ns, []).append(dev)
        for ns, devices in by_ns.items():
            try:
                samples = self._readers[ns].read_devices(devices)
            except OSError as exc:   # e.g. a device gone: rounds go on, focusing stops
                self.focus_error = f"{ns or 'root'}: {exc}"
                self._due = {}
                return
            self.focus_reads += len(samples)
            now = time.monotonic()
            for dev in devices:
                sample = samples.get(dev)
                if sample is not None:
                    self.series.setdefault(dev, []).append(sample)
                if sample is None or not sample.backlog_bytes:
                    del self._due[(ns, dev)]
                else:
                    self._due[(ns, dev)] = self._again_at(now, dev, sample)
        for _, key in ready[self.focus_max:]:   # over the cap: wait one focus period
            self._due[key] = max(self._due[key], now + self._focus_s)

    def peak_total_backlog(self) -> int:
        """Largest sum of all sampled queues' backlogs seen in one telemetry round."""
        return max(self._round_backlogs, default=0)

    def achieved_rate_hz(self) -> float:
        """Rounds (every queue read) per second actually taken."""
        times = self._round_times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def delta(series: list[QueueSample]) -> QueueSample:
    """Counter change from the first to the last sample (backlog: the maximum seen)."""
    first, last = series[0], series[-1]
    return QueueSample(last.time - first.time, last.sent_bytes - first.sent_bytes,
                       last.sent_packets - first.sent_packets, last.drops - first.drops,
                       max(s.backlog_bytes for s in series),
                       max(s.backlog_packets for s in series))
