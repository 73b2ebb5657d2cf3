"""Intents -> OpenFlow 1.3 messages for one datapath (uses only its ofproto and parser).

Each function builds messages and sends nothing, so they can be serialized in
unit tests with a stand-in datapath (an object with ``ofproto`` and
``ofproto_parser``).

Select groups are realized as *hash tables*, not OpenFlow groups: Open
vSwitch's default select-group hash (dp_hash, symmetric L4) leaves UDP ports
out, so every RoCEv2 flow between two NICs (UDP 4791, entropy in the source
port) would land on one bucket, and choosing another hash needs OpenFlow 1.5
group properties. Instead a rule pointing at select group G loads G into
reg1, hashes the 5-tuple including UDP ports into reg0 (Nicira `multipath`,
fields symmetric_l3l4+udp, basis = the hash salt) over HASH_SLOTS slots and
continues in HASH_TABLE, where (reg1=G, reg0=slot) outputs on the slot's
bucket. Buckets get slots in proportion to their weights, interleaved (slot s
goes to the (s mod L)-th of the L weighted bucket copies). When L divides
HASH_SLOTS (equal weights over 1, 2, 4, 8... ports, every healthy fabric here)
slot s's port depends only on s's low bits, so one masked entry per residue r
(reg0 = r under a mask of L - 1 and every bit above the slots) stands for its
HASH_SLOTS / L slots: the same mapping in L entries instead of HASH_SLOTS (a
64 x 8 fabric in 8 pods sent each ToR 4,105 flow-mods, 19 s of controller time in
all). Per-bucket statistics are the flow statistics of those entries.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from controllers.core.ecmp_hash import HASH_SLOTS, switch_hash_basis
from controllers.core.intents import (Action, Bucket, ClearSwitch, FlowRule, Group, Intent, Output,
                                      PacketOut, ToController, ToGroup)

LOG = logging.getLogger(__name__)

HASH_TABLE = 100
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3   # enum nx_hash_fields in Open vSwitch
NX_MP_ALG_MODULO_N = 0


def hash_slots(buckets: Iterable[Bucket], slots: int = HASH_SLOTS) -> list[int]:
    """Output port of every hash slot: buckets interleaved, in proportion to their weights."""
    expanded = [bucket.port for bucket in buckets for _ in range(max(1, bucket.weight))]
    return [expanded[slot % len(expanded)] for slot in range(slots)] if expanded else []


def hash_actions(datapath: Any, group_id: int, salt: int = 0) -> list[Any]:
    """Actions that pick a slot of select group ``group_id`` by 5-tuple hash (see module doc)."""
    parser = datapath.ofproto_parser
    from os_ken.ofproto import nicira_ext
    return [
        parser.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 31), dst="reg1", value=group_id),
        parser.NXActionMultipath(fields=NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, basis=salt & 0xFFFF,
                                 algorithm=NX_MP_ALG_MODULO_N, max_link=HASH_SLOTS - 1, arg=0,
                                 ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst="reg0"),
    ]


def actions(datapath: Any, wanted: Iterable[Action], salt: int = 0) -> list[Any]:
    """OpenFlow action objects for intent actions (a group becomes the hash actions)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    out = []
    for action in wanted:
        if isinstance(action, Output):
            out.append(parser.OFPActionOutput(action.port))
        elif isinstance(action, ToGroup):
            out += hash_actions(datapath, action.group_id, salt)
        elif isinstance(action, ToController):
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len))
        else:
            raise TypeError(f"ofmsgs: unknown action {action!r}")
    return out


