"""The Algorithm interface every controller algorithm implements, and the name registry.

Handlers take the event and ``now`` (seconds, injected by the caller) and
return a list of intents (`controllers.core.intents`) to send, in order. They never
send anything themselves, so they unit-test without a switch.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from controllers.algorithms.adaptive import AdaptiveAlgorithm
from controllers.algorithms.ecmp import EcmpAlgorithm
from controllers.algorithms.proactive import ProactiveAlgorithm
from controllers.algorithms.dcqcn import DcqcnAlgorithm
from controllers.algorithms.swift import SwiftAlgorithm
from controllers.core.events import PortCounters
from controllers.core.intents import Intent
from topologies.model import Link, Topology


@runtime_checkable
class Algorithm(Protocol):
    """What the shim calls; see `controllers.algorithms.base.BaseAlgorithm` for no-op defaults."""

    name: str

    def switch_up(self, dpid: int, now: float) -> list[Intent]:
        """A switch connected: return its full program (groups before flows)."""

    def switch_down(self, dpid: int, now: float) -> list[Intent]:
        """A switch disconnected."""

    def port_stats(self, dpid: int, stats: Sequence[PortCounters], now: float) -> list[Intent]:
        """Cumulative port counters of one switch arrived."""

    def link_change(self, link: Link, up: bool, now: float) -> list[Intent]:
        """A fabric link went down (``up`` False) or came back."""

    def flow_request(self, request: Any, now: float) -> list[Intent]:
        """A NIC asked for a rate before sending (proactive)."""

    def flow_done(self, flow: Any, now: float) -> list[Intent]:
        """A NIC reported a flow finished."""

    def packet_in(self, dpid: int, in_port: int, data: bytes, now: float) -> list[Intent]:
        """A switch punted a packet (ARP, in-band control)."""

    def next_timer(self) -> float | None:
        """When the algorithm wants `timer` called (monotonic s), or None."""

    def timer(self, now: float) -> list[Intent]:
        """The time `next_timer` asked for came (maybe later)."""


#: Algorithm name -> class taking ``(topology, **options)``.
ALGORITHMS: dict[str, type] = {"ecmp": EcmpAlgorithm, "adaptive": AdaptiveAlgorithm,
                               "proactive": ProactiveAlgorithm, "dcqcn": DcqcnAlgorithm,
                               "reactive": DcqcnAlgorithm, "swift": SwiftAlgorithm}
#: Other names of an algorithm (not run twice when every algorithm is asked for).
ALIASES = {"reactive": "dcqcn"}
#: Algorithms whose NICs announce every flow in-band and wait for a grant before sending.
ANNOUNCING = frozenset({"adaptive", "proactive"})
#: Algorithms whose NICs run congestion control themselves, and which: DCQCN
#: (fabric/nic/dcqcn.py) or Swift (fabric/nic/swift.py).
NIC_CONGESTION_CONTROL = {"dcqcn": "dcqcn", "reactive": "dcqcn", "swift": "swift"}


class UnknownAlgorithm(ValueError):
    """An algorithm name or option that does not exist; the message lists what does."""


def make_algorithm(name: str, topology: Topology, **options: Any) -> Algorithm:
    """The algorithm called ``name`` for ``topology``; UnknownAlgorithm if there is none."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        known = ", ".join(sorted(ALGORITHMS))
        raise UnknownAlgorithm(f"algorithm: unknown name {name!r} (known: {known})") from None
    try:
        return cls(topology, **options)
    except TypeError as error:
        raise UnknownAlgorithm(f"algorithm {name}: bad options {sorted(options)}: {error}") from None
