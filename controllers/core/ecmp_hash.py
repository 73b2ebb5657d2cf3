"""The switches' ECMP hash, as a pure model (basis, slots, and the slot of a UDP flow).

Every select group is a hash table (controllers/openflow/ofmsgs.py): Nicira
`multipath` with fields ``symmetric_l3l4+udp``, algorithm ``modulo_n`` over
HASH_SLOTS slots and a per-switch basis, then slot -> bucket. `ecmp_slot` is the
same computation as Open vSwitch 3.1's ``flow_hash_symmetric_l3l4`` (lib/flow.c)
with the portable murmur-style ``hash_add`` / ``hash_finish`` (lib/hash.h; the
Debian build has no SSE 4.2 CRC32 variant), checked against the real switch's
``ofproto/trace`` (tests/emulation/test_ecmp_hash_trace.py). So anything that must
know where ECMP puts a flow without a fabric (a flow-level model of the same
fabric, a NIC that picks source ports by path) can compute it exactly. A
hash-aware PLB re-path built on it was measured on the headline and did not
beat random re-paths (benchmarks/RESULTS.md, 2026-12-07); it was not kept.
"""

from __future__ import annotations

_M32 = 0xFFFFFFFF
IPPROTO_UDP = 17
#: Slots of every select group's hash table (controllers/openflow/ofmsgs.py uses it).
HASH_SLOTS = 64


def switch_hash_basis(salt: int, dpid: int) -> int:
    """Per-switch hash basis: switches with one basis would pick correlated paths (polarization)."""
    return (salt * 0x9E37 + dpid * 0x85EB + (dpid >> 32) * 0xC2B3) & 0xFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _hash_add(hash_: int, data: int) -> int:
    """lib/hash.h mhash_add."""
    if data:
        data = (data * 0xCC9E2D51) & _M32
        data = _rot(data, 15)
        data = (data * 0x1B873593) & _M32
        hash_ ^= data
    hash_ = _rot(hash_, 13)
    return (hash_ * 5 + 0xE6546B64) & _M32


def _hash_finish(hash_: int, final: int) -> int:
    """lib/hash.h hash_finish (mhash_finish of hash ^ final)."""
    hash_ = (hash_ ^ final) & _M32
    hash_ ^= hash_ >> 16
    hash_ = (hash_ * 0x85EBCA6B) & _M32
    hash_ ^= hash_ >> 13
    hash_ = (hash_ * 0xC2B2AE35) & _M32
    return hash_ ^ (hash_ >> 16)


def _swap32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "big"), "little")


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def symmetric_l3l4_udp(src_ip: int, dst_ip: int, src_port: int, dst_port: int,
                       basis: int) -> int:
    """OVS's flow_hash_symmetric_l3l4(flow, basis, inc_udp_ports=true) of an IPv4 UDP
    packet (addresses as 32-bit numbers, ports as numbers; OVS hashes the network-order
    words as little-endian integers)."""
    hash_ = _hash_add(basis, _swap32(src_ip ^ dst_ip))
    hash_ = _hash_add(hash_, IPPROTO_UDP)
    hash_ = _hash_add(hash_, _swap16(src_port ^ dst_port))
    return _hash_finish(hash_, basis)


def ecmp_slot(src_ip: int, dst_ip: int, src_port: int, dst_port: int, basis: int,
              slots: int = HASH_SLOTS) -> int:
    """The hash-table slot a switch with ``basis`` puts this UDP flow in."""
    return symmetric_l3l4_udp(src_ip, dst_ip, src_port, dst_port, basis) % slots
