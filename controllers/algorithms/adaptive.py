"""`adaptive`: load-aware path choice with a global view, and rebalancing with hysteresis.

Flows announced together are placed jointly, largest expected rate first
(`controllers.algorithms.flow_routing`); each goes on the equal-cost path
whose busiest link would be least loaded with it, where a link's load is the
larger of what the flows placed on it are expected to send (their NICs' line
rate shared with their other flows) and what port statistics last measured
(traffic nobody announced counts too). Ties go to the lower total load, then
to the first path in sorted order. Every poll, a fabric link (not a NIC's own
link: no path choice relieves that) measured at ``hot_fraction`` of its
capacity or more that carries two or more flows sheds one of them to a path
whose worst link would be at least ``margin`` (share of capacity) less
loaded; a flow that moved stays put for ``cooldown_s`` (no flapping). Failed
links are routed around as soon as the port-status event arrives.
"""

from __future__ import annotations

import logging

from controllers.algorithms.flow_routing import Flow, FlowRoutingAlgorithm, Path
from controllers.core.intents import Intent
from controllers.core.paths import LinkKey
from topologies.model import Node, Topology

LOG = logging.getLogger(__name__)


class AdaptiveAlgorithm(FlowRoutingAlgorithm):
    """Least-loaded path per flow; hot links shed flows (see the module docstring)."""

    name = "adaptive"

    def __init__(self, topology: Topology, seed: int = 0, hot_fraction: float = 0.9,
                 margin: float = 0.25, cooldown_s: float = 1.0, **batching: float) -> None:
        super().__init__(topology, seed, **batching)
        if not 0 < hot_fraction <= 1:
            raise ValueError(f"hot_fraction: must be in (0, 1], got {hot_fraction}")
        self.hot_fraction = hot_fraction
        self.margin = margin
        self.cooldown_s = cooldown_s
        self.moves = 0

    def path_cost(self, path: Path, flow: Flow | None = None) -> tuple[float, float]:
        """(worst, total) switch-link load as shares of capacity if ``flow`` ran on ``path``."""
        # A link's load is max(reserved, measured); inlined: this runs for every
        # candidate path of every request.
        worst = total = 0.0
        extra = flow.demand_mbps if flow else 0.0
        key = flow.key if flow else None
        demand, measured, on_link = self.link_demand, self.measured, self.on_link
        for link in path[1:-1]:  # the NIC links are the same on every candidate
            reserved, seen = demand.get(link, 0.0), measured.get(link, 0.0)
            if key is not None and key in on_link.get(link, ()):
                reserved, seen = reserved - extra, seen - extra
            share = ((reserved if reserved > seen else seen) + extra) / self.capacity[link]
            total += share
            if share > worst:
                worst = share
        return (worst, total)

    def on_load(self, node: Node, measured: dict[LinkKey, float], now: float) -> list[Intent]:
        """Move one flow off every hot fabric link of this switch, where a clearly better path
        exists."""
        intents: list[Intent] = []
        for link, mbps in sorted(measured.items()):
            flows = self.on_link.get(link, set())
            if mbps < self.hot_fraction * self.capacity.get(link, float("inf")) or len(flows) < 2:
                continue
            if any(self.flows[key].path[-1] == link for key in flows):
                continue  # a ToR's port to a NIC: every path of these flows ends on it
            movable = sorted((self.flows[key] for key in flows
                              if now - self.flows[key].moved_at >= self.cooldown_s),
                             key=lambda f: (-f.started, f.key))
            for flow in movable:
                current = self.path_cost(flow.path, flow)[0]
                best = min(self.candidates(flow), key=lambda p: self.path_cost(p, flow))
                if best != flow.path and self.path_cost(best, flow)[0] + self.margin <= current:
                    LOG.info("adaptive: %s qp %d moved off hot %s:%d (%.1f Mb/s)", flow.src_ip,
                             flow.qp, link[0], link[1], mbps)
                    intents += self.move(flow, best, now)
                    self.moves += 1
                    break
        return intents
