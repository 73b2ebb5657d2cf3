"""`railcc check NAME --capacity`: the largest NIC rate at which full-load All2All stays trusted.

A short sweep on the real fabric: All2All with PXN over every server, about
``seconds`` of traffic at line rate, at doubling NIC rates from the lowest;
it stops at the first untrusted run (a run that does not finish in
10 x ``seconds`` + 20 s counts as untrusted). The largest trusted rate is the figure
(experiments.capacity.cache keeps it per fabric shape and machine).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from experiments.analysis.analysis import analyze
from experiments.capacity.cache import Capacity
from experiments.runner import run
from experiments.workload.spec import from_dict
from fabric.measure.machine import machine_info
from fabric.nic.fleet import RunTimedOut
from topologies.spec import FabricSpec

RATES_MBPS = (1.25, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


@dataclass(frozen=True)
class Step:
    """One rate of the sweep."""

    nic_mbps: float
    trusted: bool
    efficiency: float
    frames_per_s: float
    reasons: tuple[str, ...]


def all2all_bytes(servers: int, rails: int, nic_mbps: float, seconds: float) -> int:
    """Per-rank All2All buffer that keeps every NIC busy for ``seconds`` at ``nic_mbps``:
    each rank sends (n-1)/n of it over its ``rails`` NICs."""
    return int(seconds * rails * nic_mbps * 1e6 / 8 * servers / (servers - 1))


def all2all_spec(fabric: FabricSpec, nic_mbps: float, seconds: float) -> dict[str, Any]:
    """A spec: All2All (PXN) over every server of ``fabric`` at ``nic_mbps``, ~``seconds`` long."""
    ranks = fabric.servers
    ratio = fabric.fabric_mbps / fabric.nic_mbps
    topology = {**dataclasses.asdict(fabric), "nic_mbps": nic_mbps,
                "uplink_mbps": nic_mbps * ratio}
    size = all2all_bytes(ranks, fabric.rails, nic_mbps, seconds)
    return {"experiment": {"name": "capacity", "seed": 1}, "topology": topology,
            "jobs": [{"name": "a2a", "collective": "all2all", "servers": ranks,
                      "sizes": [size], "pxn": True}],
            "limits": {"run_timeout_s": 10 * seconds + 20}}


def step(fabric: FabricSpec, nic_mbps: float, seconds: float) -> Step:
    """Run the sweep's workload once at ``nic_mbps`` and judge it."""
    out = Path(tempfile.mkdtemp(prefix="railcc-capacity-"))
    try:
        try:
            run(from_dict(all2all_spec(fabric, nic_mbps, seconds), "capacity sweep"), out)
        except RunTimedOut as error:  # go-back-N collapse far over capacity: as untrusted as it gets
            return Step(nic_mbps, False, 0.0, 0.0, (f"did not finish: {error}",))
        summary = analyze(out)
        counters = json.loads((out / "counters.json").read_text())
        start, end = summary["rows"][0].get("window_s") or (0.0, 0.0)  # first send, last delivery
        frames = sum(a.get("data_received", 0) for a in counters["agents"].values())
        return Step(nic_mbps, bool(summary["trusted"]), summary["rows"][0]["efficiency"],
                    frames / (end - start) if end > start else 0.0,
                    tuple(summary["fidelity"]["reasons"]))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def sweep(fabric: FabricSpec, command: str, seconds: float = 2.0,
          rates: Iterable[float] = RATES_MBPS,
          progress: Callable[[Step], None] = lambda s: None) -> tuple[Capacity | None, list[Step]]:
    """Try each rate (lowest first) until one is untrusted; the largest trusted one."""
    steps: list[Step] = []
    for nic_mbps in rates:
        steps.append(step(fabric, nic_mbps, seconds))
        progress(steps[-1])
        if not steps[-1].trusted:
            break
    trusted = [s for s in steps if s.trusted]
    if not trusted:
        return None, steps
    best = trusted[-1]
    return Capacity(fabric=fabric.name, nics=fabric.servers * fabric.rails,
                    nic_mbps=best.nic_mbps, frames_per_s=round(best.frames_per_s, 1),
                    measured=datetime.datetime.now().isoformat(timespec="seconds"),
                    machine=machine_info(), command=command), steps
