"""The wired fabric as plain, frozen data: nodes, NICs, links, ports, addresses.

Conventions (deterministic, documented in docs/topology.md):
- servers ``h1..hN``; ToR of pod p, rail r ``t{p}r{r}``; leaf i of block b
  ``l{b}n{i}``; spine i ``s{i}``.
- NIC r of a server is ``eth{r}`` inside the server's namespace, with IP
  ``10.{r}.{pod}.{index_in_pod + 1}`` (rail r is subnet 10.r.0.0/16, pod p of
  rail r is 10.r.p.0/24, owned by ToR ``t{p}r{r}``) and MAC
  ``02:00:{r}:{pod}:{index>>8}:{index&255}`` (hex).
- Switch ports: ToR downlinks 1..servers_per_pod (server order), then
  uplinks; leaves: ToR links first, then spine links; spines: in link order.
- Links run from the lower tier (``a``) to the upper tier (``b``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from topologies.spec import FabricSpec

SERVER, TOR, LEAF, SPINE = "server", "tor", "leaf", "spine"
SWITCH_KINDS = (TOR, LEAF, SPINE)
_KIND_CODE = {TOR: 1, LEAF: 2, SPINE: 3}


@dataclass(frozen=True)
class Node:
    """A server or a switch; ``dpid`` is set for switches only."""

    name: str
    kind: str
    pod: int | None = None
    rail: int | None = None
    block: int | None = None
    index: int = 0
    dpid: int | None = None

    @property
    def is_switch(self) -> bool:
        """True for ToRs, leaves and spines."""
        return self.kind in SWITCH_KINDS


def switch_dpid(kind: str, major: int, minor: int) -> int:
    """Datapath id that reads in hex as kind:major:minor (e.g. 0x1_0002_0003 = ToR pod 2 rail 3)."""
    return (_KIND_CODE[kind] << 32) | (major << 16) | minor


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: node, port number (rail for a server NIC), interface name."""

    node: str
    port: int
    intf: str


@dataclass(frozen=True)
class Link:
    """A full-duplex link, shaped at both ends' egress to ``mbps`` with a byte buffer."""

    a: Endpoint
    b: Endpoint
    tier: str
    mbps: float
    buffer_bytes: int

    def ends(self) -> tuple[Endpoint, Endpoint]:
        """Both endpoints, lower tier first."""
        return (self.a, self.b)


@dataclass(frozen=True)
class Nic:
    """A server NIC: its rail, address plan and the ToR port it plugs into."""

    server: str
    rail: int
    intf: str
    ip: str
    mac: str
    tor: str
    tor_port: int


@dataclass(frozen=True)
class Topology:
    """A wired fabric: the spec it came from, its nodes, NICs and links."""

    spec: FabricSpec
    nodes: tuple[Node, ...]
    nics: tuple[Nic, ...]
    links: tuple[Link, ...]
    _by_name: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({node.name: node for node in self.nodes})

    @property
    def name(self) -> str:
        """The fabric's name (the preset or spec name)."""
        return self.spec.name

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError if none)."""
        return self._by_name[name]

    def servers(self) -> list[Node]:
        """Servers in numbering order."""
        return [n for n in self.nodes if n.kind == SERVER]

    def switches(self, kind: str | None = None) -> list[Node]:
        """Switches (optionally of one kind) in build order."""
        return [n for n in self.nodes if n.is_switch and (kind is None or n.kind == kind)]

    def nics_of(self, server: str) -> list[Nic]:
        """The NICs of one server, by rail."""
        return [nic for nic in self.nics if nic.server == server]

    def links_of(self, node: str) -> Iterator[tuple[Link, Endpoint, Endpoint]]:
        """Every link touching ``node`` as (link, local end, remote end)."""
        for link in self.links:
            if link.a.node == node:
                yield link, link.a, link.b
            elif link.b.node == node:
                yield link, link.b, link.a

    def link_name(self, link: Link) -> str:
        """A link's name: ``a-b``, with ``#k`` when several links join the same two nodes."""
        twins = [other for other in self.links
                 if {other.a.node, other.b.node} == {link.a.node, link.b.node}]
        base = f"{link.a.node}-{link.b.node}"
        return base if len(twins) == 1 else f"{base}#{twins.index(link) + 1}"

    def find_link(self, name: str) -> int:
        """Index in ``links`` of the link ``name`` names, either end first (ValueError why)."""
        base, _, nth = name.partition("#")
        ends = base.split("-")
        if len(ends) != 2 or not all(ends) or (nth and not nth.isdigit()):
            raise ValueError(f"not a link name like 't0r0-s1' or 't0r0-s1#2', got {name!r}")
        for end in ends:
            if end not in self._by_name:
                raise ValueError(f"no node {end!r} in fabric {self.name}")
        matches = [i for i, link in enumerate(self.links)
                   if {link.a.node, link.b.node} == set(ends)]
        if not matches:
            raise ValueError(f"{ends[0]} and {ends[1]} are not linked in fabric {self.name} "
                             f"(railcc topo show {self.name} --links lists the links)")
        k = int(nth or 1)
        if not 1 <= k <= len(matches):
            raise ValueError(f"{base} has {len(matches)} parallel link(s), got #{k}")
        if len(matches) > 1 and not nth:
            raise ValueError(f"{base} has {len(matches)} parallel links: name one as "
                             f"'{base}#1'..'{base}#{len(matches)}'")
        return matches[k - 1]

    def tiers(self) -> list[str]:
        """Link tiers present, lower first."""
        order = ["host", "tor-spine", "tor-leaf", "leaf-spine"]
        present = {link.tier for link in self.links}
        return [tier for tier in order if tier in present]
