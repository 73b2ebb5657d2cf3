"""Faults in a spec: ``[[faults]]`` tables validated into a timed plan of actions.

    [[faults]]
    kind = "link-down"         # see KINDS
    link = "t0r1-s2"           # the two nodes, either order; "t0r1-s2#2": 2nd parallel link
    after = "ring:iteration:2" # "start" (default), "JOB:iteration:N" or "phase:N" (1-based)
    at = "300ms"               # offset from that moment ("0ms" default; us, ms, s)
    duration = "500ms"         # optional: undo it that long later

Pure: no root, no processes. `resolve` checks every name against the fabric and
returns `Fault`s; `Fault.actions` expands one into the timed `Action`s the
fabric executes (fabric/net/faults.py). docs/faults.md is the user reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema, model_validator

from topologies.model import SERVER, Topology
from topologies.spec import OneOf, Range, Table, fault

#: Fault kind -> the key naming its target (None: the controller).
KINDS = {"link-down": "link", "link-up": "link", "link-flap": "link", "slow-link": "link",
         "switch-down": "switch", "switch-up": "switch", "nic-down": "nic", "nic-up": "nic",
         "controller-kill": None, "controller-restart": None}
#: What a lossy link would need and this machine's kernel lacks (PLATFORM.md).
LOSSY_MISSING = ("lossy-link needs a per-packet drop at a queue (netem or act_gact); this "
                 "kernel has neither, and OVS resends a frame its egress queue refused")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_ANCHOR = re.compile(r"^(?:start|phase:(\d+)|([A-Za-z0-9_-]{1,40}):iteration:(\d+))$")


def seconds(value: Any) -> float:
    """Seconds from a duration string like "300ms", "1.5s" or "250us"."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise fault(f"must be a duration like '300ms' or '1.5s', got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _kind(value: Any) -> Any:
    if value == "lossy-link":
        raise fault(LOSSY_MISSING)
    return value


def _as_text(value: float) -> str:
    """A duration as a spec writes it (seconds; read back to the same float)."""
    text = repr(float(value))
    return f"{text}s" if "e" not in text else f"{value:.9f}s"


Duration = Annotated[float, BeforeValidator(seconds), PlainSerializer(_as_text),
                     WithJsonSchema({"type": "string", "pattern": _DURATION.pattern})]


class FaultTable(Table):
    """One [[faults]] table as written; names are checked against the fabric by `resolve`."""

    required_messages = {"kind": f"required (one of {', '.join(KINDS)})"}
    kind: Annotated[str, BeforeValidator(_kind), OneOf(tuple(KINDS))]
    at: Duration = 0.0
    after: str = "start"
    link: str | None = None
    switch: str | None = None
    nic: str | None = None
    duration: Duration | None = None
    fraction: Annotated[float, Range(0, 1, exclusive=True)] | None = None
    period: Duration | None = None
    count: Annotated[int, Range(1, 1000)] | None = None

    @model_validator(mode="after")
    def _keys_of_the_kind(self) -> "FaultTable":
        """Each kind takes its own target key and parameters, and only those."""
        target = KINDS[self.kind]
        for key in ("link", "switch", "nic"):
            given = getattr(self, key) is not None
            if key == target and not given:
                raise fault(f"required for kind = {self.kind}", key)
            if key != target and given:
                raise fault(f"not a key of kind = {self.kind}" +
                            (f" (it takes {target})" if target else ""), key)
        wanted = {"slow-link": {"fraction"}, "link-flap": {"period", "count"}}.get(self.kind, set())
        for key in ("fraction", "period", "count"):
            given = getattr(self, key) is not None
            if key in wanted and not given:
                raise fault(f"required for kind = {self.kind}", key)
            if key not in wanted and given:
                raise fault(f"only for kind = "
                            f"{'slow-link' if key == 'fraction' else 'link-flap'}", key)
        undoable = self.kind in ("link-down", "slow-link", "switch-down", "nic-down",
                                 "controller-restart")
        if self.duration is not None and not undoable:
            raise fault(f"not a key of kind = {self.kind}", "duration")
        if self.duration is not None and self.duration <= 0:
            raise fault(f"must be > 0, got {self.duration:g} s", "duration")
        if self.period is not None and self.period <= 0:
            raise fault(f"must be > 0, got {self.period:g} s", "period")
        if not _ANCHOR.match(self.after):
            raise fault("must be 'start', 'phase:N' or 'JOB:iteration:N', got "
                        f"{self.after!r}", "after")
        return self


@dataclass(frozen=True)
class Action:
    """One thing the fabric does: ``op`` on ``links`` (indices into the topology's links)
    ``offset_s`` after the fault's anchor. ops: down, up, rate (``fraction`` of each link's
    configured rate; 1.0 restores it), kill (the controller), start (the controller)."""

    fault: int
    offset_s: float
    op: str
    links: tuple[int, ...] = ()
    fraction: float = 1.0


