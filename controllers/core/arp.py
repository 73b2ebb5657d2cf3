"""Parse ARP requests and build ARP replies from raw Ethernet frames (struct only, pure)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from fabric.nic.wire import ETH_HEADER

ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV4 = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True)
class ArpPacket:
    """The fields of an Ethernet/IPv4 ARP packet that matter here."""

    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def mac_to_bytes(mac: str) -> bytes:
    """``"02:00:01:00:00:03"`` -> 6 bytes."""
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_to_str(raw: bytes) -> str:
    """6 bytes -> lower-case colon-separated MAC."""
    return ":".join(f"{b:02x}" for b in raw)


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP packet in an Ethernet frame, or None if it is not Ethernet/IPv4 ARP."""
    if len(frame) < ETH_HEADER.size + _ARP.size:
        return None
    _, _, eth_type = ETH_HEADER.unpack_from(frame)
    if eth_type != ETH_TYPE_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, ETH_HEADER.size)
    if (htype, ptype, hlen, plen) != (1, ETH_TYPE_IPV4, 6, 4):
        return None
    return ArpPacket(op, mac_to_str(sha), socket.inet_ntoa(spa), mac_to_str(tha),
                     socket.inet_ntoa(tpa))


def arp_reply(request: ArpPacket, answer_mac: str) -> bytes:
    """The Ethernet frame answering ``request``: ``target_ip is-at answer_mac``."""
    eth = ETH_HEADER.pack(mac_to_bytes(request.sender_mac), mac_to_bytes(answer_mac), ETH_TYPE_ARP)
    arp = _ARP.pack(1, ETH_TYPE_IPV4, 6, 4, ARP_REPLY,
                    mac_to_bytes(answer_mac), socket.inet_aton(request.target_ip),
                    mac_to_bytes(request.sender_mac), socket.inet_aton(request.sender_ip))
    return eth + arp + bytes(60 - len(eth) - len(arp))
