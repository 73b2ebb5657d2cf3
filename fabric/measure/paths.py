"""The path each flow took through the switches, from OVS's own datapath flows.

A datapath flow is exact on the fields the switch's rules looked at, and the
ECMP hash looks at the 5-tuple (controllers.openflow.ofmsgs), so after a round
the ToR a flow enters holds a datapath flow exact on its 5-tuple, with the
output port the hash chose; the switches after it hold flows on the fields their
rules read (a spine: the destination prefix), which the 5-tuple is matched against. `PathBook.read` dumps them
(``dpctl/dump-flows --names`` over each ovs-vswitchd's unixctl socket, no fork,
a few ms a shard) and chains the hops of each 5-tuple from the ToR it entered by
to the port it left by: the very path the hash chose, not one recomputed.
The runner reads the book after every round (a datapath flow idles out 10 s
after its last packet, longer than a round) and writes ``paths.json``. Where a
switch holds several datapath flows a packet of the tuple would match (a lingering
one from before a change), the one used last is followed. The paths of flows an
announcing algorithm pinned are not recorded this way: their pinned rules go when
they are done, before the round ends, and OVS rewrites or drops their datapath
flows (the analysis makes no fluid estimate of such runs).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from fabric.net.pfc.feeders import unixctl
from topologies import Topology

_IN_PORT = re.compile(r"in_port\(([^)]+)\)")
_IPV4 = re.compile(r"ipv4\(([^)]*)\)")
_UDP = re.compile(r"udp\(([^)]*)\)")
_COUNTS = re.compile(r"packets:(\d+), bytes:(\d+)")
_USED = re.compile(r"used:(never|[\d.]+)s?")
#: The fields a path is followed by, and their widths in bits.
FIELDS = {"ipv4.src": 32, "ipv4.dst": 32, "udp.src": 16, "udp.dst": 16}


def _number(text: str, bits: int) -> int:
    if bits == 32 and "." in text:
        return int(ipaddress.IPv4Address(text))
    return int(text, 0)


def _fields(line: str) -> dict[str, tuple[int, int]] | None:
    """The match of a datapath flow on `FIELDS`: name -> (value, mask); absent: wildcard.
    None when it is not IPv4 or matches a protocol other than UDP."""
    ipv4 = _IPV4.search(line)
    if not ipv4:
        return None
    found: dict[str, tuple[int, int]] = {}
    for proto, group in (("ipv4", ipv4.group(1)), ("udp", (_UDP.search(line) or ["", ""])[1])):
        for item in group.split(","):
            name, _, text = item.partition("=")
            key = f"{proto}.{name}"
            if key == "ipv4.proto" and text.split("/")[0] != "17":
                return None
            if key not in FIELDS:
                continue
            bits = FIELDS[key]
            value, _, mask = text.partition("/")
            found[key] = (_number(value, bits), _number(mask, bits) if mask else (1 << bits) - 1)
    return found


@dataclass(frozen=True)
class Hop:
    """One switch's datapath flow: packets entering by ``in_intf`` that match ``fields``
    (name -> (value, mask); an absent field matches anything) leave by ``out_intf``."""

    in_intf: str
    out_intf: str
    fields: tuple[tuple[str, int, int], ...]
    packets: int
    bytes: int
    #: Seconds since it last carried a packet (inf: never).
    used_s: float = float("inf")

    def key(self) -> tuple[str, str, int, int] | None:
        """The exact 5-tuple (src ip, dst ip, UDP ports) this flow matches, if it is exact
        on all of them (a ToR's hashing rule is; a spine's route is on the prefix only)."""
        exact = {name: value for name, value, mask in self.fields
                 if mask == (1 << FIELDS[name]) - 1}
        if len(exact) != len(FIELDS):
            return None
        return (str(ipaddress.IPv4Address(exact["ipv4.src"])),
                str(ipaddress.IPv4Address(exact["ipv4.dst"])), exact["udp.src"], exact["udp.dst"])

    def matches(self, key: tuple[str, str, int, int]) -> bool:
        """Whether a packet of 5-tuple ``key`` takes this flow."""
        values = {"ipv4.src": int(ipaddress.IPv4Address(key[0])),
                  "ipv4.dst": int(ipaddress.IPv4Address(key[1])),
                  "udp.src": key[2], "udp.dst": key[3]}
        return all(values[name] & mask == value & mask for name, value, mask in self.fields)


def parse_hops(text: str, known: set[str]) -> list[Hop]:
    """The IPv4/UDP datapath flows of ``dpctl/dump-flows --names`` text that enter and
    leave by interfaces in ``known`` (one output each: ECMP never copies a packet)."""
    hops = []
    for line in text.splitlines():
        source, counts, fields = _IN_PORT.search(line), _COUNTS.search(line), _fields(line)
        used = _USED.search(line)
        if not (source and counts and used) or fields is None or "actions:" not in line \
                or used.group(1) == "never":
            continue
        outputs = [t for t in re.split(r"[,()]", line.rsplit("actions:", 1)[1]) if t in known]
        if source.group(1) not in known or len(outputs) != 1:
            continue
        hops.append(Hop(source.group(1), outputs[0],
                        tuple((name, *fields[name]) for name in FIELDS if name in fields),
                        int(counts.group(1)), int(counts.group(2)), float(used.group(1))))
    return hops


@dataclass
class FlowPath:
    """A 5-tuple's path in one round: the links it crossed, in order, and what the
    first switch counted of it."""

    round: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    links: list[str] = field(default_factory=list)
    #: The nodes it went through, server to server (``links[i]`` joins nodes i and i + 1).
    nodes: list[str] = field(default_factory=list)
    packets: int = 0
    bytes: int = 0
    #: It reached a server's link (False: a later hop's datapath flow had idled out).
    complete: bool = False


class PathBook:
    """Reads the switches' datapath flows after each round; what every flow crossed."""

    def __init__(self, topology: Topology, switch_intfs: Mapping[tuple[str, int], str],
                 sockets: Iterable[str | Path]) -> None:
        self.topology = topology
        self.sockets = list(sockets)
        #: interface -> (switch, port), and (switch, port) -> (link name, far end)
        self.port_of = {intf: key for key, intf in switch_intfs.items()}
        self.wire: dict[tuple[str, int], tuple[str, tuple[str, int] | None]] = {}
        for link in topology.links:
            name = topology.link_name(link)
            for near, far in ((link.a, link.b), (link.b, link.a)):
                on_switch = far.node not in {n.server for n in topology.nics}
                self.wire[(near.node, near.port)] = (name, (far.node, far.port) if on_switch
                                                     else None)
        self.nic_ip = {(nic.tor, nic.tor_port): nic.ip for nic in topology.nics}
        self.server_at = {(nic.tor, nic.tor_port): nic.server for nic in topology.nics}
        self.flows: list[FlowPath] = []
        self.errors: list[str] = []

    def read(self, round_number: int) -> None:
        """Dump every shard's datapath flows and keep the paths of this round's flows."""
        at: dict[tuple[str, int], list[Hop]] = {}
        for path in self.sockets:
            try:
                text = unixctl(path, "dpctl/dump-flows", ["--names"])
            except (OSError, RuntimeError) as error:
                self.errors.append(f"{path}: {error}")
                continue
            for hop in parse_hops(text, set(self.port_of)):
                at.setdefault(self.port_of[hop.in_intf], []).append(hop)
        for start, hops in sorted(at.items()):
            if self.wire[start][1] is not None:
                continue   # entered from another switch: not where a flow began
            latest: dict[tuple, Hop] = {}   # a moved flow's old datapath flow lingers
            for hop in hops:
                key = hop.key() or self._local_key(start, hop)
                if key is not None and (key not in latest or hop.used_s < latest[key].used_s):
                    latest[key] = hop
            for key, hop in latest.items():
                self.flows.append(self._follow(round_number, key, start, hop, at))

    def _local_key(self, start: tuple[str, int], hop: Hop) -> tuple[str, str, int, int] | None:
        """The 5-tuple of a first hop that does not hash (a ToR's route to its own host
        matches the destination only): the source is the NIC on the port it came in by,
        the UDP ports 0 (every QP of the pair takes it)."""
        exact = {name: value for name, value, mask in hop.fields
                 if mask == (1 << FIELDS[name]) - 1}
        if "ipv4.dst" not in exact or start not in self.nic_ip:
            return None
        return (self.nic_ip[start], str(ipaddress.IPv4Address(exact["ipv4.dst"])),
                exact.get("udp.src", 0), exact.get("udp.dst", 0))

    def _follow(self, round_number: int, key: tuple[str, str, int, int], start: tuple[str, int],
                hop: Hop, at: Mapping[tuple[str, int], list[Hop]]) -> FlowPath:
        """The path of ``key`` from the ToR port it entered by, each switch's action in turn.

        The actions are the ones the switch's rules give at the read: right for hashed
        flows, not for a flow pinned by an announcing algorithm whose pinned rules went
        when it was done (OVS then rewrites or drops its datapath flows)."""
        flow = FlowPath(round_number, *key, links=[self.wire[start][0]], packets=hop.packets,
                        bytes=hop.bytes, nodes=[self.server_at[start], start[0]])
        seen = {start}
        while True:
            out = self.port_of[hop.out_intf]
            name, far = self.wire[out]
            flow.links.append(name)
            flow.nodes.append(far[0] if far else self.server_at[out])
            if far is None:
                flow.complete = True
                return flow
            following = [h for h in at.get(far, ()) if h.matches(key)]
            if far in seen or not following:
                return flow   # its datapath flow there idled out
            seen.add(far)
            hop = min(following, key=lambda h: h.used_s)

    def write(self, path: Path) -> None:
        """``paths.json``: every flow's path per round, and any shard that did not answer."""
        path.write_text(json.dumps({"flows": [asdict(f) for f in self.flows],
                                    "errors": self.errors}, indent=1) + "\n")
