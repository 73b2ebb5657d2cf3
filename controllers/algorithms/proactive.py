"""`proactive` (TiTa 2.0 / TCCL style): rates agreed before sending, so queues never build.

Every announced flow gets a path (fewest flows per capacity on its busiest
link) and every flow's rate is recomputed as the max-min fair share of all
active flows over all links they cross, NIC links included
(`controllers.core.maxmin`), with ``headroom`` (default 0.95) of each capacity
allocatable: the rest absorbs ACKs and pacing jitter. When a flow arrives,
leaves or moves, every flow whose rate changed by more than 1 % gets a new
RATE_GRANT: cuts first, then raises, then the newcomer's grant, so the sum of
granted rates stays within the links' capacity.
"""

from __future__ import annotations

from typing import Sequence

from controllers.algorithms.flow_routing import GRANT_CHANGE, Flow, FlowRoutingAlgorithm, Path
from controllers.core.intents import Intent
from controllers.core.maxmin import max_min_rates
from topologies.model import Topology


#: Up to this many active flows, a new flow's path is the one with its largest max-min share.
EXACT_CHOICE_FLOWS = 64


class ProactiveAlgorithm(FlowRoutingAlgorithm):
    """Max-min fair rates granted to every flow before it sends."""

    name = "proactive"
    #: Paths are chosen from flow counts, not measured load.
    uses_port_stats = False

    def __init__(self, topology: Topology, seed: int = 0, headroom: float = 0.95) -> None:
        super().__init__(topology, seed)
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom: must be in (0, 1], got {headroom}")
        self.headroom = headroom
        self.allocatable = {link: mbps * headroom for link, mbps in self.capacity.items()}

    def crowding(self, path: Path) -> tuple[float, float]:
        """(busiest, total) flows per capacity on ``path`` with one more flow on it."""
        counts = [(len(self.on_link.get(link, ())) + 1) / self.capacity[link] for link in path]
        return (max(counts), sum(counts))

    def choose_path(self, flow: Flow, candidates: Sequence[Path], now: float) -> Path:
        """The path on which the flow's max-min share is largest; ties: `crowding`.

        A max-min allocation per candidate costs O(flows): beyond
        ``EXACT_CHOICE_FLOWS`` active flows the grant would come late, so crowding
        alone decides."""
        if len(candidates) == 1 or len(self.flows) > EXACT_CHOICE_FLOWS:
            return min(candidates, key=self.crowding)
        paths = {key: other.path for key, other in self.flows.items()}

        def cost(path: Path) -> tuple[float, float, float]:
            share = self.allocate({**paths, flow.key: path})[flow.key]
            return (-round(share, 6), *self.crowding(path))
        return min(candidates, key=cost)

    def granted_mbps(self, flow: Flow) -> float:
        """The flow's max-min fair share."""
        return flow.rate_mbps

    def reestimate(self, flow: Flow) -> None:
        """Rates are the max-min allocation of `after_change`, not estimates."""

    def estimate(self, flow: Flow) -> float:
        """Placeholder until `after_change` allocates: the line rate."""
        return self.line_mbps

    def allocate(self, paths: dict[tuple[str, int], Path] | None = None
                 ) -> dict[tuple[str, int], float]:
        """Max-min fair rate (Mb/s) of every active flow (or of ``paths``)."""
        if paths is None:
            paths = {key: flow.path for key, flow in self.flows.items()}
        demand = dict.fromkeys(paths, self.line_mbps * self.headroom)
        return max_min_rates(paths, self.allocatable, demand)

    def after_change(self, now: float, new: Flow | None = None) -> list[Intent]:
        """Regrant every flow whose fair share changed: cuts first, then raises."""
        rates = self.allocate()
        cuts, raises = [], []
        for key, flow in sorted(self.flows.items()):
            rate = rates[key]
            if flow is new:
                self.set_rate(flow, rate)
            elif abs(rate - flow.rate_mbps) > GRANT_CHANGE * flow.rate_mbps:
                (cuts if rate < flow.rate_mbps else raises).append(flow)
                self.set_rate(flow, rate)
        return [self.grant(flow) for flow in cuts + raises]
