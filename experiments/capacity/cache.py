"""The trusted-capacity cache: the largest trusted NIC rate of a fabric on a machine.

`railcc check NAME --capacity` measures it (experiments.capacity.sweep) and
stores it in ``CACHE_FILE`` (``/var/lib/railcc/capacity.json``, or
``$RAILCC_CAPACITY_FILE``), one entry per fabric shape and machine; `railcc
run` and `railcc ab` consult it before they build anything (`admission`).
Pure: no root, no network.

A fabric's shape is its spec without its rates, name and description (the
rate is what the sweep varies). A machine is what the emulator's speed
depends on: CPU model and count, memory, kernel, Open vSwitch version and
datapath. A figure is also tied to the trusted verdict's rules
(`fabric.measure.fidelity.RULES`): one measured before a rule changed is not used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fabric.measure.fidelity import RULES
from topologies.spec import FabricSpec

CACHE_FILE = Path(os.environ.get("RAILCC_CAPACITY_FILE", "/var/lib/railcc/capacity.json"))
#: A spec whose NIC rate is above this multiple of the cached trusted rate is refused.
MAX_OVER_CAPACITY = 2.0
#: Fields of a FabricSpec that do not make a different fabric shape.
_NOT_SHAPE = ("name", "description", "nic_mbps", "uplink_mbps")


@dataclass(frozen=True)
class Capacity:
    """One measured figure: the largest NIC rate at which full-load All2All stayed trusted."""

    fabric: str            # the fabric's name when measured
    nics: int
    nic_mbps: float        # largest trusted NIC rate
    frames_per_s: float    # NIC-received data frames per second at that rate
    measured: str          # ISO date and time
    machine: dict[str, Any]
    command: str

    @property
    def offered_gbps(self) -> float:
        """Offered load at the trusted rate, all NICs."""
        return self.nics * self.nic_mbps / 1000


def shape_key(spec: FabricSpec) -> str:
    """Digest of a fabric's shape (its spec without rates, name and description)."""
    shape = {k: v for k, v in sorted(dataclasses.asdict(spec).items()) if k not in _NOT_SHAPE}
    shape["uplink_ratio"] = spec.fabric_mbps / spec.nic_mbps
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def machine_key(machine: Mapping[str, Any]) -> str:
    """Digest of a machine description (see the module docstring)."""
    return hashlib.sha256(json.dumps(dict(machine), sort_keys=True).encode()).hexdigest()[:16]


def entry_key(spec: FabricSpec, machine: Mapping[str, Any], rules: int = RULES) -> str:
    """Where a fabric's figure on a machine, judged by the verdict's ``rules``, is kept in
    the cache (a figure measured under other rules is not looked up)."""
    return f"{shape_key(spec)}@{machine_key(machine)}" + (f"#r{rules}" if rules > 1 else "")


def load(path: Path = CACHE_FILE) -> dict[str, Capacity]:
    """Every cached figure (an unreadable or missing cache is empty)."""
    try:
        raw = json.loads(path.read_text())
        return {key: Capacity(**value) for key, value in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}


def save(spec: FabricSpec, capacity: Capacity, path: Path = CACHE_FILE) -> None:
    """Store (or replace) the figure of ``spec``'s shape on ``capacity.machine``."""
    entries = load(path)
    entries[entry_key(spec, capacity.machine)] = capacity
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in sorted(entries.items())},
                              indent=1))
    os.replace(tmp, path)


def lookup(spec: FabricSpec, machine: Mapping[str, Any],
           path: Path = CACHE_FILE) -> Capacity | None:
    """The cached figure of this fabric's shape on this machine, if measured."""
    return load(path).get(entry_key(spec, machine))


def admission(spec: FabricSpec, capacity: Capacity | None,
              max_offered_fraction: float | None = None) -> str | None:
    """Why a run of ``spec`` should be refused (one line), or None to let it run.

    Refused when its NIC rate is above `MAX_OVER_CAPACITY` times the cached trusted
    rate, or above ``max_offered_fraction`` of it ([limits] of the spec)."""
    if capacity is None:
        return None
    limit, why = MAX_OVER_CAPACITY * capacity.nic_mbps, f"{MAX_OVER_CAPACITY:g} x"
    if max_offered_fraction is not None and max_offered_fraction * capacity.nic_mbps < limit:
        limit = max_offered_fraction * capacity.nic_mbps
        why = f"limits.max_offered_fraction = {max_offered_fraction:g} of"
    if spec.nic_mbps <= limit:
        return None
    return (f"nic_mbps = {spec.nic_mbps:g} is above {why} the trusted capacity of this fabric "
            f"on this machine ({capacity.nic_mbps:g} Mb/s per NIC, "
            f"{capacity.offered_gbps:.2f} Gb/s over {capacity.nics} NICs, measured "
            f"{capacity.measured} by `{capacity.command}`): lower nic_mbps, or pass --force "
            "(the run is then marked untrusted)")
