"""JSON form of a topology (what the controller reads) and a summary for `topo show`."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

from topologies.build import build
from topologies.model import LEAF, SERVER, SPINE, TOR, Topology
from topologies.spec import from_dict

FORMAT_VERSION = 1


def to_dict(topology: Topology) -> dict[str, Any]:
    """Everything about a topology as JSON-ready data (spec, nodes, NICs, links)."""
    return {
        "format": FORMAT_VERSION,
        "spec": dataclasses.asdict(topology.spec),
        "nodes": [dataclasses.asdict(node) for node in topology.nodes],
        "nics": [dataclasses.asdict(nic) for nic in topology.nics],
        "links": [dataclasses.asdict(link) for link in topology.links],
    }


def from_json_dict(data: dict[str, Any]) -> Topology:
    """Rebuild a topology from `to_dict` output (rewired from its spec, then checked)."""
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"topology JSON: format must be {FORMAT_VERSION}, got {data.get('format')!r}")
    topology = build(from_dict(data["spec"], where="spec"))
    if to_dict(topology)["links"] != data["links"]:
        raise ValueError("topology JSON: links differ from what the spec wires (edited by hand?)")
    return topology


def save(topology: Topology, path: Path) -> Path:
    """Write the topology JSON to ``path``."""
    path.write_text(json.dumps(to_dict(topology), indent=1))
    return path


def load_json(path: Path) -> Topology:
    """Read a topology JSON file written by `save`."""
    return from_json_dict(json.loads(Path(path).read_text()))


def summary(topology: Topology) -> dict[str, Any]:
    """Counts, rails, per-tier link rates and oversubscription of a fabric."""
    spec = topology.spec
    kinds = Counter(node.kind for node in topology.nodes)
    tiers = Counter(link.tier for link in topology.links)
    return {
        "name": spec.name,
        "description": spec.description,
        "tiers": spec.tiers,
        "servers": kinds[SERVER],
        "rails": spec.rails,
        "nics": len(topology.nics),
        "pods": spec.pods,
        "tors": kinds[TOR],
        "leaves": kinds[LEAF],
        "spines": kinds[SPINE],
        "links": dict(tiers, total=len(topology.links)),
        "nic_mbps": spec.nic_mbps,
        "uplink_mbps": spec.fabric_mbps,
        "buffer_bytes": spec.buffer_bytes,
        "mtu": spec.mtu,
        "flow_control": spec.flow_control,
        "oversubscription": oversubscription(topology),
    }


def oversubscription(topology: Topology) -> dict[str, float]:
    """Per switch tier: downlink capacity / uplink capacity (1.0 = non-blocking)."""
    ratios: dict[str, float] = {}
    for kind in (TOR, LEAF):
        switches = topology.switches(kind)
        if not switches:
            continue
        name = switches[0].name
        down = up = 0.0
        for link, local, _ in topology.links_of(name):
            if local is link.b:
                down += link.mbps
            else:
                up += link.mbps
        if up:
            ratios[kind] = round(down / up, 3)
    return ratios
