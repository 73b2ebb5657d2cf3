"""The trusted-capacity cache and the admission rule of `railcc run` / `railcc ab`."""

from __future__ import annotations

import dataclasses
import json

from experiments.capacity.cache import (Capacity, admission, entry_key, load, lookup, save,
                                        shape_key)
from topologies import preset

SMALL = preset("rail-2tier-small")
MACHINE = {"cores": 2, "cpu": "EPYC", "memory_gib": 24.0, "kernel": "6.1", "ovs": "3.1.0",
           "datapath": "netdev"}


def measured(nic_mbps: float = 10.0, machine=MACHINE) -> Capacity:
    return Capacity("rail-2tier-small", 32, nic_mbps, 4000.0, "2026-12-01T22:00:00", machine,
                    "railcc check rail-2tier-small --capacity")


def test_the_shape_ignores_rates_and_names_but_not_the_wiring():
    same = dataclasses.replace(SMALL, name="mine", nic_mbps=40.0, description="x")
    assert shape_key(same) == shape_key(SMALL)
    assert shape_key(dataclasses.replace(SMALL, rails=8)) != shape_key(SMALL)
    assert shape_key(dataclasses.replace(SMALL, mtu=1500)) != shape_key(SMALL)
    # A 2:1 uplink speed is another fabric whatever the NIC rate.
    assert shape_key(dataclasses.replace(SMALL, uplink_mbps=5.0)) != shape_key(SMALL)


def test_save_and_lookup_per_fabric_and_machine(tmp_path):
    cache = tmp_path / "capacity.json"
    assert load(cache) == {} and lookup(SMALL, MACHINE, cache) is None
    save(SMALL, measured(10.0), cache)
    save(SMALL, measured(20.0, {**MACHINE, "cores": 8}), cache)
    assert lookup(SMALL, MACHINE, cache) == measured(10.0)
    assert lookup(dataclasses.replace(SMALL, nic_mbps=80.0), MACHINE, cache) == measured(10.0)
    assert lookup(SMALL, {**MACHINE, "cores": 8}, cache).nic_mbps == 20.0
    assert lookup(preset("rail-2tier"), MACHINE, cache) is None
    save(SMALL, measured(5.0), cache)  # re-measured: replaced
    assert lookup(SMALL, MACHINE, cache).nic_mbps == 5.0 and len(load(cache)) == 2
    cache.write_text("not json")
    assert load(cache) == {}
    assert entry_key(SMALL, MACHINE) != entry_key(SMALL, {**MACHINE, "kernel": "6.2"})


def test_a_figure_measured_under_other_verdict_rules_is_not_used(tmp_path):
    cache = tmp_path / "capacity.json"
    old = entry_key(SMALL, MACHINE, rules=1)     # the key before rules had a version
    cache.write_text(json.dumps({old: dataclasses.asdict(measured(40.0))}))
    assert lookup(SMALL, MACHINE, cache) is None
    save(SMALL, measured(20.0), cache)
    assert lookup(SMALL, MACHINE, cache).nic_mbps == 20.0


def test_admission_refuses_above_twice_the_capacity_or_the_specs_fraction():
    at = lambda mbps: dataclasses.replace(SMALL, nic_mbps=mbps)  # noqa: E731
    assert admission(at(80.0), None) is None  # never measured: no opinion
    assert admission(at(20.0), measured(10.0)) is None
    refusal = admission(at(20.5), measured(10.0))
    assert refusal.startswith("nic_mbps = 20.5 is above 2 x the trusted capacity of this fabric "
                              "on this machine (10 Mb/s per NIC, 0.32 Gb/s over 32 NICs")
    assert "--force" in refusal
    assert admission(at(9.0), measured(10.0), max_offered_fraction=0.8).startswith(
        "nic_mbps = 9 is above limits.max_offered_fraction = 0.8 of the trusted capacity")
    assert admission(at(8.0), measured(10.0), max_offered_fraction=0.8) is None
