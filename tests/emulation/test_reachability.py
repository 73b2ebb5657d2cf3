"""Each preset that fits CI builds, is shaped and verified, and forwards all pairs."""

import pytest

from fabric import shaping
from fabric.reachability import all_pairs_ping
from tests.emulation.conftest import start_network

pytestmark = pytest.mark.emulation


@pytest.mark.parametrize("name", ["rail-2tier-small", "rail-3tier", "fat-tree-k4", "rail-2tier"])
def test_all_pairs_ping_without_loss(name, tmp_path):
    net = start_network(name, tmp_path)
    try:
        report = all_pairs_ping(net)
        assert report.sent == len(net.topology.nics) * (len(net.topology.nics)
                                                       - net.topology.spec.rails)
        assert report.failures == []
        # Shaping is still in place after traffic and OVS reconfiguration.
        shaping.verify(net.shapes)
    finally:
        net.stop()
