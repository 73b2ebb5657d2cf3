"""`proactive` (TiTa 2.0 / TCCL style): rates agreed before sending, so queues never build.

A job's flows are announced when the round is loaded, before it starts, and
placed together (`controllers.algorithms.flow_routing`): largest expected
rate first, each on the equal-cost path whose busiest switch link would carry
the least expected rate (its NICs' line rate shared with their other flows),
so the flows that would share a link only where none can avoid it.
Every flow's rate is then the max-min fair share of all active flows over all
links they cross, NIC links included (`controllers.core.maxmin`). A link that
carries one flow, and a NIC's own link (its NIC paces all its flows together),
is allocatable in full; a link shared by two or more flows only up to
``headroom`` of its capacity: flows paced independently, with their own
phases, still clump, and at 99 % a 10-frame buffer overflowed once in two runs
with 24 flows on a 2:1 uplink (benchmarks/RESULTS.md); the rest also carries
the ACKs (0.1 % of the data's bytes at ``ack_every`` 8). When flows arrive,
leave or move, every flow whose rate
changed by more than 1 % gets a new grant at once (one message per NIC): cuts
first, then raises, then the newcomers' grants, so the sum of granted rates
stays within the links' capacity; a finished flow's share goes to the others
at once.
"""

from __future__ import annotations

from typing import Sequence

from controllers.algorithms.flow_routing import GRANT_CHANGE, Flow, FlowRoutingAlgorithm
from controllers.core.intents import Intent
from controllers.core.maxmin import max_min_rates
from controllers.core.paths import LinkKey
from topologies.model import Topology

#: Share of a shared link's capacity the grants may use (see the module docstring).
HEADROOM = 0.97


class ProactiveAlgorithm(FlowRoutingAlgorithm):
    """Max-min fair rates granted to every flow before it sends."""

    name = "proactive"
    #: Paths are chosen from expected rates, not measured load.
    uses_port_stats = False
    rates_follow_demand = False

    def __init__(self, topology: Topology, seed: int = 0, headroom: float = HEADROOM,
                 **batching: float) -> None:
        super().__init__(topology, seed, **batching)
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom: must be in (0, 1], got {headroom}")
        self.headroom = headroom

    def granted_mbps(self, flow: Flow) -> float:
        """The flow's max-min fair share."""
        return flow.rate_mbps

    def allocatable(self, link: LinkKey) -> float:
        """What the grants may use of ``link`` (see the module docstring)."""
        flows = self.on_link.get(link, ())
        if len(flows) <= 1 or self.flows[next(iter(flows))].path[0] == link:
            return self.capacity[link]
        return self.capacity[link] * self.headroom

    def allocate(self) -> dict[tuple[str, int], float]:
        """Max-min fair rate (Mb/s) of every active flow."""
        paths = {key: flow.path for key, flow in self.flows.items()}
        links = {link for path in paths.values() for link in path}
        demand = dict.fromkeys(paths, self.line_mbps)
        return max_min_rates(paths, {link: self.allocatable(link) for link in links}, demand)

    def after_change(self, now: float, new: Sequence[Flow] = ()) -> list[Intent]:
        """Regrant every flow whose fair share changed: cuts first, then raises."""
        rates = self.allocate()
        newcomers = {flow.key for flow in new}
        cuts, raises = [], []
        for key, flow in sorted(self.flows.items()):
            rate = rates[key]
            if key in newcomers:
                self.set_rate(flow, rate)
            elif abs(rate - flow.rate_mbps) > GRANT_CHANGE * flow.rate_mbps:
                (cuts if rate < flow.rate_mbps else raises).append(flow)
                self.set_rate(flow, rate)
        return self.grant_batch(cuts) + self.grant_batch(raises)
