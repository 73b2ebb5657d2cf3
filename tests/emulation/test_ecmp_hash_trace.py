"""The switches' ECMP hash model (controllers/core/ecmp_hash.py) against Open vSwitch itself:
``ofproto/trace`` of UDP packets through a real ToR reports the slot its multipath
action computed."""

import ipaddress
import random
import re
import subprocess

import pytest

from controllers.core.ecmp_hash import ecmp_slot, switch_hash_basis
from tests.emulation.conftest import start_network

pytestmark = pytest.mark.emulation
SEED = 7


def _number(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def test_the_hash_model_picks_the_slot_the_switch_picks(tmp_path):
    net = start_network("rail-2tier-small", tmp_path, controller_options={"seed": SEED})
    try:
        topology = net.topology
        rng = random.Random(SEED)
        checked = set()
        for _ in range(40):
            src = rng.choice(topology.nics)
            dst = rng.choice([n for n in topology.nics
                              if n.rail == src.rail and n.tor != src.tor])
            port = rng.randrange(49152, 65536)
            tor = topology.node(src.tor)
            ctl = net.shard_of[src.tor].rundir / "ovs-vswitchd.ctl"
            trace = subprocess.run(
                ["ovs-appctl", "-t", str(ctl), "ofproto/trace", net.bridge(src.tor),
                 f"in_port={src.tor_port},udp,nw_src={src.ip},nw_dst={dst.ip},"
                 f"udp_src={port},udp_dst=4791"],
                capture_output=True, text=True, check=True).stdout
            found = re.search(r"multipath\(symmetric_l3l4\+udp,(\d+),modulo_n,64,.*\n\s*-> "
                              r"NXM_NX_REG0\[0\.\.15\] is now (0x[0-9a-f]+|0)\b", trace)
            assert found, trace
            basis = switch_hash_basis(SEED, tor.dpid)
            assert int(found.group(1)) == basis
            model = ecmp_slot(_number(src.ip), _number(dst.ip), port, 4791, basis)
            assert int(found.group(2), 0) == model, (src, dst, port, trace)
            checked.add(model)
        assert len(checked) > 20  # many different slots, not one lucky value
    finally:
        net.stop()
