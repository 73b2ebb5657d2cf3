"""Wiring of rail-optimized Clos fabrics: rails, ports, addresses, names."""

import ipaddress
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies import PRESETS, build, from_dict, load
from topologies.build import SWITCH_IFNAME_MAX
from topologies.export import from_json_dict, oversubscription, summary, to_dict


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_nic_plugs_into_its_pods_rail_tor(name):
    topology = load(name)
    for nic in topology.nics:
        server = topology.node(nic.server)
        tor = topology.node(nic.tor)
        assert (tor.pod, tor.rail) == (server.pod, nic.rail)


@pytest.mark.parametrize("name", list(PRESETS))
def test_names_addresses_and_ports_are_unique(name):
    topology = load(name)
    assert len({n.name for n in topology.nodes}) == len(topology.nodes)
    assert len({n.ip for n in topology.nics}) == len(topology.nics)
    assert len({n.mac for n in topology.nics}) == len(topology.nics)
    dpids = [n.dpid for n in topology.switches()]
    assert len(set(dpids)) == len(dpids) and all(dpids)
    ends = Counter((end.node, end.port) for link in topology.links for end in link.ends())
    assert max(ends.values()) == 1
    for link in topology.links:
        for end in link.ends():
            assert len(end.intf) <= SWITCH_IFNAME_MAX


@pytest.mark.parametrize("name", list(PRESETS))
def test_nic_ip_lies_in_its_rail_and_pod_prefix(name):
    topology = load(name)
    for nic in topology.nics:
        server = topology.node(nic.server)
        assert ipaddress.ip_address(nic.ip) in ipaddress.ip_network(
            f"10.{nic.rail}.{server.pod}.0/24")


def test_tor_ports_are_downlinks_first_then_uplinks():
    topology = load("rail-2tier-small")
    ports = {local.port: remote.node for _, local, remote in topology.links_of("t0r0")}
    assert [ports[p] for p in (1, 2, 3, 4)] == ["h1", "h2", "h3", "h4"]
    assert [ports[p] for p in (5, 6, 7, 8)] == ["s0", "s1", "s2", "s3"]


def test_fat_tree_k4_is_the_classic_one():
    info = summary(load("fat-tree-k4"))
    assert (info["servers"], info["tors"], info["leaves"], info["spines"]) == (16, 8, 8, 4)
    assert info["links"]["total"] == 48
    assert info["oversubscription"] == {"tor": 1.0, "leaf": 1.0}


def test_three_tier_leaf_connects_only_its_plane():
    topology = load("rail-3tier")
    for leaf in topology.switches("leaf"):
        spines = {remote.node for _, local, remote in topology.links_of(leaf.name)
                  if remote.node.startswith("s")}
        assert spines == {f"s{leaf.index * 2}", f"s{leaf.index * 2 + 1}"}


def test_oversubscription_reflects_thin_uplinks():
    topology = build(from_dict({"name": "thin", "servers_per_pod": 4, "spines": 2}))
    assert oversubscription(topology) == {"tor": 2.0}


def test_json_round_trip_and_tamper_detection():
    topology = load("rail-3tier")
    data = json.loads(json.dumps(to_dict(topology)))
    assert from_json_dict(data) == topology
    data["links"][0]["mbps"] = 1.0
    with pytest.raises(ValueError, match="links differ"):
        from_json_dict(data)


@settings(max_examples=40, deadline=None)
@given(rails=st.integers(1, 8), per_pod=st.integers(1, 6), pods=st.integers(1, 4),
       spines=st.integers(1, 6), links=st.integers(1, 2))
def test_two_tier_counts(rails, per_pod, pods, spines, links):
    topology = build(from_dict({"name": "p", "rails": rails, "servers_per_pod": per_pod,
                                "pods": pods, "spines": spines, "tor_uplink_links": links}))
    tiers = Counter(link.tier for link in topology.links)
    assert tiers["host"] == rails * per_pod * pods
    assert tiers["tor-spine"] == rails * pods * spines * links
    assert len(topology.nics) == rails * per_pod * pods
