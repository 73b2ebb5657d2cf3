"""Named fabrics a user can ask for by name (`railcc topo list`), and the [topology] table.

A [topology] table is either ``preset = NAME`` plus overrides of that preset's
FabricSpec keys, or a fabric written inline (``name`` required): `TopologyTable`
validates both, `from_table` turns one into a FabricSpec.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Mapping

from pydantic import ConfigDict, model_validator

from topologies.spec import FabricModel, FabricSpec, OneOf, TopologyError, fault, validate

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


def _preset_or_name(schema: dict[str, Any]) -> None:
    """JSON Schema: ``name`` is required only when there is no ``preset``."""
    schema.pop("required", None)  # name is FabricModel's only required key
    schema["anyOf"] = [{"required": ["preset"]}, {"required": ["name"]}]


class TopologyTable(FabricModel):
    """A [topology] table: a preset plus overrides of its keys, or an inline fabric."""

    model_config = ConfigDict(json_schema_extra=_preset_or_name)
    preset: Annotated[str, OneOf(tuple(PRESETS))] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        """The preset's keys under the table's own (runs before the key checks)."""
        if not isinstance(data, Mapping) or "preset" not in data:
            return data
        name = data["preset"]
        if not isinstance(name, str) or name not in PRESETS:
            raise fault(f"unknown preset {name!r} (known: {', '.join(PRESETS)})", "preset")
        return {**dataclasses.asdict(PRESETS[name]), **data}


def from_table(data: Mapping[str, Any], where: str = "") -> FabricSpec:
    """Validate a [topology] table (preset plus overrides, or inline) into a FabricSpec."""
    return validate(TopologyTable, data, where).to_spec()
