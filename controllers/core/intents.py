"""Intents: what an algorithm wants the fabric to do, as plain frozen data.

Algorithms return lists of these; the os-ken shim (`controllers.openflow.ofmsgs`)
turns them into OpenFlow 1.3 messages, which the unit tests' fake flow table
runs. Order matters: a list is sent in order, so a `Group`
must come before any `FlowRule` that points at it.

Match fields use OpenFlow 1.3 OXM names as os-ken spells them (``in_port``,
``eth_type``, ``arp_op``, ``ipv4_dst``, ...). A masked field is a
``(value, mask)`` pair, e.g. ``{"eth_type": 0x0800,
"ipv4_dst": ("10.1.0.0", "255.255.255.0")}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Union

#: Flow commands: ``add`` (also replaces a rule with the same match and
#: priority) and ``delete`` (strict: exactly this match and priority).
FLOW_COMMANDS = ("add", "delete")
#: Only select groups (ECMP); `controllers.openflow.ofmsgs` realizes them as hash tables.
GROUP_TYPES = ("select",)
GROUP_COMMANDS = ("add", "modify", "delete")


@dataclass(frozen=True)
class Output:
    """Action: send the packet out of switch port ``port``."""

    port: int


@dataclass(frozen=True)
class ToGroup:
    """Action: hand the packet to group ``group_id``."""

    group_id: int


@dataclass(frozen=True)
class ToController:
    """Action: punt the packet to the controller (packet-in), up to ``max_len`` bytes."""

    max_len: int = 0xFFFF


Action = Union[Output, ToGroup, ToController]


@dataclass(frozen=True)
class FlowRule:
    """One flow entry; no actions means drop."""

    dpid: int
    priority: int
    match: Mapping[str, Any] = field(default_factory=dict, hash=False)
    actions: tuple[Action, ...] = ()
    table: int = 0
    command: str = "add"

    def __post_init__(self) -> None:
        if self.command not in FLOW_COMMANDS:
            raise ValueError(f"FlowRule.command: must be one of {FLOW_COMMANDS}, got {self.command!r}")
        object.__setattr__(self, "match", MappingProxyType(dict(self.match)))
        object.__setattr__(self, "actions", tuple(self.actions))

    def key(self) -> tuple[int, int, int, tuple]:
        """Identity of the entry on its switch: (dpid, table, priority, sorted match items)."""
        return (self.dpid, self.table, self.priority, tuple(sorted(self.match.items())))


@dataclass(frozen=True)
class Bucket:
    """One group bucket: forward out of ``port`` with relative ``weight`` (select groups)."""

    port: int
    weight: int = 1


@dataclass(frozen=True)
class Group:
    """A group entry; ``select`` hashes each flow onto one bucket (ECMP)."""

    dpid: int
    group_id: int
    type: str = "select"
    buckets: tuple[Bucket, ...] = ()
    command: str = "add"

    def __post_init__(self) -> None:
        if self.type not in GROUP_TYPES:
            raise ValueError(f"Group.type: must be one of {GROUP_TYPES}, got {self.type!r}")
        if self.command not in GROUP_COMMANDS:
            raise ValueError(f"Group.command: must be one of {GROUP_COMMANDS}, got {self.command!r}")
        object.__setattr__(self, "buckets", tuple(self.buckets))


@dataclass(frozen=True)
class ClearSwitch:
    """Delete every flow (all tables) and every group of a switch; sent before a full program."""

    dpid: int


@dataclass(frozen=True)
class PacketOut:
    """Send raw frame ``data`` out of ``out_port``; ``in_port`` None means from the controller."""

    dpid: int
    out_port: int
    data: bytes
    in_port: int | None = None


Intent = Union[FlowRule, Group, ClearSwitch, PacketOut]
