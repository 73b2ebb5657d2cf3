"""Validation of fabric specs: bad input is rejected with the field named."""

import pytest

from topologies import FabricSpec, TopologyError, build, from_dict, preset
from topologies.build import SWITCH_IFNAME_MAX
from topologies.presets import from_table
from topologies.spec import FabricModel


@pytest.mark.parametrize("changes, message", [
    ({"rails": 0}, "rails: must be 1..8, got 0"),
    ({"rails": 9}, "rails: must be 1..8, got 9"),
    ({"tiers": 4}, "tiers: must be 2 or 3, got 4"),
    ({"racks": 2}, "racks: unknown key"),
    ({"rails": "4"}, "rails: must be an integer, got '4'"),
    ({"rails": True}, "rails: must be an integer, got True"),
    ({"nic_mbps": 0}, "nic_mbps: must be > 0, got 0"),
    ({"name": "x" * 41}, "name: must be at most 40 characters, got 41"),
    ({"name": "bad name"}, "name: must be letters, digits"),
    ({"buffer_bytes": 100}, "buffer_bytes: must hold at least one frame"),
    ({"tiers": 3, "leaves_per_block": 0}, "leaves_per_block: must be >= 1"),
    ({"tiers": 3, "leaves_per_block": 3, "spines": 4}, "spines: must be a multiple"),
    ({"tiers": 3, "leaves_per_block": 2, "pods": 3, "pods_per_block": 2},
     "pods_per_block: must divide pods (3), got 2"),
    ({"leaves_per_block": 2}, "leaves_per_block: only for tiers = 3"),
])
def test_invalid_field_is_named(changes, message):
    data = {"name": "t", **changes}
    with pytest.raises(TopologyError) as info:
        from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_name_is_required():
    with pytest.raises(TopologyError, match="name: required"):
        from_dict({"rails": 2})


def test_where_prefixes_the_field():
    with pytest.raises(TopologyError, match=r"^topology\.rails: must be 1\.\.8"):
        from_dict({"name": "t", "rails": 0}, where="topology")


def test_interface_name_too_long_is_refused():
    spec = from_dict({"name": "big", "pods": 200, "servers_per_pod": 1, "spines": 999,
                      "tor_uplink_links": 2})
    with pytest.raises(TopologyError, match=f"longer than {SWITCH_IFNAME_MAX} characters"):
        build(spec)


def test_valid_spec_round_trips_through_replace():
    spec = preset("rail-2tier-small")
    assert spec.replace(nic_mbps=20).nic_mbps == 20.0
    assert spec.replace(nic_mbps=20).fabric_mbps == 20.0
    assert spec.replace(uplink_mbps=5).fabric_mbps == 5.0
    with pytest.raises(TopologyError, match="rails"):
        spec.replace(rails=0)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(TopologyError, match="known: rail-2tier-small"):
        preset("rail-9tier")


def test_defaults_are_one_speed_everywhere():
    spec = FabricSpec(name="d")
    assert spec.fabric_mbps == spec.nic_mbps


def test_model_defaults_are_the_specs():
    assert FabricModel(name="d").to_spec() == FabricSpec(name="d")


def test_from_dict_takes_no_preset():
    with pytest.raises(TopologyError, match=r"^preset: unknown key \(known: name, rails, "):
        from_dict({"preset": "rail-2tier-small"})


def test_table_is_a_preset_plus_overrides():
    spec = from_table({"preset": "rail-2tier-small", "nic_mbps": 20, "name": "mine"})
    assert spec == preset("rail-2tier-small").replace(nic_mbps=20, name="mine")


def test_table_may_be_inline():
    assert from_table({"name": "t", "rails": 2}) == FabricSpec(name="t", rails=2)


@pytest.mark.parametrize("table, message", [
    ({"preset": "nope"}, "topology.preset: unknown preset 'nope' (known: rail-2tier-small, "
                         "rail-2tier, rail-3tier, fat-tree-k4)"),
    ({"preset": "rail-2tier-small", "racks": 2}, "topology.racks: unknown key (known: name, "),
    ({"preset": "rail-2tier-small", "rails": 0}, "topology.rails: must be 1..8, got 0"),
    ({"preset": "rail-2tier-small", "mtu": "9000"}, "topology.mtu: must be an integer, got '9000'"),
    ({"rails": 2}, "topology.name: required"),
    ([1, 2], "topology: must be a table, got [1, 2]"),
])
def test_bad_table_is_named(table, message):
    with pytest.raises(TopologyError) as info:
        from_table(table, where="topology")
    assert str(info.value).startswith(message)
