"""Intents -> OpenFlow 1.3 messages for one datapath (uses only its ofproto and parser).

Each function builds messages and sends nothing, so they can be serialized in
unit tests with a stand-in datapath (an object with ``ofproto`` and
``ofproto_parser``).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from controllers.intents import (Action, ClearSwitch, FlowRule, Group, Intent, Meter, Output,
                                 PacketOut, ToController, ToGroup)

LOG = logging.getLogger(__name__)

_GROUP_COMMAND = {"add": "OFPGC_ADD", "modify": "OFPGC_MODIFY", "delete": "OFPGC_DELETE"}
_GROUP_TYPE = {"select": "OFPGT_SELECT", "indirect": "OFPGT_INDIRECT", "all": "OFPGT_ALL"}
_METER_COMMAND = {"add": "OFPMC_ADD", "modify": "OFPMC_MODIFY", "delete": "OFPMC_DELETE"}


def actions(datapath: Any, wanted: Iterable[Action]) -> list[Any]:
    """OpenFlow action objects for intent actions."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    out = []
    for action in wanted:
        if isinstance(action, Output):
            out.append(parser.OFPActionOutput(action.port))
        elif isinstance(action, ToGroup):
            out.append(parser.OFPActionGroup(action.group_id))
        elif isinstance(action, ToController):
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len))
        else:
            raise TypeError(f"ofmsgs: unknown action {action!r}")
    return out


def flow_mod(datapath: Any, rule: FlowRule) -> Any:
    """OFPFlowMod adding (or strictly deleting) one flow rule."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    match = parser.OFPMatch(**dict(rule.match))
    if rule.command == "delete":
        return parser.OFPFlowMod(datapath, table_id=rule.table, command=ofp.OFPFC_DELETE_STRICT,
                                 priority=rule.priority, match=match,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    instructions = []
    if rule.meter_id is not None:
        instructions.append(parser.OFPInstructionMeter(rule.meter_id, ofp.OFPIT_METER))
    if rule.actions:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                         actions(datapath, rule.actions)))
    return parser.OFPFlowMod(datapath, table_id=rule.table, command=ofp.OFPFC_ADD,
                             priority=rule.priority, match=match, instructions=instructions)


def group_mod(datapath: Any, group: Group) -> Any:
    """OFPGroupMod for a group; each bucket watches its output port (dead ports are skipped)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    buckets = []
    if group.command != "delete":
        for bucket in group.buckets:
            weight = bucket.weight if group.type == "select" else 0
            buckets.append(parser.OFPBucket(weight=weight, watch_port=bucket.port,
                                            watch_group=ofp.OFPG_ANY,
                                            actions=[parser.OFPActionOutput(bucket.port)]))
    return parser.OFPGroupMod(datapath, command=getattr(ofp, _GROUP_COMMAND[group.command]),
                              type_=getattr(ofp, _GROUP_TYPE[group.type]),
                              group_id=group.group_id, buckets=buckets)


def meter_mod(datapath: Any, meter: Meter) -> Any:
    """OFPMeterMod with one drop band (kb/s)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    flags = ofp.OFPMF_KBPS | (ofp.OFPMF_BURST if meter.burst_kb else 0)
    bands = [] if meter.command == "delete" else [
        parser.OFPMeterBandDrop(rate=meter.rate_kbps, burst_size=meter.burst_kb)]
    return parser.OFPMeterMod(datapath, command=getattr(ofp, _METER_COMMAND[meter.command]),
                              flags=flags, meter_id=meter.meter_id, bands=bands)


def packet_out(datapath: Any, out: PacketOut) -> Any:
    """OFPPacketOut sending raw bytes out of one port."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    in_port = ofp.OFPP_CONTROLLER if out.in_port is None else out.in_port
    return parser.OFPPacketOut(datapath, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                               actions=[parser.OFPActionOutput(out.out_port)], data=out.data)


def clear_switch(datapath: Any) -> list[Any]:
    """Delete every flow in every table, then every group."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return [
        parser.OFPFlowMod(datapath, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
        parser.OFPGroupMod(datapath, command=ofp.OFPGC_DELETE, group_id=ofp.OFPG_ALL),
    ]


def to_ofmsgs(datapath: Any, intents: Iterable[Intent]) -> list[Any]:
    """OpenFlow messages for the intents aimed at this datapath, in order.

    Intents for other datapaths are skipped; rate grants and congestion
    notifications are not OpenFlow messages (they travel as packet-outs once
    an algorithm builds them) and are logged and skipped here.
    """
    dpid = datapath.id
    messages: list[Any] = []
    for intent in intents:
        if getattr(intent, "dpid", dpid) != dpid:
            continue
        if isinstance(intent, FlowRule):
            messages.append(flow_mod(datapath, intent))
        elif isinstance(intent, Group):
            messages.append(group_mod(datapath, intent))
        elif isinstance(intent, ClearSwitch):
            messages += clear_switch(datapath)
        elif isinstance(intent, PacketOut):
            messages.append(packet_out(datapath, intent))
        elif isinstance(intent, Meter):
            messages.append(meter_mod(datapath, intent))
        else:
            LOG.warning("ofmsgs: %s is not an OpenFlow message; skipped", type(intent).__name__)
    return messages
