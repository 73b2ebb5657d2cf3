"""Link emulation fidelity on rail-2tier-small: rates, queues, ECMP spreading."""

import re
import subprocess

import pytest

from fabric import calibrate, shaping
from fabric.netns import tx_checksum_enabled

pytestmark = pytest.mark.emulation


def test_shaping_is_in_place_on_both_ends(small_fabric):
    shaping.verify(small_fabric.shapes)
    netns_ends = [s for s in small_fabric.shapes if s.netns]
    switch_ends = [s for s in small_fabric.shapes if not s.netns]
    assert len(netns_ends) == len(small_fabric.topology.nics)
    assert len(switch_ends) == 2 * len(small_fabric.topology.links) - len(netns_ends)


def test_offloads_are_off_on_both_ends(small_fabric):
    nic = small_fabric.topology.nics[0]
    assert not tx_checksum_enabled(nic.intf, small_fabric.netns(nic.server))
    assert not tx_checksum_enabled(small_fabric.switch_intf(nic.tor, nic.tor_port))


@pytest.mark.parametrize("link_class", ["host", "tor-spine"])
def test_iperf3_measures_configured_rate(small_fabric, link_class):
    pairs = {c: (src, dst) for c, src, dst in calibrate.probe_pairs(small_fabric.topology)}
    src, dst = pairs[link_class]
    measured = calibrate.measure_tcp(small_fabric, src, dst, seconds=4)
    configured = small_fabric.topology.spec.nic_mbps
    assert abs(measured - configured) <= 0.05 * configured, (measured, configured)


def test_two_to_one_overload_drops_at_that_port_only(small_fabric):
    result = calibrate.overload_port(small_fabric, seconds=4)
    assert result.drops_at_port > 0
    assert result.drops_elsewhere == {}
    assert abs(result.error_pct) <= 5.0, result


def _group_bucket_packets(bridge: str) -> list[int]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-group-stats", bridge],
                         capture_output=True, text=True, check=True).stdout
    groups = [line for line in out.splitlines() if "group_id=" in line]
    buckets = []
    for line in groups:
        buckets.append([int(n) for n in re.findall(r"bucket\d+:packet_count=(\d+)", line)])
    return max(buckets, key=sum) if buckets else []


def test_ecmp_spreads_distinct_flows_over_all_spines(small_fabric):
    net = small_fabric
    src = net.topology.servers()[0]
    dst_nic = next(n for n in net.topology.nics
                   if net.topology.node(n.server).pod == 1 and n.rail == 0)
    tor = net.topology.nics_of(src.name)[0].tor
    assert net.exec(src.name, ["ping", "-c1", "-W2", dst_nic.ip]).returncode == 0  # ARP first
    before = _group_bucket_packets(net.bridge(tor))
    sender = ("import socket\n"
              "for port in range(40000, 40064):\n"
              "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "    s.bind(('', port))\n"
              "    for _ in range(3):\n"
              f"        s.sendto(b'x' * 100, ('{dst_nic.ip}', 9))\n")
    result = net.exec(src.name, ["python3", "-c", sender])
    assert result.returncode == 0, result.stderr
    after = _group_bucket_packets(net.bridge(tor))
    used = [b - a for a, b in zip(before or [0] * len(after), after)]
    spines = len(net.topology.switches("spine"))
    assert len(used) == spines
    assert all(count > 0 for count in used), used
