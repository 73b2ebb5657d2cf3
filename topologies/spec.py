"""The parameters of a rail-optimized Clos fabric, validated strictly.

A `FabricSpec` is what a user writes (a preset, a TOML table, a JSON file);
`topologies.build` turns it into the wired graph. Validation rejects unknown
keys and wrong types and names the field in a one-line message, e.g.
``rails: must be 1..8, got 0``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

#: Characters the run prefix (see fabric) takes in front of every switch-side
#: interface name; Linux allows 15 in all.
RUN_PREFIX_CHARS = 6
IFNAME_MAX = 15


class TopologyError(ValueError):
    """An invalid fabric description; the message names the field."""


@dataclass(frozen=True)
class FabricSpec:
    """What a multi-rail Clos fabric is made of (all rates in Mb/s)."""

    name: str
    rails: int = 4
    servers_per_pod: int = 4
    pods: int = 2
    tiers: int = 2
    spines: int = 4
    #: 3-tier only: pods that share a block of leaves.
    pods_per_block: int = 1
    #: 3-tier only: leaves in each block; leaf i of every block connects to
    #: spine plane i (spines / leaves_per_block spines).
    leaves_per_block: int = 0
    #: Parallel links between each ToR and each spine (2-tier) or leaf (3-tier).
    tor_uplink_links: int = 1
    #: 3-tier only: parallel links between each leaf and each spine of its plane.
    leaf_uplink_links: int = 1
    nic_mbps: float = 10.0
    #: Rate of switch-to-switch links; None means the NIC rate (one speed
    #: everywhere, as real AI fabrics run).
    uplink_mbps: float | None = None
    buffer_bytes: int = 90_000
    mtu: int = 9000
    description: str = ""

    @property
    def fabric_mbps(self) -> float:
        """Rate of every switch-to-switch link."""
        return self.nic_mbps if self.uplink_mbps is None else self.uplink_mbps

    @property
    def servers(self) -> int:
        """Number of servers in the fabric."""
        return self.servers_per_pod * self.pods

    @property
    def blocks(self) -> int:
        """Number of leaf blocks (3-tier); 0 for 2-tier fabrics."""
        return self.pods // self.pods_per_block if self.tiers == 3 else 0

    def replace(self, **changes: Any) -> "FabricSpec":
        """A copy with some fields changed, validated again."""
        return from_dict({**dataclasses.asdict(self), **changes})


_FIELDS = {f.name: f for f in dataclasses.fields(FabricSpec)}
_INT_FIELDS = {"rails", "servers_per_pod", "pods", "tiers", "spines",
               "pods_per_block", "leaves_per_block", "tor_uplink_links",
               "leaf_uplink_links", "buffer_bytes", "mtu"}
_FLOAT_FIELDS = {"nic_mbps", "uplink_mbps"}
_STR_FIELDS = {"name", "description"}


def from_dict(data: Mapping[str, Any], where: str = "") -> FabricSpec:
    """Validate a mapping into a FabricSpec or raise TopologyError naming the field."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, Mapping):
        raise TopologyError(f"{where or 'topology'}: must be a table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise TopologyError(
            f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(_FIELDS))})")
    if "name" not in data:
        raise TopologyError(f"{prefix}name: required")
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[key] = _check_type(prefix + key, key, value)
    spec = FabricSpec(**values)
    _check_ranges(spec, prefix)
    return spec


def _check_type(label: str, key: str, value: Any) -> Any:
    if key in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TopologyError(f"{label}: must be an integer, got {value!r}")
    elif key in _FLOAT_FIELDS:
        if value is None and key == "uplink_mbps":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TopologyError(f"{label}: must be a number, got {value!r}")
        return float(value)
    elif key in _STR_FIELDS and not isinstance(value, str):
        raise TopologyError(f"{label}: must be a string, got {value!r}")
    return value


def _require(ok: bool, label: str, message: str) -> None:
    if not ok:
        raise TopologyError(f"{label}: {message}")


def _check_ranges(spec: FabricSpec, prefix: str) -> None:
    p = prefix
    _require(bool(spec.name) and spec.name.replace("-", "").replace("_", "").isalnum(),
             f"{p}name", f"must be letters, digits, '-' or '_', got {spec.name!r}")
    _require(len(spec.name) <= 40, f"{p}name", f"must be at most 40 characters, got {len(spec.name)}")
    _require(1 <= spec.rails <= 8, f"{p}rails", f"must be 1..8, got {spec.rails}")
    _require(1 <= spec.servers_per_pod <= 250, f"{p}servers_per_pod",
             f"must be 1..250, got {spec.servers_per_pod}")
    _require(1 <= spec.pods <= 250, f"{p}pods", f"must be 1..250, got {spec.pods}")
    _require(spec.tiers in (2, 3), f"{p}tiers", f"must be 2 or 3, got {spec.tiers}")
    _require(1 <= spec.spines <= 999, f"{p}spines", f"must be 1..999, got {spec.spines}")
    _require(1 <= spec.tor_uplink_links <= 64, f"{p}tor_uplink_links",
             f"must be 1..64, got {spec.tor_uplink_links}")
    _require(1 <= spec.leaf_uplink_links <= 64, f"{p}leaf_uplink_links",
             f"must be 1..64, got {spec.leaf_uplink_links}")
    _require(spec.nic_mbps > 0, f"{p}nic_mbps", f"must be > 0, got {spec.nic_mbps}")
    _require(spec.fabric_mbps > 0, f"{p}uplink_mbps", f"must be > 0, got {spec.uplink_mbps}")
    _require(576 <= spec.mtu <= 9000, f"{p}mtu", f"must be 576..9000, got {spec.mtu}")
    _require(spec.buffer_bytes >= spec.mtu + 100, f"{p}buffer_bytes",
             f"must hold at least one frame ({spec.mtu + 100} bytes), got {spec.buffer_bytes}")
    if spec.tiers == 3:
        _require(spec.pods_per_block >= 1 and spec.pods % spec.pods_per_block == 0,
                 f"{p}pods_per_block",
                 f"must divide pods ({spec.pods}), got {spec.pods_per_block}")
        _require(spec.leaves_per_block >= 1, f"{p}leaves_per_block",
                 f"must be >= 1 for a 3-tier fabric, got {spec.leaves_per_block}")
        _require(spec.spines % spec.leaves_per_block == 0, f"{p}spines",
                 f"must be a multiple of leaves_per_block ({spec.leaves_per_block}), "
                 f"got {spec.spines}")
    else:
        _require(spec.leaves_per_block == 0, f"{p}leaves_per_block",
                 f"only for tiers = 3, got {spec.leaves_per_block}")
        _require(spec.pods_per_block == 1, f"{p}pods_per_block",
                 f"only for tiers = 3, got {spec.pods_per_block}")
