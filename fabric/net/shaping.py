"""Link emulation as egress rate + byte buffer (htb + bfifo), applied and read back.

PLATFORM.md: netem/red are absent and qdiscs set before OVS attaches a port
vanish, so shaping is applied after the bridges exist and then verified.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from fabric.net.pfc import gates
from fabric.net.sh import FabricError, batch, run

_RATE_UNITS = {"bit": 1, "Kbit": 1e3, "Mbit": 1e6, "Gbit": 1e9, "Tbit": 1e12}
_CLASS_RE = re.compile(r"^class htb 1:1 .*?\brate (\d+(?:\.\d+)?)(\w*bit)\b")


@dataclass(frozen=True)
class Shape:
    """Egress emulation of one interface: rate (Mb/s) and buffer (bytes)."""

    intf: str
    netns: str | None
    mbps: float
    buffer_bytes: int
    mtu: int
    #: Under PFC: the byte limit of the buffer behind a pause gate (fabric.net.pfc.gates),
    #: which replaces the plain bfifo; None: htb + bfifo.
    gate_limit: int | None = None


def tc_lines(shape: Shape) -> list[str]:
    """tc batch lines for one interface: htb root, one rate class, bfifo child."""
    kbit = max(1, round(shape.mbps * 1000))
    frame = shape.mtu + 100
    # Two frames of burst. One frame (so no link could carry more than its rate plus
    # one frame) was measured: under load the qdisc watchdog runs late (softirqs
    # deferred to ksoftirqd), one frame of credit cannot absorb it, and backlogged
    # uplinks sent 85-93 % of their rate (benchmarks/RESULTS.md). The NICs keep no
    # credit while idle (fabric/nic/core.py), so what enters a link is never more than
    # its rate plus one frame; the second frame here only lets a late link catch up.
    burst = 2 * frame
    child = (gates.tbf_line(shape.intf, shape.mbps, frame, shape.gate_limit)
             if shape.gate_limit else
             f"qdisc replace dev {shape.intf} parent 1:1 handle 10: bfifo limit {shape.buffer_bytes}")
    return [
        f"qdisc replace dev {shape.intf} root handle 1: htb default 1",
        f"class replace dev {shape.intf} parent 1: classid 1:1 htb rate {kbit}kbit "
        f"ceil {kbit}kbit burst {burst}b cburst {burst}b quantum {frame}",
        child,
    ]


def by_netns(shapes: Iterable[Shape]) -> dict[str | None, list[Shape]]:
    """Group shapes by namespace (None = root namespace)."""
    groups: dict[str | None, list[Shape]] = defaultdict(list)
    for shape in shapes:
        groups[shape.netns].append(shape)
    return groups


def apply(shapes: Iterable[Shape]) -> None:
    """Apply every shape with one tc batch per namespace (namespaces in parallel)."""
    def one(item: tuple[str | None, list[Shape]]) -> None:
        netns, group = item
        batch("tc", [line for shape in group for line in tc_lines(shape)], netns=netns)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, by_netns(shapes).items()))


def parse_rate(text: str) -> float:
    """'10Mbit' -> 10e6 (bits per second)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(\w*bit)", text)
    if not match or match.group(2) not in _RATE_UNITS:
        raise ValueError(f"unknown tc rate {text!r}")
    return float(match.group(1)) * _RATE_UNITS[match.group(2)]


def problems(shape: Shape, qdiscs: list[dict], class_text: str) -> list[str]:
    """What differs between the wanted shape and tc's read-back (empty when right)."""
    where = f"{shape.netns or 'root'}:{shape.intf}"
    found = []
    root = [q for q in qdiscs if q.get("root")]
    if not root or root[0].get("kind") != "htb":
        kind = root[0].get("kind") if root else "none"
        return [f"{where}: root qdisc is {kind}, want htb"]
    fifo = [q for q in qdiscs if q.get("parent") == "1:1"]
    if shape.gate_limit:
        found += _gate_problems(where, shape, fifo[0] if fifo else None)
    elif not fifo or fifo[0].get("kind") != "bfifo":
        found.append(f"{where}: bfifo child missing")
    elif fifo[0].get("options", {}).get("limit") != shape.buffer_bytes:
        found.append(f"{where}: bfifo limit {fifo[0]['options'].get('limit')}, "
                     f"want {shape.buffer_bytes}")
    match = _CLASS_RE.search(class_text)
    if not match:
        found.append(f"{where}: htb class 1:1 missing")
    else:
        rate = float(match.group(1)) * _RATE_UNITS[match.group(2)]
        want = shape.mbps * 1e6
        if abs(rate - want) > 0.01 * want:
            found.append(f"{where}: htb rate {rate / 1e6:g} Mb/s, want {shape.mbps:g}")
    return found


def _gate_problems(where: str, shape: Shape, child: dict | None) -> list[str]:
    """What differs in a PFC gate (tbf) from the wanted one; tc shows its limit as the
    latency of a full queue at its rate (``lat``, us) after its bucket (``burst``)."""
    if not child or child.get("kind") != "tbf":
        return [f"{where}: pause gate (tbf) missing"]
    options = child.get("options", {})
    limit = options.get("rate", 0) * options.get("lat", 0) / 1e6 + options.get("burst", 0)
    if abs(limit - shape.gate_limit) > 0.01 * shape.gate_limit:
        return [f"{where}: gate limit {limit:.0f}, want {shape.gate_limit}"]
    return []


def verify(shapes: Iterable[Shape]) -> None:
    """Read every shaped interface back; FabricError listing what is missing or wrong."""
    def one(item: tuple[str | None, list[Shape]]) -> list[str]:
        netns, group = item
        prefix = ["-n", netns] if netns else []
        qdiscs: dict[str, list[dict]] = defaultdict(list)
        for qdisc in json.loads(run(["tc", *prefix, "-j", "qdisc", "show"]) or "[]"):
            qdiscs[qdisc.get("dev", "")].append(qdisc)
        lines = [f"class show dev {shape.intf}" for shape in group]
        class_out = run(["tc", *prefix, "-batch", "-"], input="\n".join(lines) + "\n")
        class_by_dev = _split_class_output(class_out, [shape.intf for shape in group])
        if class_by_dev is None:  # some class is missing: ask interface by interface
            class_by_dev = {shape.intf: run(["tc", *prefix, "class", "show", "dev", shape.intf],
                                            check=False) for shape in group}
        return [problem for shape in group
                for problem in problems(shape, qdiscs.get(shape.intf, []),
                                        class_by_dev.get(shape.intf, ""))]

    with ThreadPoolExecutor(max_workers=8) as pool:
        issues = [p for found in pool.map(one, by_netns(shapes).items()) for p in found]
    if issues:
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        raise FabricError("link shaping not in place: " + "; ".join(issues[:3]) + more)


def _split_class_output(text: str, intfs: list[str]) -> dict[str, str] | None:
    """tc prints one 'class htb 1:1 ...' line per interface, in batch order (None if not)."""
    lines = [line for line in text.splitlines() if line.startswith("class htb 1:1 ")]
    if len(lines) != len(intfs):
        return None
    return dict(zip(intfs, lines))
