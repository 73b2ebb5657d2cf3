"""Link emulation fidelity on rail-2tier-small: rates, queues, ECMP spreading."""

import re
import time
import subprocess

import pytest

from controllers.openflow.ofmsgs import HASH_TABLE, switch_hash_basis
from fabric.measure import calibrate
from fabric.measure.telemetry import QueueReader, read_queues, read_queues_tc
from fabric.net import shaping
from fabric.net.netns import tx_checksum_enabled
from fabric.nic.udp import IP_RECVERR
from tests.emulation.conftest import SMALL_FABRIC_SEED

pytestmark = pytest.mark.emulation


def test_shaping_is_in_place_on_both_ends(small_fabric):
    shaping.verify(small_fabric.shapes)
    servers = set(small_fabric.plan.netns.values())
    netns_ends = [s for s in small_fabric.shapes if s.netns in servers]
    switch_ends = [s for s in small_fabric.shapes if s.netns not in servers]
    assert {s.netns for s in switch_ends} == {shard.netns for shard in small_fabric.shards}
    assert len(netns_ends) == len(small_fabric.topology.nics)
    assert len(switch_ends) == 2 * len(small_fabric.topology.links) - len(netns_ends)


def test_offloads_are_off_on_both_ends(small_fabric):
    nic = small_fabric.topology.nics[0]
    assert not tx_checksum_enabled(nic.intf, small_fabric.netns(nic.server))
    assert not tx_checksum_enabled(small_fabric.switch_intf(nic.tor, nic.tor_port),
                                   small_fabric.switch_netns(nic.tor))


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


