"""Per-flow routing on top of ECMP: the shared core of `adaptive` and `proactive`.

NICs announce every flow (a QP's work of one round) in-band when it is loaded,
before the round starts: FLOW_REQUEST (src, dst, bytes, UDP source port) and
later FLOW_DONE (`controllers.core.inband`). Requests that arrive together (no
more than ``batch_s`` apart, for at most ``batch_max_s``) are placed together:
every flow's expected rate (its NICs' line rate shared with their other flows)
is known before any path is chosen, and the flows take their paths largest
expected rate first (then most bytes), each the equal-cost path
`choose_path` picks given the ones placed before it (overridden per
algorithm). Each flow gets an exact 5-tuple rule on every switch of its path
where ECMP's healthy routes have a choice (priority ``PRIORITY_FLOW``, above
the ECMP routes that still carry ACKs and unannounced traffic; where they
have one port, as at the last ToR, a rule would change nothing and only cost
the switch a flow-table change) and a grant after the rules (one message per
NIC for the flows placed together); the NIC sends only after the grant. A retransmitted request is answered
again, never installed twice. When a fabric link goes down, every flow
crossing it moves to another path at once (rules added downstream first, so
no packet meets a missing rule). A finished flow's rules are removed later,
together: when no announced flow is left, or ``STALE_FLUSH_S`` after the first
of them finished (see there). Subclasses react to flows arriving and leaving
through `after_change`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from controllers.algorithms.ecmp import EcmpAlgorithm
from controllers.core.events import PortCounters
from controllers.core.inband import IP_PROTO_UDP, control_frame, manager_match, parse_control
from controllers.core.intents import FlowRule, Intent, Output, PacketOut, ToController
from controllers.core.paths import LinkKey, PathFinder, capacities, link_keys
from controllers.core.routing import tor_prefix
from fabric.nic import wire
from topologies.model import TOR, Link, Node, Topology

LOG = logging.getLogger(__name__)

PRIORITY_PUNT = 300
PRIORITY_FLOW = 280
#: Rate changes smaller than this share are not worth a grant.
GRANT_CHANGE = 0.01
#: Requests no more than this apart are placed together (s): a round's loads reach
#: the agents one after another (a few ms each), each announcing its QPs at once.
BATCH_S = 0.02
#: A batch is placed at the latest this long after its first request (s).
BATCH_MAX_S = 0.1
#: Flows that finish within this long of the first are re-allocated together (s): at
#: the end of an All2All hundreds finish at once, and one re-grant round each would
#: keep the controller busy for seconds.
DONE_BATCH_S = 0.002
#: A finished flow's rules are removed when no announced flow is left, or at the latest
#: this long after the first of them finished (s). Every rule change makes OVS
#: revalidate every datapath flow of the switch's process; removed one by one as the
#: flows of an All2All finished, they kept its forwarding thread's turns at 30-70 ms
#: (a 2:1 rail-3tier, 480 flows; benchmarks/RESULTS.md). A rule left behind pins only a
#: 5-tuple that sends nothing until its QP announces again (and is placed afresh).
STALE_FLUSH_S = 1.0

Path = tuple[LinkKey, ...]


def pinned_key(rule: FlowRule) -> tuple[int, str, str, int]:
    """A flow rule's switch and the 5-tuple it pins (the rest of the match is fixed)."""
    match = rule.match
    return (rule.dpid, match["ipv4_src"], match["ipv4_dst"], match["udp_src"])


@dataclass
class Flow:
    """One announced flow: a QP's transfer from one NIC to another, and where it runs."""

    src_ip: str
    dst_ip: str
    qp: int
    src_port: int
    size: int
    started: float
    path: Path = ()
    rate_mbps: float = 0.0
    #: Expected rate (Mb/s): its NICs' line rate shared with their other flows.
    demand_mbps: float = 0.0
    moved_at: float = field(default=-1e9)

    @property
    def key(self) -> tuple[str, int]:
        """Identity: (source NIC address, QP number)."""
        return (self.src_ip, self.qp)


