"""The os-ken app: OpenFlow 1.3 events in, the algorithm's intents out as OpenFlow messages.

No logic lives here. Configure it with `configure(ShimConfig(...))` before
os-ken instantiates the app (`controllers.openflow.launcher` does). After a switch's
program is sent, a barrier follows; its reply marks the switch configured and
the ready file is rewritten atomically (tmp + rename) as JSON::

    {"configured": [dpid, ...],        # ints, sorted
     "names": ["t0r0", ...],           # same order
     "expected": 12,                   # switches in the topology
     "complete": true,                 # every switch configured
     "errors": 0}                      # OFPErrorMsg received so far

Every OpenFlow error is logged at ERROR with ``OFPErrorMsg`` in the line.

Switch and port events are also appended, one JSON object a line, to
``controller-events.jsonl`` beside the ready file: ``{"t_ns": time.time_ns(),
"event": "connected" | "configured" | "disconnected" | "port", "switch": name,
"port": n, "up": bool}``; recovery figures read when the controller noticed a fault.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, HANDSHAKE_DISPATCHER,
                                       MAIN_DISPATCHER, set_ev_cls)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from controllers.algorithms.registry import make_algorithm
from controllers.core.events import PortCounters
from controllers.core.intents import ClearSwitch, Intent
from controllers.openflow.ofmsgs import delete_strict, flow_key, to_ofmsgs, unchanged_adds
from controllers.core.routing import FabricMap
from topologies.export import load_json

LOG = logging.getLogger("controllers.openflow.shim")


@dataclass(frozen=True)
class ShimConfig:
    """What the app needs: topology JSON, algorithm, ready file, stats polling interval."""

    topology_path: Path
    algo: str = "ecmp"
    ready_file: Path | None = None
    stats_interval: float = 0.2
    options: dict[str, Any] = field(default_factory=dict)


CONFIG: ShimConfig | None = None


def configure(config: ShimConfig) -> None:
    """Set the configuration the app reads when os-ken instantiates it."""
    global CONFIG
    CONFIG = config


def guarded(handler: Callable) -> Callable:
    """Run a handler holding the algorithm's lock (the event loop and the algorithm's timer
    are two threads of os-ken's hub: one at a time touches the algorithm); log its
    exception instead of letting it end os-ken's event loop thread."""
    @functools.wraps(handler)
    def wrapper(self: Any, ev: Any) -> None:
        try:
            with self.lock:
                handler(self, ev)
        except Exception:  # noqa: BLE001 - os-ken's native hub would silently stop the app
            LOG.exception("controller: handler %s failed on %s", handler.__name__,
                          type(ev).__name__)
    return wrapper


def error_names(msg: Any) -> tuple[str, str]:
    """Symbolic OFPET_* type and code names of an OpenFlow 1.3 error, where known."""
    types = {v: k for k, v in vars(ofproto_v1_3).items() if k.startswith("OFPET_")}
    type_name = types.get(msg.type, str(msg.type))
    code_prefix = {"OFPET_BAD_REQUEST": "OFPBRC_", "OFPET_BAD_ACTION": "OFPBAC_",
                   "OFPET_BAD_INSTRUCTION": "OFPBIC_", "OFPET_BAD_MATCH": "OFPBMC_",
                   "OFPET_FLOW_MOD_FAILED": "OFPFMFC_", "OFPET_GROUP_MOD_FAILED": "OFPGMFC_",
                   "OFPET_PORT_MOD_FAILED": "OFPPMFC_", "OFPET_METER_MOD_FAILED": "OFPMMFC_",
                   "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_"}.get(type_name)
    codes = {v: k for k, v in vars(ofproto_v1_3).items()
             if code_prefix and k.startswith(code_prefix)}
    return type_name, codes.get(msg.code, str(msg.code))


