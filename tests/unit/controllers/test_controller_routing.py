"""Routes of the pure core: equal-cost ports per tier, determinism, failures."""

from __future__ import annotations

import pytest

from controllers.core.routing import TIER, FabricMap, compute_routes, prefix_match, tor_prefix
from topologies import load
from topologies.model import LEAF, SPINE, TOR

PRESETS = ["rail-2tier-small", "rail-2tier", "rail-3tier", "fat-tree-k4"]


def uplinks(topology, switch):
    """Ports of ``switch`` that lead up a tier."""
    return sorted(local.port for link, local, _ in topology.links_of(switch)
                  if link.tier != "host" and local is link.a)


def test_prefix_of_tor_and_mask():
    topology = load("rail-2tier-small")
    tor = topology.node("t1r3")
    assert tor_prefix(tor) == "10.3.1.0/24"
    assert prefix_match("10.3.1.0/24") == ("10.3.1.0", "255.255.255.0")


def test_2tier_tor_uses_every_spine_and_spine_goes_down():
    topology = load("rail-2tier-small")
    routes = compute_routes(topology)
    assert routes["t0r0"]["10.2.1.0/24"] == tuple(uplinks(topology, "t0r0"))
    assert len(routes["t0r0"]["10.2.1.0/24"]) == topology.spec.spines
    down = [local.port for link, local, remote in topology.links_of("s2") if remote.node == "t1r2"]
    assert routes["s2"]["10.2.1.0/24"] == tuple(down)
    assert "10.0.0.0/24" not in routes["t0r0"]


def test_3tier_routes_follow_blocks_planes_and_parallel_links():
    topology = load("rail-3tier")
    routes = compute_routes(topology)
    tor = topology.node("t0r0")
    # ToR -> both leaves of its block, two parallel links each.
    assert routes["t0r0"]["10.1.3.0/24"] == tuple(uplinks(topology, "t0r0"))
    assert len(routes["t0r0"]["10.1.3.0/24"]) == 4
    # Leaf of block 0: own block's prefix goes down, the other block's goes up its plane.
    leaf = "l0n1"
    to_t1r1 = [local.port for link, local, remote in topology.links_of(leaf) if remote.node == "t1r1"]
    assert routes[leaf]["10.1.1.0/24"] == tuple(to_t1r1)
    assert routes[leaf]["10.1.3.0/24"] == tuple(uplinks(topology, leaf))
    plane = {remote.node for link, local, remote in topology.links_of(leaf) if local is link.a}
    assert plane == {"s2", "s3"}
    # Spine of plane 1 -> leaf l1n1 (the dest block's leaf of its plane), all parallel links.
    to_leaf = [local.port for link, local, remote in topology.links_of("s2") if remote.node == "l1n1"]
    assert routes["s2"]["10.0.3.0/24"] == tuple(sorted(to_leaf))
    assert len(to_leaf) == topology.spec.leaf_uplink_links
    assert tor.block == 0


@pytest.mark.parametrize("name", PRESETS)
def test_every_switch_reaches_every_prefix_valley_free(name):
    topology = load(name)
    routes = compute_routes(topology)
    fabric = FabricMap(topology)
    for tor in topology.switches(TOR):
        prefix = tor_prefix(tor)
        for switch in topology.switches():
            if switch.name == tor.name:
                continue
            ports = routes[switch.name][prefix]
            assert ports, f"{switch.name} has no route to {prefix}"
            tiers = {TIER[topology.node(fabric.peer(switch.name, p).peer.node).kind] for p in ports}
            assert len(tiers) == 1, f"{switch.name} mixes up and down ports to {prefix}"


@pytest.mark.parametrize("name", PRESETS)
def test_routes_are_deterministic(name):
    assert compute_routes(load(name)) == compute_routes(load(name))


def test_failed_uplink_is_avoided_and_others_kept():
    topology = load("rail-2tier-small")
    link = next(link for link in topology.links if link.a.node == "t0r0" and link.b.node == "s1")
    routes = compute_routes(topology, frozenset({link}))
    assert link.a.port not in routes["t0r0"]["10.0.1.0/24"]
    assert len(routes["t0r0"]["10.0.1.0/24"]) == topology.spec.spines - 1
    # s1 can no longer reach t0r0 down, and a spine never routes up: unreachable, not a valley.
    assert routes["s1"]["10.0.0.0/24"] == ()
    # ...so every other ToR stops sending t0r0's traffic to s1.
    to_s1 = next(link.a.port for link in topology.links if link.a.node == "t1r0" and link.b.node == "s1")
    assert to_s1 not in routes["t1r0"]["10.0.0.0/24"]
    assert len(routes["t1r0"]["10.0.0.0/24"]) == topology.spec.spines - 1


def test_3tier_leaf_loses_all_uplinks_routes_nothing_up():
    topology = load("fat-tree-k4")
    dead = frozenset(link for link in topology.links if link.a.node == "l0n0" and link.tier == "leaf-spine")
    routes = compute_routes(topology, dead)
    assert routes["l0n0"]["10.0.7.0/24"] == ()
    kinds = {topology.node(n).kind for n in routes}
    assert kinds == {TOR, LEAF, SPINE}