class FlowRoutingAlgorithm(EcmpAlgorithm):
    """ECMP routes plus announced flows pinned to chosen paths (see the module docstring)."""

    name = "flow-routing"
    uses_port_stats = True
    #: A flow's rate is its expected rate (`proactive` allocates rates instead).
    rates_follow_demand = True

    def __init__(self, topology: Topology, seed: int = 0, batch_s: float = BATCH_S,
                 batch_max_s: float = BATCH_MAX_S) -> None:
        super().__init__(topology, seed)
        if batch_s < 0 or batch_max_s < batch_s:
            raise ValueError(f"batch_s, batch_max_s: need 0 <= batch_s <= batch_max_s, got "
                             f"{batch_s}, {batch_max_s}")
        self.batch_s = batch_s
        self.batch_max_s = batch_max_s
        #: Requests waiting to be placed together: key -> (flow, request seq).
        self.pending: dict[tuple[str, int], tuple[Flow, int]] = {}
        self.batch_started = 0.0
        self.batch_due = 0.0
        #: When `after_change` runs for flows that finished since it last ran (None: none).
        self.change_due: float | None = None
        #: Rules of finished flows not removed yet, by (switch, 5-tuple); when they go.
        self.stale: dict[tuple[int, str, str, int], FlowRule] = {}
        self.stale_due: float | None = None
        self.finder = PathFinder(topology, self.routes)
        self.capacity: dict[LinkKey, float] = capacities(topology)
        self.line_mbps = topology.spec.nic_mbps
        self.flows: dict[tuple[str, int], Flow] = {}
        self.on_link: dict[LinkKey, set[tuple[str, int]]] = {}
        #: Sum of the expected rates of the flows on every directed link (Mb/s).
        self.link_demand: dict[LinkKey, float] = {}
        self.by_src: dict[str, set[tuple[str, int]]] = {}
        self.by_dst: dict[str, set[tuple[str, int]]] = {}
        self.down_keys: set[LinkKey] = set()
        self.grants = 0
        #: Last cumulative tx counter of every switch egress: (time, bytes).
        self.tx_counters: dict[LinkKey, tuple[float, int]] = {}
        #: Last measured transmit rate (Mb/s) of every switch egress that reported.
        self.measured: dict[LinkKey, float] = {}

    # -- programs -------------------------------------------------------------------
    def program(self, node: Node) -> list[Intent]:
        """ECMP's program, the manager punt rule on ToRs, and the flow rules of this switch."""
        intents = super().program(node)
        if node.kind == TOR:
            intents.append(FlowRule(node.dpid, PRIORITY_PUNT, manager_match(), (ToController(),)))
        for flow in self.flows.values():
            intents += [rule for rule in self.rules(flow) if rule.dpid == node.dpid]
        return intents

    def rules(self, flow: Flow, command: str = "add") -> list[FlowRule]:
        """Exact-match rules pinning ``flow`` to its path (or deleting them), downstream first,
        on the switches where ECMP's healthy routes have a choice."""
        path = flow.path
        match = {"eth_type": 0x0800, "ip_proto": IP_PROTO_UDP, "ipv4_src": flow.src_ip,
                 "ipv4_dst": flow.dst_ip, "udp_src": flow.src_port, "udp_dst": wire.ROCE_PORT}
        prefix = tor_prefix(self.finder.tors[self.finder.nic(flow.dst_ip).tor])
        out = []
        for switch, port in reversed(path[1:-1]):
            if list(self.healthy[switch].get(prefix, ())) == [port]:
                continue
            dpid = self.topology.node(switch).dpid
            actions = (Output(port),) if command == "add" else ()
            out.append(FlowRule(dpid, PRIORITY_FLOW, match, actions, command=command))
        return out

    # -- in-band control --------------------------------------------------------------
    def packet_in(self, dpid: int, in_port: int, data: bytes, now: float) -> list[Intent]:
        """Flow requests and completions go to the algorithm; ARP to ECMP's handler."""
        packet = parse_control(data)
        if packet is None:
            return super().packet_in(dpid, in_port, data, now)
        if isinstance(packet.message, wire.FlowRequest):
            return self.flow_request(packet.message, now)
        if isinstance(packet.message, wire.FlowDone):
            return self.flow_done(packet.message, now)
        LOG.debug("%s: ignored control %s from %s", self.name, packet.message, packet.src_ip)
        return []

    def flow_request(self, request: Any, now: float) -> list[Intent]:
        """Queue a new flow for the next batch (or place it now with ``batch_s`` 0); a
        repeated request of a placed flow gets its grant again."""
        key = (request.src_ip, request.qp)
        flow = self.flows.get(key)
        if flow is not None:
            return [self.grant(flow, request.seq)]
        if key in self.pending:
            self.pending[key] = (self.pending[key][0], request.seq)
            return []
        if self.finder.nic(request.src_ip) is None or self.finder.nic(request.dst_ip) is None:
            LOG.warning("%s: request for unknown NIC %s -> %s", self.name, request.src_ip,
                        request.dst_ip)
            return []
        flow = Flow(request.src_ip, request.dst_ip, request.qp, request.src_port,
                    request.size_bytes, now)
        if not self.batch_s:
            return self.place([(flow, request.seq)], now)
        if not self.pending:
            self.batch_started = now
        self.pending[key] = (flow, request.seq)
        self.batch_due = min(self.batch_started + self.batch_max_s, now + self.batch_s)
        return []

    def next_timer(self) -> float | None:
        """When `timer` has work: the pending batch's placement, the deferred reaction to
        finished flows or the removal of their rules, whichever is first (None: nothing)."""
        dues = [due for due in (self.batch_due if self.pending else None, self.change_due,
                                self.stale_due) if due is not None]
        return min(dues) if dues else None

    def timer(self, now: float) -> list[Intent]:
        """Place the pending batch, react to finished flows, or remove their rules, if its
        time came."""
        if self.pending and now >= self.batch_due:
            batch, self.pending = list(self.pending.values()), {}
            return self.place(batch, now)
        if self.change_due is not None and now >= self.change_due:
            self.change_due = None
            return self.after_change(now)
        if self.stale_due is not None and now >= self.stale_due:
            return self.flush_stale()
        return []

    def place(self, batch: Sequence[tuple[Flow, int]], now: float) -> list[Intent]:
        """Place flows announced together, jointly (see the module docstring): their rules,
        `after_change`'s grants to the flows already running, then theirs."""
        flows = [flow for flow, _ in batch]
        for flow in flows:  # every NIC's share known before any path is chosen
            self._attach(flow)
        for flow in flows:
            self.reestimate(flow)
        placed: list[tuple[Flow, int]] = []
        seqs = {flow.key: seq for flow, seq in batch}
        for flow in sorted(flows, key=lambda f: (-f.demand_mbps, -f.size, f.key)):
            self._detach(flow)
            candidates = self.candidates(flow)
            if not candidates:
                LOG.warning("%s: no path %s -> %s", self.name, flow.src_ip, flow.dst_ip)
                self.reestimate(flow)
                continue
            flow.path = self.choose_path(flow, candidates, now)
            self._attach(flow)
            placed.append((flow, seqs[flow.key]))
        intents: list[Intent] = self.claim([rule for flow, _ in placed
                                            for rule in self.rules(flow)])
        self.change_due = None
        intents += self.after_change(now, new=[flow for flow, _ in placed])
        intents += self.grant_batch([flow for flow, _ in placed],
                                    {flow.key: seq for flow, seq in placed})
        LOG.info("%s: placed %d flow(s) together (%d active), %d intents", self.name,
                 len(placed), len(self.flows), len(intents))
        return intents

    def flow_done(self, done: Any, now: float) -> list[Intent]:
        """Forget a finished flow and remove its rules."""
        if self.pending.pop((done.src_ip, done.qp), None) is not None:
            return []
        flow = self.flows.get((done.src_ip, done.qp))
        if flow is None:
            return []
        self._detach(flow)
        self.reestimate(flow)
        removals = self.retire(flow, now)
        if not self.batch_s:
            return removals + self.after_change(now)
        if self.change_due is None:
            self.change_due = now + DONE_BATCH_S
        return removals

    def retire(self, flow: Flow, now: float) -> list[Intent]:
        """Queue a finished flow's rules for removal (see ``STALE_FLUSH_S``); every queued
        removal once no announced flow is left."""
        for rule in self.rules(flow, command="delete"):
            self.stale[pinned_key(rule)] = rule
        if self.stale_due is None:
            self.stale_due = now + STALE_FLUSH_S
        return [] if self.flows or self.pending else self.flush_stale()

    def claim(self, rules: list[FlowRule]) -> list[FlowRule]:
        """New rules, each replacing a finished flow's on its switch and 5-tuple: that one
        is no longer to be removed."""
        for rule in rules:
            self.stale.pop(pinned_key(rule), None)
        return rules

    def flush_stale(self) -> list[Intent]:
        """The removals of every finished flow's rules still in place."""
        removals, self.stale, self.stale_due = list(self.stale.values()), {}, None
        return removals

    def estimate(self, flow: Flow) -> float:
        """Expected rate of ``flow`` (Mb/s): its NICs' line rate shared with their other flows."""
        known = flow.key in self.flows
        senders = len(self.by_src.get(flow.src_ip, ())) + (not known)
        receivers = len(self.by_dst.get(flow.dst_ip, ())) + (not known)
        return self.line_mbps / max(1, senders, receivers)

    def reestimate(self, flow: Flow) -> None:
        """Refresh the expected rates of the flows sharing a NIC with ``flow`` (it came or
        went), and their rates where rates follow them."""
        for key in self.by_src.get(flow.src_ip, set()) | self.by_dst.get(flow.dst_ip, set()):
            other = self.flows[key]
            self.set_demand(other, self.estimate(other))
            if self.rates_follow_demand:
                self.set_rate(other, other.demand_mbps)

    def grant(self, flow: Flow, seq: int = 0) -> PacketOut:
        """A RATE_GRANT of the flow's current rate, out of its NIC's ToR port."""
        return self.grant_batch([flow], {flow.key: seq})[0]

    def grant_batch(self, flows: Sequence[Flow],
                    seqs: dict[tuple[str, int], int] | None = None) -> list[PacketOut]:
        """The flows' grants, one message per NIC in the flows' order (RATE_GRANTS when a
        NIC has several): each packet-out costs the switch's forwarding thread a turn's
        share, and a re-allocation touches many flows of each NIC at once."""
        seqs = seqs or {}
        by_nic: dict[str, list[Flow]] = {}
        for flow in flows:
            by_nic.setdefault(flow.src_ip, []).append(flow)
        out = []
        for group in by_nic.values():
            for start in range(0, len(group), wire.MAX_GRANTS):
                chunk = group[start:start + wire.MAX_GRANTS]
                items = [wire.RateGrant(flow.qp, max(1, int(self.granted_mbps(flow) * 1000)),
                                        seqs.get(flow.key, 0) & 0xFFFFFF)
                         for flow in chunk]
                self.grants += len(items)
                message = items[0] if len(items) == 1 else wire.RateGrants(tuple(items))
                out.append(self._to_nic(chunk[0], message))
        return out

    def granted_mbps(self, flow: Flow) -> float:
        """The rate a grant gives ``flow``: line rate (the NIC shares it); `proactive` overrides."""
        return self.line_mbps

    def cnp(self, flow: Flow) -> PacketOut:
        """A congestion notification for the flow's QP, out of its NIC's ToR port."""
        return self._to_nic(flow, wire.Cnp(flow.qp))

    def _to_nic(self, flow: Flow, message: wire.Message) -> PacketOut:
        nic = self.finder.nic(flow.src_ip)
        return PacketOut(self.topology.node(nic.tor).dpid, nic.tor_port,
                         control_frame(nic.mac, nic.ip, message))

    # -- paths ------------------------------------------------------------------------
    def candidates(self, flow: Flow) -> list[Path]:
        """Equal-cost paths of the flow that avoid links known to be down."""
        paths = self.finder.paths(flow.src_ip, flow.dst_ip)
        if not self.down_keys:
            return paths
        return [path for path in paths if not self.down_keys.intersection(path)]

    def choose_path(self, flow: Flow, candidates: Sequence[Path], now: float) -> Path:
        """The path for a new or moved flow (default: least reserved load, then first)."""
        return min(candidates, key=lambda path: self.path_cost(path, flow))

    def path_cost(self, path: Path, flow: Flow | None = None) -> tuple[float, float]:
        """(worst, total) expected load as shares of capacity of the switch links of ``path``
        (the NIC links are the same on every candidate) if ``flow`` ran on it."""
        worst = total = 0.0
        extra = flow.demand_mbps if flow else 0.0
        for link in path[1:-1]:
            share = (self.reserved(link, exclude=flow) + extra) / self.capacity[link]
            total += share
            if share > worst:
                worst = share
        return (worst, total)

    def reserved(self, link: LinkKey, exclude: Flow | None = None) -> float:
        """Sum of the expected rates of the flows placed on ``link`` (Mb/s), ``exclude`` left
        out."""
        load = self.link_demand.get(link, 0.0)
        if exclude is not None and exclude.key in self.on_link.get(link, ()):
            load -= exclude.demand_mbps
        return load

    def set_rate(self, flow: Flow, mbps: float) -> None:
        """Change the rate a flow is granted (placement reads expected rates, not these)."""
        flow.rate_mbps = mbps

    def set_demand(self, flow: Flow, mbps: float) -> None:
        """Change a flow's expected rate, keeping the expected load of its links in step."""
        if flow.key in self.flows:
            for link in flow.path:
                self.link_demand[link] = self.link_demand.get(link, 0.0) + mbps - flow.demand_mbps
        flow.demand_mbps = mbps

    def _attach(self, flow: Flow) -> None:
        self.flows[flow.key] = flow
        self.by_src.setdefault(flow.src_ip, set()).add(flow.key)
        self.by_dst.setdefault(flow.dst_ip, set()).add(flow.key)
        for link in flow.path:
            self.link_demand[link] = self.link_demand.get(link, 0.0) + flow.demand_mbps
            self.on_link.setdefault(link, set()).add(flow.key)

    def _detach(self, flow: Flow) -> None:
        if self.flows.pop(flow.key, None) is None:
            return
        self.by_src[flow.src_ip].discard(flow.key)
        self.by_dst[flow.dst_ip].discard(flow.key)
        for link in flow.path:
            self.link_demand[link] -= flow.demand_mbps
            self.on_link[link].discard(flow.key)

    def move(self, flow: Flow, path: Path, now: float) -> list[Intent]:
        """Re-pin ``flow`` to ``path``: new rules (downstream first), then stale ones removed."""
        old = self.rules(flow)
        self._detach(flow)
        flow.path, flow.moved_at = path, now
        self._attach(flow)
        new = self.claim(self.rules(flow))
        kept = {rule.dpid for rule in new}
        return new + [FlowRule(r.dpid, r.priority, r.match, (), command="delete")
                      for r in old if r.dpid not in kept]

    def link_change(self, link: Link, up: bool, now: float) -> list[Intent]:
        """ECMP's route update, then every flow crossing a failed link moves off it."""
        intents = super().link_change(link, up, now)
        if link.tier == "host":
            return intents
        keys = set(link_keys(link))
        (self.down_keys.difference_update if up else self.down_keys.update)(keys)
        self.finder.set_routes(self.routes)
        if up:
            return intents
        moved = 0
        for flow_key in sorted(set().union(*(self.on_link.get(k, set()) for k in keys))):
            flow = self.flows[flow_key]
            candidates = self.candidates(flow)
            if candidates:
                intents += self.move(flow, self.choose_path(flow, candidates, now), now)
                moved += 1
        LOG.info("%s: link %s:%d-%s:%d down; %d flow(s) moved", self.name, link.a.node,
                 link.a.port, link.b.node, link.b.port, moved)
        return intents + self.after_change(now)

    def after_change(self, now: float, new: Sequence[Flow] = ()) -> list[Intent]:
        """Hook: flows arrived, left or moved (``new`` are being granted by the caller)."""
        return []

    # -- measured load ----------------------------------------------------------------
    def port_stats(self, dpid: int, stats: Sequence[PortCounters], now: float) -> list[Intent]:
        """Turn cumulative tx counters into per-link measured rates; then `on_load`."""
        node = self.fabric.switch(dpid)
        if node is None:
            return []
        measured: dict[LinkKey, float] = {}
        for counters in stats:
            key = (node.name, counters.port)
            last = self.tx_counters.get(key)
            self.tx_counters[key] = (now, counters.tx_bytes)
            if last is not None and now > last[0] and counters.tx_bytes >= last[1]:
                measured[key] = (counters.tx_bytes - last[1]) * 8 / (now - last[0]) / 1e6
        self.measured.update(measured)
        return self.on_load(node, measured, now)

    def on_load(self, node: Node, measured: dict[LinkKey, float], now: float) -> list[Intent]:
        """Hook: fresh measured rates of one switch's egress links."""
        return []
