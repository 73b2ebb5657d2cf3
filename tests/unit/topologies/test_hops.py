"""Switch hops between NICs (topologies/hops.py), which Swift's target scales with."""

from __future__ import annotations

import pytest

from topologies import load
from topologies.hops import SwitchHops


@pytest.mark.parametrize("preset, counts", [("rail-2tier-small", {1, 3}),
                                            ("rail-3tier", {1, 3, 5})])
def test_one_switch_under_a_tor_three_over_spines_five_over_a_third_tier(preset, counts):
    topology = load(preset)
    hops = SwitchHops(topology)
    by_pair = {(a.ip, b.ip): hops.between(a.ip, b.ip) for a in topology.nics
               for b in topology.nics}
    assert set(by_pair.values()) == counts
    for (a, b), count in by_pair.items():
        tor_a, tor_b = hops.tor_of[a], hops.tor_of[b]
        assert (count == 1) == (tor_a == tor_b)  # one ToR exactly when they share it
        assert by_pair[(b, a)] == count          # symmetric
    with pytest.raises(KeyError):
        hops.between("10.9.9.9", topology.nics[0].ip)
