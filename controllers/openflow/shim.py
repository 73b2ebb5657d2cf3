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
"""

from __future__ import annotations

import functools
import json
import logging
import os
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
from controllers.core.intents import Intent
from controllers.openflow.ofmsgs import to_ofmsgs
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
    """Log a handler's exception instead of letting it end os-ken's event loop thread."""
    @functools.wraps(handler)
    def wrapper(self: Any, ev: Any) -> None:
        try:
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
        self.errors = 0
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
        """Convert intents to messages and send each to its switch, in order."""
        for dpid in dict.fromkeys(intent.dpid for intent in intents):
            datapath = self.datapaths.get(dpid)
            if datapath is None:
                LOG.warning("controller: dpid %#x not connected; %d intent(s) dropped", dpid,
                            sum(i.dpid == dpid for i in intents))
                continue
            for message in to_ofmsgs(datapath, intents):
                datapath.send_msg(message)

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
        intents = self.algorithm.switch_up(dpid, time.monotonic())
        self.send_intents(intents)
        barrier = datapath.ofproto_parser.OFPBarrierRequest(datapath)
        self.barriers[dpid] = datapath.set_xid(barrier)
        datapath.send_msg(barrier)
        LOG.info("controller: switch %s dpid %#x connected; %d intents sent", self._name(dpid),
                 dpid, len(intents))

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
        self.configured.discard(dpid)
        self.write_ready()
        self.algorithm.switch_down(dpid, time.monotonic())
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
        LOG.info("controller: port %s:%s %s (reason=%s config=%#x state=%#x)",
                 self._name(msg.datapath.id), desc.port_no, "up" if up else "down", msg.reason,
                 desc.config, desc.state)
        if peer is not None:
            self.send_intents(self.algorithm.link_change(peer.link, up, time.monotonic()))

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
        """Ask every configured switch for its port counters every ``stats_interval`` s."""
        while True:
            hub.sleep(self.config.stats_interval)
            for dpid, datapath in list(self.datapaths.items()):
                if dpid not in self.configured:
                    continue
                try:
                    parser, ofp = datapath.ofproto_parser, datapath.ofproto
                    datapath.send_msg(parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY))
                except Exception:  # noqa: BLE001 - a dying switch must not stop polling
                    LOG.exception("controller: port stats request to %#x failed", dpid)
