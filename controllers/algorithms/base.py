"""A do-nothing algorithm base class: subclasses override only the events they use."""

from __future__ import annotations

from typing import Any, Sequence

from controllers.core.events import PortCounters
from controllers.core.intents import Intent
from topologies.model import Link, Topology


class BaseAlgorithm:
    """Default handlers that return no intents; ``name`` must be set by subclasses."""

    name = "base"

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def switch_up(self, dpid: int, now: float) -> list[Intent]:
        """A switch connected: return its full program."""
        return []

    def switch_down(self, dpid: int, now: float) -> list[Intent]:
        """A switch disconnected (nothing can be sent to it)."""
        return []

    def port_stats(self, dpid: int, stats: Sequence[PortCounters], now: float) -> list[Intent]:
        """Cumulative port counters of one switch arrived."""
        return []

    def link_change(self, link: Link, up: bool, now: float) -> list[Intent]:
        """A fabric link went down or came back."""
        return []

    def flow_request(self, request: Any, now: float) -> list[Intent]:
        """A NIC asked for a rate before sending (proactive algorithms)."""
        return []

    def flow_done(self, flow: Any, now: float) -> list[Intent]:
        """A NIC reported a flow finished (proactive algorithms)."""
        return []

    def packet_in(self, dpid: int, in_port: int, data: bytes, now: float) -> list[Intent]:
        """A switch punted a packet (ARP, in-band control)."""
        return []

    def next_timer(self) -> float | None:
        """When the algorithm wants `timer` called (monotonic s), or None."""
        return None

    def timer(self, now: float) -> list[Intent]:
        """The time `next_timer` asked for came (maybe later)."""
        return []
