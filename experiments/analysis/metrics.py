"""Metrics of a run as pure functions on plain records (see DESIGN.md, "Metrics").

Units: sizes in bytes, times in seconds, bandwidths in bytes/s (as nccl-tests
reports, GB/s = 1e9 bytes/s), link and NIC rates in Mbit/s (as topologies).

Methods, so results can be checked by hand:
- Percentiles use numpy's default "linear" method (Hyndman & Fan type 7,
  like Excel's PERCENTILE.INC): interpolate between the two nearest ranks.
- Utilization of an interval = bytes counted in it x 8 / (capacity x length).
- Imbalance across parallel links: ``max_over_mean`` = max / mean - 1 (0 when
  perfectly even; 1 when the busiest link carries twice the average) and
  ``cov`` = population standard deviation / mean. Both are 0 for idle links.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.workload.collectives import busbw_factor


def algbw(size_bytes: float, seconds: float) -> float:
    """nccl-tests algorithm bandwidth S / t in bytes/s."""
    if seconds <= 0:
        raise ValueError(f"time: must be > 0 seconds, got {seconds}")
    return size_bytes / seconds


def busbw(size_bytes: float, seconds: float, kind: str, ranks: int) -> float:
    """nccl-tests bus bandwidth: algbw x the collective's factor, in bytes/s."""
    return algbw(size_bytes, seconds) * busbw_factor(kind, ranks)


def wire_ceiling(mtu: int) -> float:
    """Highest efficiency a NIC can reach: message bytes / link bytes of a full data frame
    (the RoCEv2 headers of fabric.nic.wire and the Ethernet header htb counts)."""
    from fabric.nic import wire
    from fabric.nic.pacing import wire_bytes
    return wire.max_padding(mtu) / wire_bytes(mtu)


