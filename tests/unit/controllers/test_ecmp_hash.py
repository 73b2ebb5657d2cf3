"""The switches' ECMP hash model (controllers/core/ecmp_hash.py) without a switch: a value
Open vSwitch's own ofproto/trace reported, and the symmetry the hash is named for (the
emulation test tests/emulation/test_ecmp_hash_trace.py checks 40 more against a live ToR)."""

import ipaddress

from controllers.core.ecmp_hash import ecmp_slot, switch_hash_basis, symmetric_l3l4_udp


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def test_a_slot_ovs_reported():
    # ofproto/trace on t0r0 (dpid 1 << 32) of rail-2tier-small, seed 7: "multipath(
    # symmetric_l3l4+udp,5684,modulo_n,64,...) -> NXM_NX_REG0[0..15] is now 0x31".
    basis = switch_hash_basis(7, 1 << 32)
    assert basis == 5684
    assert ecmp_slot(_ip("10.0.0.1"), _ip("10.0.1.1"), 12345, 4791, basis) == 0x31


def test_the_hash_is_symmetric_and_sees_the_source_port():
    a, b = _ip("10.2.0.3"), _ip("10.2.5.1")
    assert symmetric_l3l4_udp(a, b, 50000, 4791, 99) == symmetric_l3l4_udp(b, a, 4791, 50000, 99)
    slots = {ecmp_slot(a, b, port, 4791, 99) for port in range(49152, 49152 + 256)}
    assert len(slots) > 48  # source ports spread flows over most of the 64 slots
