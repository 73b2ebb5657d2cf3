"""Named fabrics a user can ask for by name (`railcc topo list`)."""

from __future__ import annotations

from topologies.spec import FabricSpec, TopologyError

PRESETS: dict[str, FabricSpec] = {
    spec.name: spec for spec in (
        FabricSpec(
            name="rail-2tier-small",
            description="8 servers x 4 rails in 2 pods, 8 ToRs, 4 spines (fits CI)",
            rails=4, servers_per_pod=4, pods=2, tiers=2, spines=4, nic_mbps=10.0),
        FabricSpec(
            name="rail-2tier",
            description="16 servers x 8 rails in 2 pods, 16 ToRs, 8 spines",
            rails=8, servers_per_pod=8, pods=2, tiers=2, spines=8, nic_mbps=10.0),
        FabricSpec(
            name="rail-3tier",
            description="16 servers x 2 rails in 4 pods, 8 ToRs, 2 blocks of 2 leaves, 4 spines",
            rails=2, servers_per_pod=4, pods=4, tiers=3, pods_per_block=2,
            leaves_per_block=2, spines=4, tor_uplink_links=2, leaf_uplink_links=4,
            nic_mbps=10.0),
        FabricSpec(
            name="fat-tree-k4",
            description="classic k=4 fat-tree: 16 hosts, 8 edge, 8 aggregation, 4 core (teaching)",
            rails=1, servers_per_pod=2, pods=8, tiers=3, pods_per_block=2,
            leaves_per_block=2, spines=4, nic_mbps=10.0),
    )
}

DEFAULT_PRESET = "rail-2tier-small"


def preset(name: str) -> FabricSpec:
    """The preset called ``name``; TopologyError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise TopologyError(f"topology: unknown preset {name!r} (known: {known})") from None