class RailccController(app_manager.OSKenApp):
    """Feeds OpenFlow events to one algorithm and sends back what it returns."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if CONFIG is None:
            raise RuntimeError("controllers.openflow.shim: configure() was not called (use controllers.openflow.launcher)")
        self.config = CONFIG
        self.topology = load_json(CONFIG.topology_path)
        self.fabric = FabricMap(self.topology)
        self.algorithm = make_algorithm(CONFIG.algo, self.topology, **CONFIG.options)
        self.datapaths: dict[int, Any] = {}
        self.configured: set[int] = set()
        self.barriers: dict[int, int] = {}
        #: A connecting switch's program, kept until its flows are read (on_flow_stats).
        self.programs: dict[int, list[Intent]] = {}
        self.held_flows: dict[int, list[Any]] = {}
        #: Switch ports (name, port number) whose last port status said down.
        self.ports_down: set[tuple[str, int]] = set()
        self.errors = 0
        #: The experiment seed: every switch's hash basis derives from it (ofmsgs).
        self.hash_salt = int(CONFIG.options.get("seed", 0))
        self.timer_due: float | None = None
        self.timer_generation = 0
        #: One of the event loop and the timer thread at a time runs the algorithm.
        self.lock = threading.RLock()
        self.write_ready()
        LOG.info("controller: algorithm %s on topology %s (%d switches)", self.algorithm.name,
                 self.topology.name, len(self.fabric.switch_by_dpid))

    def start(self) -> Any:
        """Start the event loop and, if enabled, the port-stats poller."""
        thread = super().start()
        # Algorithms that ignore load (ecmp) are not sent port counters: polling
        # 12+ switches at 5 Hz costs CPU the emulation needs.
        if self.config.stats_interval > 0 and getattr(self.algorithm, "uses_port_stats", True):
            self.threads.append(hub.spawn(self._poll_stats))
        return thread

    def send_intents(self, intents: list[Intent]) -> None:
        """Convert intents to messages and send each to its switch, in order; then arm the
        algorithm's timer if it asks for one sooner than the armed one."""
        self._send(intents)
        self._arm_timer()

    def _arm_timer(self) -> None:
        due = self.algorithm.next_timer()
        if due is None or (self.timer_due is not None and self.timer_due <= due):
            return
        self.timer_due = due
        self.timer_generation += 1
        hub.spawn_after(max(0.0, due - time.monotonic()), self._on_timer, self.timer_generation)

    def _on_timer(self, generation: int) -> None:
        with self.lock:
            if generation != self.timer_generation:
                return  # re-armed sooner
            self.timer_due = None
            try:
                self._send(self.algorithm.timer(time.monotonic()))
            except Exception:  # noqa: BLE001 - as `guarded`: log, keep the controller alive
                LOG.exception("controller: algorithm timer failed")
            self._arm_timer()

    def _send(self, intents: list[Intent]) -> None:
        for dpid in dict.fromkeys(intent.dpid for intent in intents):
            datapath = self.datapaths.get(dpid)
            if datapath is None:
                LOG.warning("controller: dpid %#x not connected; %d intent(s) dropped", dpid,
                            sum(i.dpid == dpid for i in intents))
                continue
            for message in to_ofmsgs(datapath, intents, self.hash_salt):
                datapath.send_msg(message)

    def record(self, event: str, dpid: int, **fields: Any) -> None:
        """Append one switch or port event to controller-events.jsonl (see the module doc)."""
        if self.config.ready_file is None:
            return
        line = json.dumps({"t_ns": time.time_ns(), "event": event, "switch": self._name(dpid),
                           **fields})
        with open(Path(self.config.ready_file).with_name("controller-events.jsonl"), "a") as f:
            f.write(line + "\n")

    def write_ready(self) -> None:
        """Atomically rewrite the ready file with the configured switches."""
        if self.config.ready_file is None:
            return
        dpids = sorted(self.configured)
        names = [self.fabric.switch_by_dpid[d].name for d in dpids]
        expected = len(self.fabric.switch_by_dpid)
        state = {"configured": dpids, "names": names, "expected": expected,
                 "complete": len(dpids) == expected, "errors": self.errors}
        path = Path(self.config.ready_file)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def _name(self, dpid: int) -> str:
        node = self.fabric.switch(dpid)
        return node.name if node else "?"

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def on_features(self, ev: Any) -> None:
        """A switch connected: send its program, then a barrier."""
        datapath = ev.msg.datapath
        dpid = datapath.id
        self.datapaths[dpid] = datapath
        self.configured.discard(dpid)
        if self.fabric.switch(dpid) is None:
            LOG.error("controller: switch dpid %#x is not in topology %s; ignored", dpid,
                      self.topology.name)
            return
        self.record("connected", dpid)
        # Re-sync, never flush: read what the switch holds (it kept forwarding while no
        # controller was there), then remove only what the program no longer has.
        self.programs[dpid] = self.algorithm.switch_up(dpid, time.monotonic())
        self.held_flows[dpid] = []
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        datapath.send_msg(parser.OFPFlowStatsRequest(datapath, table_id=ofp.OFPTT_ALL))
        LOG.info("controller: switch %s dpid %#x connected; reading its flows",
                 self._name(dpid), dpid)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @guarded
    def on_flow_stats(self, ev: Any) -> None:
        """The flows a connecting switch holds: send its program, delete what the program
        no longer has (before the program, so a flow keyed differently is replaced, not
        lost), then a barrier."""
        msg = ev.msg
        datapath, dpid = msg.datapath, msg.datapath.id
        if dpid not in self.programs:
            return
        self.held_flows[dpid] += list(msg.body)
        if msg.flags & datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        intents = [i for i in self.programs.pop(dpid) if not isinstance(i, ClearSwitch)]
        held = self.held_flows.pop(dpid)
        program = to_ofmsgs(datapath, intents, self.hash_salt)
        wanted = {flow_key(m.table_id, m.priority, m.match) for m in program
                  if hasattr(m, "table_id")}
        stale = [f for f in held if flow_key(f.table_id, f.priority, f.match) not in wanted]
        for flow in stale:
            datapath.send_msg(delete_strict(datapath, flow))
        unchanged = unchanged_adds(program, held)
        for index, message in enumerate(program):
            if index not in unchanged:
                datapath.send_msg(message)
        self._arm_timer()
        barrier = datapath.ofproto_parser.OFPBarrierRequest(datapath)
        self.barriers[dpid] = datapath.set_xid(barrier)
        datapath.send_msg(barrier)
        LOG.info("controller: switch %s dpid %#x: %d intents, %d messages sent; it held %d "
                 "flows, %d kept (%d unchanged), %d stale removed", self._name(dpid), dpid,
                 len(intents), len(program) - len(unchanged), len(held),
                 len(held) - len(stale), len(unchanged), len(stale))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @guarded
    def on_barrier(self, ev: Any) -> None:
        """The switch processed everything before the barrier: mark it configured."""
        dpid = ev.msg.datapath.id
        if self.barriers.get(dpid) != ev.msg.xid:
            return
        del self.barriers[dpid]
        self.configured.add(dpid)
        self.write_ready()
        self.record("configured", dpid)
        LOG.info("controller: switch %s dpid %#x configured (%d/%d)", self._name(dpid), dpid,
                 len(self.configured), len(self.fabric.switch_by_dpid))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def on_state(self, ev: Any) -> None:
        """A switch disconnected: forget it."""
        datapath = ev.datapath
        if ev.state != DEAD_DISPATCHER or datapath.id is None:
            return
        dpid = datapath.id
        if self.datapaths.get(dpid) is not datapath:
            return
        del self.datapaths[dpid]
        self.barriers.pop(dpid, None)
        self.programs.pop(dpid, None)  # gone before its flows were read
        self.held_flows.pop(dpid, None)
        self.configured.discard(dpid)
        self.write_ready()
        self.algorithm.switch_down(dpid, time.monotonic())
        self.record("disconnected", dpid)
        LOG.warning("controller: switch %s dpid %#x disconnected", self._name(dpid), dpid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER,
                                             MAIN_DISPATCHER])
    @guarded
    def on_error(self, ev: Any) -> None:
        """Log every OpenFlow error loudly (tests fail on any)."""
        msg = ev.msg
        self.errors += 1
        type_name, code_name = error_names(msg)
        dpid = msg.datapath.id
        LOG.error("OFPErrorMsg from switch %s dpid %s: type=%s code=%s xid=%s data=%s",
                  self._name(dpid) if dpid is not None else "?",
                  f"{dpid:#x}" if dpid is not None else "?", type_name, code_name, msg.xid,
                  bytes(msg.data[:64]).hex())
        self.write_ready()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def on_packet_in(self, ev: Any) -> None:
        """A punted packet (ARP, in-band control) goes to the algorithm."""
        msg = ev.msg
        intents = self.algorithm.packet_in(msg.datapath.id, msg.match["in_port"], bytes(msg.data),
                                           time.monotonic())
        self.send_intents(intents)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def on_port_status(self, ev: Any) -> None:
        """A port changed: tell the algorithm if it is a fabric link."""
        msg = ev.msg
        ofp = msg.datapath.ofproto
        desc = msg.desc
        up = (msg.reason != ofp.OFPPR_DELETE and not desc.state & ofp.OFPPS_LINK_DOWN
              and not desc.config & ofp.OFPPC_PORT_DOWN)
        node = self.fabric.switch(msg.datapath.id)
        peer = self.fabric.peer(node.name, desc.port_no) if node else None
        self.record("port", msg.datapath.id, port=desc.port_no, up=up)
        LOG.info("controller: port %s:%s %s (reason=%s config=%#x state=%#x)",
                 self._name(msg.datapath.id), desc.port_no, "up" if up else "down", msg.reason,
                 desc.config, desc.state)
        if peer is None:
            return
        # A link is up while both its ends are: OVS also sends MODIFY messages that only
        # repeat an end's state (seen: "up" from the far end of a link cut at the other),
        # and the algorithm hears only of the link changing.
        link = peer.link
        was_up = not {(link.a.node, link.a.port), (link.b.node, link.b.port)} & self.ports_down
        if up:
            self.ports_down.discard((node.name, desc.port_no))
        else:
            self.ports_down.add((node.name, desc.port_no))
        is_up = not {(link.a.node, link.a.port), (link.b.node, link.b.port)} & self.ports_down
        if is_up != was_up:
            self.send_intents(self.algorithm.link_change(link, is_up, time.monotonic()))

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    @guarded
    def on_port_stats(self, ev: Any) -> None:
        """Port counters of one switch go to the algorithm."""
        msg = ev.msg
        ofp = msg.datapath.ofproto
        stats = [PortCounters(s.port_no, s.rx_packets, s.tx_packets, s.rx_bytes, s.tx_bytes,
                              s.rx_dropped, s.tx_dropped, s.rx_errors, s.tx_errors,
                              s.duration_sec + s.duration_nsec / 1e9)
                 for s in msg.body if s.port_no <= ofp.OFPP_MAX]
        self.send_intents(self.algorithm.port_stats(msg.datapath.id, stats, time.monotonic()))

    def _poll_stats(self) -> None:
        """Ask every configured switch for its port counters every ``stats_interval`` s,
        one switch at a time, spread over the interval (`staggered`)."""
        while True:
            targets = [dpid for dpid in sorted(self.datapaths) if dpid in self.configured]
            if not targets:
                hub.sleep(self.config.stats_interval)
            for gap, dpid in staggered(targets, self.config.stats_interval):
                hub.sleep(gap)
                datapath = self.datapaths.get(dpid)
                if datapath is None:
                    continue
                try:
                    parser, ofp = datapath.ofproto_parser, datapath.ofproto
                    datapath.send_msg(parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY))
                except Exception:  # noqa: BLE001 - a dying switch must not stop polling
                    LOG.exception("controller: port stats request to %#x failed", dpid)


def staggered(dpids: list[int], interval: float) -> list[tuple[float, int]]:
    """(sleep before, dpid) for one round of port-stats requests: evenly spread over
    ``interval``. OVS answers a request in its forwarding thread, a netlink read per
    port: sent together, a fabric's requests made one turn of 2-6 ms every round on
    rail-2tier-small, a stall every frame behind it waits out (benchmarks/RESULTS.md,
    "The datapath judged by its turns")."""
    gap = interval / max(1, len(dpids))
    return [(gap, dpid) for dpid in dpids]