@dataclass(frozen=True)
class Fault:
    """A validated fault: what, on which links, anchored where, when."""

    index: int
    kind: str
    target: str
    links: tuple[int, ...]
    anchor: str
    at_s: float
    duration_s: float | None = None
    fraction: float | None = None
    period_s: float | None = None
    count: int | None = None

    def actions(self) -> list[Action]:
        """The timed actions of this fault, relative to its anchor."""
        at, end = self.at_s, None if self.duration_s is None else self.at_s + self.duration_s
        one = {"link-down": "down", "switch-down": "down", "nic-down": "down",
               "link-up": "up", "switch-up": "up", "nic-up": "up"}
        if self.kind in one:
            actions = [Action(self.index, at, one[self.kind], self.links)]
            if end is not None:
                actions.append(Action(self.index, end, "up", self.links))
            return actions
        if self.kind == "slow-link":
            actions = [Action(self.index, at, "rate", self.links, self.fraction or 1.0)]
            if end is not None:
                actions.append(Action(self.index, end, "rate", self.links, 1.0))
            return actions
        if self.kind == "link-flap":
            period, flaps = self.period_s or 0.0, self.count or 1
            return [Action(self.index, at + i * period + half * period / 2, op, self.links)
                    for i in range(flaps) for half, op in ((0, "down"), (1, "up"))]
        if self.kind == "controller-kill":
            return [Action(self.index, at, "kill")]
        return [Action(self.index, at, "kill"), Action(self.index, end or at, "start")]


def _targets(table: FaultTable, topology: Topology) -> tuple[str, tuple[int, ...]]:
    """(the target's label, its link indices); ValueError naming the key."""
    if table.link is not None:
        return table.link, (topology.find_link(table.link),)
    if table.switch is not None:
        node = next((n for n in topology.switches() if n.name == table.switch), None)
        if node is None:
            raise ValueError(f"switch: no switch {table.switch!r} in fabric {topology.name}")
        return table.switch, tuple(i for i, link in enumerate(topology.links)
                                   if node.name in (link.a.node, link.b.node))
    if table.nic is not None:
        server, _, rail = table.nic.rpartition(".")
        nic = next((n for n in topology.nics if n.server == server and str(n.rail) == rail),
                   None)
        if nic is None:
            raise ValueError(f"nic: no NIC {table.nic!r} (server.rail, e.g. 'h1.0') in "
                             f"fabric {topology.name}")
        return table.nic, tuple(i for i, link in enumerate(topology.links)
                                if link.a.node == server and link.a.port == nic.rail
                                and topology.node(link.a.node).kind == SERVER)
    return "controller", ()


def _anchor(after: str, iterations: dict[str, int], phases: int) -> str:
    """The anchor, checked against the jobs and phases (ValueError naming the problem)."""
    match = _ANCHOR.match(after)
    assert match is not None  # FaultTable checked the shape
    if match.group(1):
        if not 1 <= int(match.group(1)) <= phases:
            raise ValueError(f"after: phase {match.group(1)} does not exist (the spec has "
                             f"{phases} phase(s): one per size)")
    elif match.group(2):
        job, n = match.group(2), int(match.group(3))
        if job not in iterations:
            raise ValueError(f"after: no job {job!r} (jobs: {', '.join(iterations)})")
        if not 1 <= n <= iterations[job]:
            raise ValueError(f"after: job {job} has {iterations[job]} iteration(s), got {n}")
    return after


def resolve(tables: list[FaultTable], topology: Topology, iterations: dict[str, int],
            phases: int) -> tuple[Fault, ...]:
    """Validated faults, every name checked; ValueError starting ``faults[i].KEY: ``."""
    faults = []
    for i, table in enumerate(tables):
        try:
            target, links = _targets(table, topology)
            anchor = _anchor(table.after, iterations, phases)
        except ValueError as exc:
            text = str(exc)
            key = KINDS[table.kind] if not text.startswith(("after:", "switch:", "nic:")) \
                else None
            raise ValueError(f"faults[{i}].{key}: {text}" if key else
                             f"faults[{i}].{text}") from None
        faults.append(Fault(i, table.kind, target, links, anchor, table.at, table.duration,
                            table.fraction, table.period, table.count))
    return tuple(faults)


def anchors_of_round(phase: int, iteration: int, jobs: list[str], first: bool) -> list[str]:
    """The anchors a round starting now satisfies (0-based phase and iteration)."""
    found = ["start"] if first else []
    if iteration == 0:
        found.append(f"phase:{phase + 1}")
    found += [f"{job}:iteration:{iteration + 1}" for job in jobs]
    return found
