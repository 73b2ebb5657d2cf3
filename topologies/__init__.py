"""Pure fabric models: the multi-rail Clos as data (no root, no network)."""

from topologies.build import build
from topologies.model import Link, Nic, Node, Topology
from topologies.presets import DEFAULT_PRESET, PRESETS, preset
from topologies.spec import FabricSpec, TopologyError, from_dict

__all__ = ["build", "Link", "Nic", "Node", "Topology", "DEFAULT_PRESET", "PRESETS",
           "preset", "FabricSpec", "TopologyError", "from_dict", "load"]


def load(name_or_spec: "str | FabricSpec") -> Topology:
    """Build a topology from a preset name or a FabricSpec."""
    spec = preset(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    return build(spec)
