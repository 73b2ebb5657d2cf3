"""A fake Open vSwitch pipeline run on the real OpenFlow messages `to_ofmsgs` builds.

`OFPipeline` keeps the flow tables of one switch as os-ken messages program
them (flow-mod add / delete / strict delete, table ``OFPTT_ALL``) and runs a
packet through them the way OVS does: highest priority match per table,
apply-actions (output, controller, Nicira ``reg_load`` and ``multipath``),
then goto-table. So ECMP is traced through the real hash actions and
HASH_TABLE slots, not a hash of the test's own.

The multipath hash stands in for OVS's: it covers exactly the fields
``nx_hash_fields`` names (UDP ports only for ``symmetric_l3l4+udp``),
symmetrically, seeded by the basis, and is reduced ``modulo_n`` over
``max_link + 1`` links. Its value differs from OVS's; its dependencies do not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

#: nx_hash_fields -> the packet fields it hashes, as (single fields, symmetric pairs).
_L3 = (("ipv4_src", "ipv4_dst"),)
_TCP = (("tcp_src", "tcp_dst"),)
_UDP = (("udp_src", "udp_dst"),)
HASH_FIELDS = {
    0: (("eth_src",), ()),
    1: (("eth_type", "ip_proto"), (("eth_src", "eth_dst"),) + _L3 + _TCP),
    2: (("eth_type", "ip_proto"), _L3 + _TCP),
    3: (("eth_type", "ip_proto"), _L3 + _TCP + _UDP),
    4: (("ipv4_src",), ()),
    5: (("ipv4_dst",), ()),
    6: (("eth_type", "ip_proto"), _L3),
}
NX_MP_ALG_MODULO_N = 0


class PipelineError(AssertionError):
    """A message or action the fake (or OVS) would not accept."""


def multipath_link(fields: int, basis: int, algorithm: int, max_link: int,
                   packet: dict[str, Any]) -> int:
    """The link (0..max_link) Nicira multipath picks for ``packet``."""
    if fields not in HASH_FIELDS or algorithm != NX_MP_ALG_MODULO_N:
        raise PipelineError(f"multipath: unsupported fields={fields} algorithm={algorithm}")
    singles, pairs = HASH_FIELDS[fields]
    words = [str(packet.get(name)) for name in singles]
    words += ["~".join(sorted(str(packet.get(name)) for name in pair)) for pair in pairs]
    digest = hashlib.blake2b("|".join(words).encode(), digest_size=8,
                             key=basis.to_bytes(2, "big")).digest()
    return int.from_bytes(digest, "big") % (max_link + 1)


def _bits(ofs_nbits: int) -> tuple[int, int]:
    """(offset, width) of a Nicira ``ofs_nbits`` field."""
    return ofs_nbits >> 6, (ofs_nbits & 0x3F) + 1


def _write(packet: dict[str, Any], register: str, ofs_nbits: int, value: int) -> None:
    offset, width = _bits(ofs_nbits)
    mask = ((1 << width) - 1) << offset
    packet[register] = (packet.get(register, 0) & ~mask) | ((value << offset) & mask)


@dataclass(frozen=True)
class Entry:
    """One flow entry as installed: priority, match fields, instructions."""

    priority: int
    match: tuple
    instructions: tuple


class OFPipeline:
    """Flow tables of one switch, programmed by os-ken OpenFlow 1.3 messages."""

    def __init__(self, matches: Any) -> None:
        self.matches = matches  # (field name, wanted, packet value) -> bool
        self.tables: dict[int, dict[tuple, Entry]] = {}

    def apply(self, message: Any) -> None:
        """Install one message as OVS would (flow mods; group mods only as 'delete all')."""
        kind = type(message).__name__
        if kind == "OFPGroupMod":
            if (message.command, message.group_id) != (ofp.OFPGC_DELETE, ofp.OFPG_ALL):
                raise PipelineError("the program should not need OpenFlow groups")
            return
        if kind in ("OFPPacketOut", "OFPBarrierRequest"):
            return
        if kind != "OFPFlowMod":
            raise PipelineError(f"unexpected message {kind}")
        match = tuple(sorted(message.match.items()))
        tables = list(self.tables) if message.table_id == ofp.OFPTT_ALL else [message.table_id]
        if message.command == ofp.OFPFC_ADD:
            entries = self.tables.setdefault(message.table_id, {})
            entries[(message.priority, match)] = Entry(message.priority, match,
                                                       tuple(message.instructions))
        elif message.command == ofp.OFPFC_DELETE_STRICT:
            for table in tables:
                self.tables.get(table, {}).pop((message.priority, match), None)
        elif message.command == ofp.OFPFC_DELETE:
            for table in tables:
                entries = self.tables.get(table, {})
                for key in [k for k, e in entries.items() if set(match) <= set(e.match)]:
                    del entries[key]
        else:
            raise PipelineError(f"flow mod command {message.command}")

    def lookup(self, table: int, packet: dict[str, Any]) -> Entry | None:
        """The highest-priority entry of ``table`` matching; PipelineError on a tie."""
        best: list[Entry] = []
        for entry in self.tables.get(table, {}).values():
            if all(self.matches(k, v, packet.get(k)) for k, v in entry.match):
                if not best or entry.priority > best[0].priority:
                    best = [entry]
                elif entry.priority == best[0].priority:
                    best.append(entry)
        if len(best) > 1:
            raise PipelineError(f"table {table}: ambiguous match at priority {best[0].priority}")
        return best[0] if best else None

    def outputs(self, packet: dict[str, Any]) -> list[int | str]:
        """Ports (or ``"controller"``) the packet leaves by after the whole pipeline."""
        packet, table, out = dict(packet), 0, []
        while table is not None:
            entry = self.lookup(table, packet)
            if entry is None:
                return out
            table = None
            for instruction in entry.instructions:
                name = type(instruction).__name__
                if name == "OFPInstructionActions":
                    out += self._actions(instruction.actions, packet)
                elif name == "OFPInstructionGotoTable":
                    table = instruction.table_id
                else:
                    raise PipelineError(f"instruction {name}")
        return out

    def _actions(self, actions: Any, packet: dict[str, Any]) -> list[int | str]:
        out: list[int | str] = []
        for action in actions:
            name = type(action).__name__
            if name == "OFPActionOutput":
                out.append("controller" if action.port == ofp.OFPP_CONTROLLER else action.port)
            elif name == "NXActionRegLoad":
                _write(packet, action.dst, action.ofs_nbits, action.value)
            elif name == "NXActionMultipath":
                link = multipath_link(action.fields, action.basis, action.algorithm,
                                      action.max_link, packet)
                _write(packet, action.dst, action.ofs_nbits, link)
            else:
                raise PipelineError(f"action {name}")
        return out