def flow_mod(datapath: Any, rule: FlowRule, salt: int = 0) -> Any:
    """OFPFlowMod adding (or strictly deleting) one flow rule."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    match = parser.OFPMatch(**dict(rule.match))
    if rule.command == "delete":
        return parser.OFPFlowMod(datapath, table_id=rule.table, command=ofp.OFPFC_DELETE_STRICT,
                                 priority=rule.priority, match=match,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    instructions = []
    if rule.actions:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                         actions(datapath, rule.actions, salt)))
    if any(isinstance(action, ToGroup) for action in rule.actions):
        instructions.append(parser.OFPInstructionGotoTable(HASH_TABLE))
    return parser.OFPFlowMod(datapath, table_id=rule.table, command=ofp.OFPFC_ADD,
                             priority=rule.priority, match=match, instructions=instructions)


def hash_group_mods(datapath: Any, group: Group) -> list[Any]:
    """Hash-table entries realizing a select group (add writes them, modify clears and
    rewrites them, delete clears them)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    clear = parser.OFPFlowMod(datapath, table_id=HASH_TABLE, command=ofp.OFPFC_DELETE,
                              out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                              match=parser.OFPMatch(reg1=group.group_id))
    if group.command == "delete" or not group.buckets:
        return [clear]
    adds = [parser.OFPFlowMod(
        datapath, table_id=HASH_TABLE, command=ofp.OFPFC_ADD, priority=1,
        match=parser.OFPMatch(reg0=reg0, reg1=group.group_id),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                   [parser.OFPActionOutput(port)])])
        for reg0, port in slot_entries(group.buckets)]
    # A modified group may change layout (masked residues or one entry per slot), whose
    # entries would overlap the old ones: clear it first. (ECMP never modifies a group:
    # a new bucket set is a new group, controllers/algorithms/ecmp.py.)
    return ([clear] if group.command == "modify" else []) + adds


def slot_entries(buckets: Iterable[Bucket]) -> list[tuple[Any, int]]:
    """(reg0 match, port) of each hash-table entry of a group: one per residue, masked,
    when the weighted bucket copies divide HASH_SLOTS; one per slot otherwise."""
    slots = hash_slots(buckets)
    period = len(slots) and min(p for p in range(1, len(slots) + 1)
                                if len(slots) % p == 0 and slots[:p] * (len(slots) // p) == slots)
    if period and period & (period - 1) == 0 and period < len(slots):
        mask = 0xFFFFFFFF & ~(HASH_SLOTS - 1) | (period - 1)
        return [((residue, mask), slots[residue]) for residue in range(period)]
    return list(enumerate(slots))


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


def flow_key(table_id: int, priority: int, match: Any) -> tuple:
    """What identifies a flow entry in OpenFlow: its table, priority and match."""
    return (table_id, priority, tuple(sorted(match.items(), key=lambda item: item[0])))


def instruction_bytes(instructions: Iterable[Any]) -> bytes:
    """Instructions as they go on the wire: equal bytes, equal behaviour."""
    buf = bytearray()
    for instruction in instructions:
        instruction.serialize(buf, len(buf))
    return bytes(buf)


def unchanged_adds(program: Iterable[Any], held: Iterable[Any]) -> set[int]:
    """Indices of the program's flow adds that a switch already holds exactly (same
    table, priority, match, cookie and instructions): re-adding them would only reset
    their counters, so a re-sync need not send them."""
    have = {flow_key(f.table_id, f.priority, f.match): (f.cookie, instruction_bytes(f.instructions))
            for f in held}
    same = set()
    for index, message in enumerate(program):
        if getattr(message, "command", None) != message.datapath.ofproto.OFPFC_ADD:
            continue
        key = flow_key(message.table_id, message.priority, message.match)
        if have.get(key) == (message.cookie, instruction_bytes(message.instructions)):
            same.add(index)
    return same


def delete_strict(datapath: Any, flow: Any) -> Any:
    """OFPFlowMod deleting exactly one flow entry a switch reported (a flow-stats entry)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowMod(datapath, table_id=flow.table_id, command=ofp.OFPFC_DELETE_STRICT,
                             priority=flow.priority, match=flow.match, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY)


def to_ofmsgs(datapath: Any, intents: Iterable[Intent], salt: int = 0) -> list[Any]:
    """OpenFlow messages for the intents aimed at this datapath, in order (others are skipped)."""
    dpid = datapath.id
    salt = switch_hash_basis(salt, dpid)
    messages: list[Any] = []
    for intent in intents:
        if getattr(intent, "dpid", dpid) != dpid:
            continue
        if isinstance(intent, FlowRule):
            messages.append(flow_mod(datapath, intent, salt))
        elif isinstance(intent, Group):
            messages += hash_group_mods(datapath, intent)
        elif isinstance(intent, ClearSwitch):
            messages += clear_switch(datapath)
        elif isinstance(intent, PacketOut):
            messages.append(packet_out(datapath, intent))
        else:
            LOG.warning("ofmsgs: %s is not an intent; skipped", type(intent).__name__)
    return messages
