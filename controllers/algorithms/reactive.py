"""`reactive` (DCQCN / TiTa 1.0 style baseline): congestion is seen, then senders slow down.

Paths are what ECMP would pick: a seeded hash of the flow's 5-tuple over
the equal-cost paths (pinned by exact rules so the controller knows who
crosses what). Every port-stats poll, a switch egress measured at
``hot_fraction`` (0.9) of its capacity or more that carries two or more
flows is congested: each flow crossing it gets a CNP (at most one per
``cnp_gap_s``, 50 ms). The NIC's reaction is in fabric/nic/pacing.py
(halve the rate, then recover by 5 % of line rate every 10 ms).
"""

from __future__ import annotations

import zlib
from typing import Sequence

from controllers.algorithms.flow_routing import Flow, FlowRoutingAlgorithm, Path
from controllers.core.intents import Intent
from controllers.core.paths import LinkKey
from topologies.model import Node, Topology


class ReactiveAlgorithm(FlowRoutingAlgorithm):
    """ECMP-like paths; CNPs to the flows crossing a congested port."""

    name = "reactive"

    def __init__(self, topology: Topology, seed: int = 0, hot_fraction: float = 0.9,
                 cnp_gap_s: float = 0.05) -> None:
        super().__init__(topology, seed)
        if not 0 < hot_fraction <= 1:
            raise ValueError(f"hot_fraction: must be in (0, 1], got {hot_fraction}")
        self.hot_fraction = hot_fraction
        self.cnp_gap_s = cnp_gap_s
        self.last_cnp: dict[tuple[str, int], float] = {}
        self.cnps = 0

    def choose_path(self, flow: Flow, candidates: Sequence[Path], now: float) -> Path:
        """A seeded hash of the 5-tuple picks the path, as an ECMP switch would."""
        digest = zlib.crc32(f"{flow.src_ip}|{flow.dst_ip}|{flow.src_port}|{self.seed}".encode())
        return candidates[digest % len(candidates)]

    def hot(self, measured: dict[LinkKey, float]) -> list[LinkKey]:
        """Egress links at or above the threshold that carry two or more flows."""
        return [link for link, mbps in sorted(measured.items())
                if mbps >= self.hot_fraction * self.capacity.get(link, float("inf"))
                and len(self.on_link.get(link, ())) >= 2]

    def on_load(self, node: Node, measured: dict[LinkKey, float], now: float) -> list[Intent]:
        """A CNP to every flow crossing a congested egress of this switch."""
        intents: list[Intent] = []
        for link in self.hot(measured):
            for key in sorted(self.on_link[link]):
                if now - self.last_cnp.get(key, -1e9) < self.cnp_gap_s:
                    continue
                self.last_cnp[key] = now
                self.cnps += 1
                intents.append(self.cnp(self.flows[key]))
        return intents

    def flow_done(self, done, now: float) -> list[Intent]:
        """Forget the flow (and when it was last notified)."""
        self.last_cnp.pop((done.src_ip, done.qp), None)
        return super().flow_done(done, now)