def _packets_per_next_hop(target: str) -> dict[int, int]:
    """Packets per output port of the busiest ECMP set (hash-table entries, see ofmsgs)."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", target,
                          f"table={HASH_TABLE}"], capture_output=True, text=True, check=True).stdout
    sets: dict[int, dict[int, int]] = {}
    for line in out.splitlines():
        found = re.search(r"n_packets=(\d+).*reg1=(0x[0-9a-f]+|\d+).*output:(\d+)", line)
        if found:
            packets, group, port = int(found[1]), int(found[2], 0), int(found[3])
            ports = sets.setdefault(group, {})
            ports[port] = ports.get(port, 0) + packets
    return max(sets.values(), key=lambda ports: sum(ports.values())) if sets else {}


def test_ecmp_spreads_distinct_flows_over_all_spines(small_fabric):
    net = small_fabric
    src = net.topology.servers()[0]
    dst_nic = next(n for n in net.topology.nics
                   if net.topology.node(n.server).pod == 1 and n.rail == 0)
    tor = net.topology.nics_of(src.name)[0].tor
    assert net.exec(src.name, ["ping", "-c1", "-W2", dst_nic.ip]).returncode == 0  # ARP first
    before = _packets_per_next_hop(net.openflow_target(tor))
    sender = ("import socket\n"
              "for port in range(40000, 40064):\n"
              "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "    s.bind(('', port))\n"
              "    for _ in range(3):\n"
              f"        s.sendto(b'x' * 100, ('{dst_nic.ip}', 9))\n")
    result = net.exec(src.name, ["python3", "-c", sender])
    assert result.returncode == 0, result.stderr
    after = _packets_per_next_hop(net.openflow_target(tor))
    used = {port: count - before.get(port, 0) for port, count in after.items()}
    uplinks = {local.port for _, local, remote in net.topology.links_of(tor)
               if remote.node.startswith("s")}
    assert set(used) == uplinks
    assert all(count > 0 for count in used.values()), used
    assert sum(used.values()) >= 64  # at least one packet of each of the 64 flows


def test_netlink_telemetry_reads_what_tc_reads(small_fabric):
    # Traffic first, so the counters are not all zero; then both readers, back to back.
    src, dst = calibrate.probe_pairs(small_fabric.topology)[0][1:]
    dst_ip = small_fabric.topology.nics_of(dst)[0].ip
    small_fabric.exec(src, ["ping", "-c", "3", "-i", "0.05", "-s", "8000", dst_ip], check=True)
    moved = 0
    for shard in small_fabric.shards:
        with QueueReader(shard.netns) as reader:
            fast = reader.read()
        slow = read_queues_tc(shard.netns)
        assert fast and set(fast) == set(slow)
        for dev, sample in fast.items():
            # tc read a moment later: counters can only have grown.
            assert 0 <= slow[dev].sent_bytes - sample.sent_bytes < 10**6, dev
            assert slow[dev].drops == sample.drops, dev
            moved += sample.sent_packets
        # Focus reads (one get request per queue) see the same counters as the dump.
        with QueueReader(shard.netns) as reader:
            some = sorted(fast)[:5]
            again = reader.read_devices(some + ["no-such-queue"])
        assert sorted(again) == some
        for dev in some:
            assert 0 <= again[dev].sent_bytes - fast[dev].sent_bytes < 10**6, dev
            assert again[dev].drops == fast[dev].drops, dev
    assert moved > 0


def test_the_experiment_seed_reaches_every_switch_hash_basis(small_fabric):
    # Repetitions with other seeds must sample other hash collisions (issue: the seed was
    # kept by the algorithm and never reached the switches). ToRs hash over the spines;
    # a 2-tier spine has one path down.
    bases = {}
    for switch in small_fabric.topology.switches():
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                              small_fabric.openflow_target(switch.name)],
                             capture_output=True, text=True, check=True).stdout
        found = set(re.findall(r"multipath\(symmetric_l3l4\+udp,(\d+),", out))
        if found:
            bases[switch.name] = found
    tors = small_fabric.topology.switches("tor")
    assert bases == {s.name: {str(switch_hash_basis(SMALL_FABRIC_SEED, s.dpid))} for s in tors}


def test_every_local_qdisc_drop_is_reported_to_the_sender_as_enobufs(small_fabric):
    # Conservation subtracts the NICs' refused sends from the host qdisc drops: a send the
    # NIC's own qdisc dropped was never sent (the NIC sends it again). That holds only if
    # the kernel reports each such drop to a socket with IP_RECVERR, and no other.
    net = small_fabric
    src = net.topology.servers()[0]
    nic = net.topology.nics_of(src.name)[0]
    dst = next(n for n in net.topology.nics if n.server != src.name and n.rail == nic.rail)
    before = read_queues(net.netns(src.name))[nic.intf].drops
    sender = ("import errno, socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"s.setsockopt(socket.IPPROTO_IP, {IP_RECVERR}, 1)\n"
              f"s.bind(('{nic.ip}', 0))\n"
              "refused = 0\n"
              "for _ in range(60):\n"
              "    try:\n"
              f"        s.sendto(b'x' * 8000, ('{dst.ip}', 9))\n"
              "    except OSError as e:\n"
              "        refused += e.errno == errno.ENOBUFS\n"
              "print(refused)\n")
    result = net.exec(src.name, ["python3", "-c", sender])
    assert result.returncode == 0, result.stderr
    refused = int(result.stdout.strip())
    dropped = read_queues(net.netns(src.name))[nic.intf].drops - before
    assert refused > 0 and refused == dropped, (refused, dropped)
    time.sleep(0.2)  # let the 90 kB queue drain before the next test


def _rx_packets(net, db: str) -> int:
    """The run's interfaces' rx_packets as the shard's database holds them."""
    from fabric.net import ovs
    return sum(stats.get("rx_packets", 0)
               for stats in ovs.interface_statistics(net.prefix, db).values())


def test_interface_statistics_are_written_when_asked_not_every_five_seconds(small_fabric):
    # OVS's default writes every interface's statistics every 5 s, in one main-loop turn
    # (11-12 ms on rail-2tier: a late second); the shards write them only when the drop
    # snapshot asks (ovs.refresh_interface_stats).
    from fabric.net import ovs
    a, b = [nic for nic in small_fabric.topology.nics if nic.rail == 0][:2]
    dbs = [shard.db for shard in small_fabric.shards]
    before = sum(_rx_packets(small_fabric, db) for db in dbs)
    subprocess.run(["ip", "netns", "exec", small_fabric.netns(a.server), "ping", "-q", "-c", "20",
                    "-i", "0.01", "-W", "1", b.ip], capture_output=True, check=True)
    time.sleep(6)  # past OVS's default interval
    stale = sum(_rx_packets(small_fabric, db) for db in dbs)
    for db in dbs:
        ovs.refresh_interface_stats(db)
    fresh = sum(_rx_packets(small_fabric, db) for db in dbs)
    assert stale == before
    assert fresh >= before + 40  # 20 requests and 20 replies, each at two switches or more
