"""Each preset that fits CI builds, is shaped and verified, and forwards all pairs."""

import pytest

from fabric.net import shaping
from fabric.nic import wire
from fabric.measure.reachability import all_pairs_ping
from tests.emulation.conftest import start_network

pytestmark = pytest.mark.emulation


@pytest.mark.parametrize("name", ["rail-2tier-small", "rail-3tier", "fat-tree-k4", "rail-2tier"])
def test_all_pairs_ping_without_loss(name, tmp_path):
    net = start_network(name, tmp_path)
    try:
        report = all_pairs_ping(net)
        topology = net.topology
        every_pair = {(s.name, n.ip) for s in topology.servers() for n in topology.nics
                      if n.server != s.name}
        assert report.failures == []
        assert set(report.replied) == every_pair
        # Shaping is still in place after traffic and OVS reconfiguration.
        shaping.verify(net.shapes)
    finally:
        net.stop()


def test_controller_answers_arp_when_neighbours_are_not_static(tmp_path):
    net = start_network("rail-2tier-small", tmp_path, static_neighbors=False)
    try:
        report = all_pairs_ping(net)
        assert report.failures == [] and len(set(report.replied)) == 224
        neighbours = net.exec("h1", ["ip", "neigh", "show", "dev", "eth0"]).stdout
        nic = next(n for n in net.topology.nics if n.server == "h5" and n.rail == 0)
        assert f"{nic.ip} lladdr {nic.mac}" in neighbours
        # Only the virtual fabric manager (in-band control) is a permanent entry.
        permanent = [line for line in neighbours.splitlines() if "PERMANENT" in line]
        assert [line.split()[0] for line in permanent] == [wire.MANAGER_IP], neighbours
    finally:
        net.stop()
