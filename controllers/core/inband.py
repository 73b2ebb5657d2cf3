"""In-band control frames between NICs and the controller (pure, struct only).

NICs send FLOW_REQUEST / FLOW_DONE (fabric/nic/wire.py) as UDP 4791 datagrams to
the virtual fabric manager ``wire.MANAGER_IP``; ToRs punt them to the
controller (`punt_rule`). The controller answers with RATE_GRANT or CNP
frames it builds here and sends as packet-outs on the NIC's ToR port, from
the manager's address, so the NIC's kernel delivers them to its UDP socket.
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

from controllers.core.arp import ETH_TYPE_IPV4, mac_to_bytes
from fabric.nic import wire
from fabric.nic.wire import ETH_HEADER, IPV4_HEADER, UDP_HEADER

IP_PROTO_UDP = 17
_HEADERS = ETH_HEADER.size + IPV4_HEADER.size + UDP_HEADER.size


@dataclass(frozen=True)
class ControlPacket:
    """A control message a NIC sent to the fabric manager, and who sent it."""

    src_mac: str
    src_ip: str
    message: wire.Message


def manager_match() -> dict:
    """OpenFlow match of UDP 4791 datagrams addressed to the fabric manager."""
    return {"eth_type": ETH_TYPE_IPV4, "ip_proto": IP_PROTO_UDP, "ipv4_dst": wire.MANAGER_IP,
            "udp_dst": wire.ROCE_PORT}


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def control_frame(dst_mac: str, dst_ip: str, message: wire.Message, ident: int = 0) -> bytes:
    """Ethernet/IPv4/UDP frame from the manager to a NIC carrying ``message`` (UDP 4791)."""
    payload = wire.encode(message)
    frame = _headers(dst_mac, dst_ip, len(payload), ident & 0xFFFF) + payload
    return frame + bytes(max(0, 60 - len(frame)))


@functools.lru_cache(maxsize=65536)
def _headers(dst_mac: str, dst_ip: str, payload_len: int, ident: int) -> bytes:
    """Ethernet + IPv4 + UDP headers of a control frame (the same for every grant to a NIC)."""
    udp = UDP_HEADER.pack(wire.ROCE_PORT, wire.ROCE_PORT, UDP_HEADER.size + payload_len, 0)
    total = IPV4_HEADER.size + len(udp) + payload_len
    src, dst = socket.inet_aton(wire.MANAGER_IP), socket.inet_aton(dst_ip)
    header = IPV4_HEADER.pack(0x45, 0, total, ident, 0x4000, 64, IP_PROTO_UDP, 0, src, dst)
    header = IPV4_HEADER.pack(0x45, 0, total, ident, 0x4000, 64, IP_PROTO_UDP,
                              _checksum(header), src, dst)
    eth = ETH_HEADER.pack(mac_to_bytes(dst_mac), mac_to_bytes(wire.MANAGER_MAC), ETH_TYPE_IPV4)
    return eth + header + udp


def parse_control(frame: bytes) -> ControlPacket | None:
    """The in-band control message in a punted frame, or None if it is anything else."""
    if len(frame) < _HEADERS + wire.BTH_LEN + wire.ICRC_LEN:
        return None
    _, src_mac, eth_type = ETH_HEADER.unpack_from(frame)
    if eth_type != ETH_TYPE_IPV4:
        return None
    ver_ihl, _, total, _, _, _, proto, _, src, dst = IPV4_HEADER.unpack_from(frame, ETH_HEADER.size)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or proto != IP_PROTO_UDP or socket.inet_ntoa(dst) != wire.MANAGER_IP:
        return None
    udp_at = ETH_HEADER.size + ihl
    _, dport, length, _ = UDP_HEADER.unpack_from(frame, udp_at)
    if dport != wire.ROCE_PORT:
        return None
    payload = frame[udp_at + UDP_HEADER.size: udp_at + length]
    try:
        message = wire.decode(payload)
    except wire.WireError:
        return None
    return ControlPacket(":".join(f"{b:02x}" for b in src_mac), socket.inet_ntoa(src), message)