def weighted_efficiency(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Efficiency over jobs weighted by the bytes each row's messages carried (rows without
    an efficiency are left out; None when none has one)."""
    pairs = [(row["efficiency"], row.get("bytes", 1)) for row in rows
             if row.get("efficiency") is not None]
    total = sum(weight for _, weight in pairs)
    return sum(e * weight for e, weight in pairs) / total if total else None


def efficiency(busbw_bytes_per_s: float, nic_mbps: float, rails: int = 1) -> float:
    """busbw / line rate; a rank driving ``rails`` NICs has rails x NIC rate of line."""
    if nic_mbps <= 0 or rails < 1:
        raise ValueError(f"line rate: need nic_mbps > 0 and rails >= 1, got {nic_mbps}, {rails}")
    return busbw_bytes_per_s * 8 / (nic_mbps * 1e6 * rails)


@dataclass(frozen=True)
class Percentiles:
    """p50 / p99 / p999 (plus count, mean, max) of a sample."""

    count: int
    mean: float
    p50: float
    p99: float
    p999: float
    max: float


def percentiles(values: Iterable[float]) -> Percentiles:
    """Tail summary of ``values`` (linear interpolation); ValueError when empty."""
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        raise ValueError("percentiles: no values")
    p50, p99, p999 = np.percentile(data, [50, 99, 99.9])
    return Percentiles(int(data.size), float(data.mean()), float(p50), float(p99), float(p999),
                       float(data.max()))


@dataclass(frozen=True)
class Loss:
    """Switch drops and NIC retransmissions against packets sent."""

    sent: int
    dropped: int
    retransmitted: int

    @property
    def loss_rate(self) -> float:
        """Packets dropped in switch queues / packets sent (0 when nothing was sent)."""
        return self.dropped / self.sent if self.sent else 0.0

    @property
    def retransmit_rate(self) -> float:
        """Retransmitted packets / packets sent (0 when nothing was sent)."""
        return self.retransmitted / self.sent if self.sent else 0.0


def loss(sent: int, switch_drops: Iterable[int], retransmitted: Iterable[int] = ()) -> Loss:
    """Loss over a run from per-port drop counts and per-QP retransmit counts."""
    return Loss(sent, sum(switch_drops), sum(retransmitted))


@dataclass(frozen=True)
class CounterSample:
    """A cumulative byte counter of one link direction read at ``time_s``."""

    link: str
    time_s: float
    bytes: int


@dataclass(frozen=True)
class UtilPoint:
    """Utilization of one link over [start_s, end_s)."""

    start_s: float
    end_s: float
    utilization: float


def utilization_series(samples: Sequence[CounterSample], capacity_mbps: float) -> list[UtilPoint]:
    """Per-interval utilization of one link from its cumulative counter samples."""
    if capacity_mbps <= 0:
        raise ValueError(f"capacity_mbps: must be > 0, got {capacity_mbps}")
    ordered = sorted(samples, key=lambda s: s.time_s)
    points = []
    for before, after in zip(ordered, ordered[1:]):
        length = after.time_s - before.time_s
        if length <= 0:
            raise ValueError(f"samples: two samples of {after.link!r} at t={after.time_s}")
        delta = after.bytes - before.bytes
        if delta < 0:
            raise ValueError(f"samples: counter of {after.link!r} went backwards at "
                             f"t={after.time_s} ({before.bytes} -> {after.bytes})")
        points.append(UtilPoint(before.time_s, after.time_s,
                                delta * 8 / (capacity_mbps * 1e6 * length)))
    return points


def link_utilization(samples: Iterable[CounterSample],
                     capacity_mbps: Mapping[str, float]) -> dict[str, list[UtilPoint]]:
    """Utilization series of every sampled link; ValueError if a link has no capacity."""
    by_link: dict[str, list[CounterSample]] = defaultdict(list)
    for sample in samples:
        by_link[sample.link].append(sample)
    missing = sorted(set(by_link) - set(capacity_mbps))
    if missing:
        raise ValueError(f"capacity_mbps: no capacity for link {missing[0]!r}")
    return {link: utilization_series(points, capacity_mbps[link])
            for link, points in sorted(by_link.items())}


def mean_utilization(points: Sequence[UtilPoint]) -> float:
    """Time-weighted mean utilization of a series (0 for an empty one)."""
    total = sum(p.end_s - p.start_s for p in points)
    if total <= 0:
        return 0.0
    return sum(p.utilization * (p.end_s - p.start_s) for p in points) / total


@dataclass(frozen=True)
class Imbalance:
    """Spread of load across parallel links (0 = perfectly even)."""

    max_over_mean: float
    cov: float


def imbalance(loads: Sequence[float]) -> Imbalance:
    """max/mean - 1 and coefficient of variation of per-link loads."""
    data = np.asarray(loads, dtype=float)
    if data.size == 0:
        raise ValueError("imbalance: no links")
    mean = float(data.mean())
    if mean == 0:
        return Imbalance(0.0, 0.0)
    return Imbalance(float(data.max()) / mean - 1, float(data.std()) / mean)


@dataclass(frozen=True)
class TierSummary:
    """Utilization of one tier's links: over all intervals, and spread of link means."""

    links: int
    mean: float
    p99: float
    max: float
    imbalance: Imbalance


def tier_summaries(series: Mapping[str, Sequence[UtilPoint]],
                   tier_of: Mapping[str, str]) -> dict[str, TierSummary]:
    """Per tier: mean / p99 / max of interval utilizations, imbalance of per-link means."""
    by_tier: dict[str, list[str]] = defaultdict(list)
    for link in series:
        if link not in tier_of:
            raise ValueError(f"tier_of: no tier for link {link!r}")
        by_tier[tier_of[link]].append(link)
    result = {}
    for tier, links in sorted(by_tier.items()):
        values = [p.utilization for link in links for p in series[link]]
        tail = percentiles(values) if values else Percentiles(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        result[tier] = TierSummary(len(links), tail.mean, tail.p99, tail.max,
                                   imbalance([mean_utilization(series[link]) for link in links]))
    return result


@dataclass(frozen=True)
class MessageRecord:
    """One completed message: its iteration and when it started and finished."""

    iteration: int
    start_s: float
    end_s: float
    size: int = 0


def cct_per_iteration(messages: Iterable[MessageRecord]) -> dict[int, float]:
    """Collective completion time per iteration: last end - first start of its messages."""
    spans: dict[int, tuple[float, float]] = {}
    for m in messages:
        if m.end_s < m.start_s:
            raise ValueError(f"messages: iteration {m.iteration} ends before it starts")
        start, end = spans.get(m.iteration, (m.start_s, m.end_s))
        spans[m.iteration] = (min(start, m.start_s), max(end, m.end_s))
    return {it: end - start for it, (start, end) in sorted(spans.items())}
