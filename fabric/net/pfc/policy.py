"""What PFC decides, as pure logic: thresholds, headroom, pauses, the watchdog.

Names: a *queue* is a switch egress (its interface name), watched by the loop; a
*gate* is the egress feeding a switch (a neighbour switch's egress, or a server's
own), the thing a pause closes. Every switch egress is both: the queue a
paused gate fills is watched in turn, so a pause spreads upstream hop by hop, and
head-of-line blocking with it (a paused link stops every flow on it), as PFC does.

A queue at or above its Xoff holds each gate that fed it in the last interval
paused; below Xon it lets them go; a gate resumes when no queue holds it. The
watchdog resumes a gate paused longer than `WATCHDOG_S` and ignores pauses of it
for `RESTORE_S` (switches' PFC watchdogs do likewise, in 100-400 ms); a cycle of
gates holding each other (a PFC deadlock) is reported when it forms, and the
watchdog breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

#: The loop's period (s): each switch egress backlog is read this often.
PERIOD_S = 0.010
#: From a queue crossing Xoff to its feeders stopped, at worst: it crossed just after
#: one reading, the next sees it, the pause lands within the one after (a tick late
#: by up to a period is allowed, see `LATE_FRACTION`).
REACTION_S = 3 * PERIOD_S
#: A gate paused this long is resumed by the watchdog... Switches use 100-400 ms at
#: 100 Gb/s, some 10^5 frame times; a link here is 10^4 times slower, and a pause
#: of a few hundred ms is ordinary congestion (a queue of 40 frames behind a paused
#: hop drains in 290 ms at 10 Mb/s). 2 s is a storm at every rate railcc runs.
WATCHDOG_S = 2.0
#: ... which then ignores pauses of it for this long.
RESTORE_S = 0.200
#: Ticks later than one period may be at most this fraction, or the run is untrusted.
LATE_FRACTION = 0.01


@dataclass(frozen=True)
class Thresholds:
    """One queue's PFC thresholds and the byte limit its buffer needs (bytes)."""

    xoff: int
    xon: int
    limit: int


def thresholds(buffer_bytes: int, frame: int, feeders: int, feeder_mbps: float,
               reaction_s: float = REACTION_S) -> Thresholds:
    """Xoff at half the configured buffer, Xon two frames below it (at least one frame),
    and a limit with headroom for what ``feeders`` links at ``feeder_mbps`` still send
    in ``reaction_s``, plus the one frame each paused gate lets out."""
    xoff = max(2 * frame, buffer_bytes // 2)
    xon = max(frame, xoff - 2 * frame)
    headroom = feeders * (round(feeder_mbps * 1e6 / 8 * reaction_s) + frame)
    return Thresholds(xoff, xon, max(buffer_bytes, xoff + headroom))


@dataclass
class GateStats:
    """What happened to one gate: pause events, time paused, watchdog resumes."""

    pauses: int = 0
    paused_s: float = 0.0
    watchdog: int = 0


@dataclass
class Decision:
    """One step's changes: gates to pause, gates to resume, what the watchdog saw."""

    pause: set[str] = field(default_factory=set)
    resume: set[str] = field(default_factory=set)
    storms: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)


class Policy:
    """PFC state of a fabric: which queues are congested and which gates they hold."""

    def __init__(self, limits: Mapping[str, Thresholds], watchdog_s: float = WATCHDOG_S,
                 restore_s: float = RESTORE_S) -> None:
        self.limits = dict(limits)
        self.watchdog_s = watchdog_s
        self.restore_s = restore_s
        self.congested: set[str] = set()
        self.holders: dict[str, set[str]] = {}      # gate -> queues holding it paused
        self.paused_since: dict[str, float] = {}
        self.immune_until: dict[str, float] = {}
        self.stats: dict[str, GateStats] = {}
        self.cycles_seen: list[list[str]] = []

    def newly_congested(self, backlogs: Mapping[str, int]) -> list[str]:
        """Queues at or above Xoff that were not congested at the last step."""
        return [q for q, backlog in backlogs.items()
                if q in self.limits and q not in self.congested
                and backlog >= self.limits[q].xoff]

    def step(self, now: float, backlogs: Mapping[str, int],
             feeders: Callable[[str], Iterable[str]]) -> Decision:
        """Update from one reading of the queues' backlogs (bytes) at ``now`` (s);
        ``feeders(queue)``: the gates that fed it in the last interval."""
        decision = Decision()
        for queue, backlog in backlogs.items():
            limit = self.limits.get(queue)
            if limit is None:
                continue
            if backlog >= limit.xoff or (queue in self.congested and backlog > limit.xon):
                self.congested.add(queue)
            else:
                self.congested.discard(queue)
        was_paused = set(self.paused_since)
        for gate in list(self.holders):
            self.holders[gate] &= self.congested
        for queue in self.congested:
            for gate in feeders(queue):
                if self.immune_until.get(gate, 0.0) > now:
                    continue
                self.holders.setdefault(gate, set()).add(queue)
        for gate, since in list(self.paused_since.items()):
            if now - since >= self.watchdog_s and self.holders.get(gate):
                decision.storms.append(gate)
                self.immune_until[gate] = now + self.restore_s
                self.holders[gate] = set()
                self.stats.setdefault(gate, GateStats()).watchdog += 1
        paused = {gate for gate, queues in self.holders.items() if queues}
        decision.pause = paused - was_paused
        decision.resume = was_paused - paused
        for gate in decision.pause:
            self.paused_since[gate] = now
            self.stats.setdefault(gate, GateStats()).pauses += 1
        for gate in decision.resume:
            self.stats.setdefault(gate, GateStats()).paused_s += now - self.paused_since.pop(gate)
        if decision.pause:
            decision.cycles = [c for c in cycles(self.holders) if c not in self.cycles_seen]
            self.cycles_seen += decision.cycles
        return decision

    def finish(self, now: float) -> None:
        """Close the paused time of gates still paused at the end."""
        for gate, since in self.paused_since.items():
            self.stats.setdefault(gate, GateStats()).paused_s += now - since
        self.paused_since = {gate: now for gate in self.paused_since}


def cycles(holders: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Cycles of the wait-for graph (gate -> the queues holding it; a queue is the gate of
    its own egress), each as its gates in order from the smallest name."""
    graph = {gate: sorted(queues) for gate, queues in holders.items() if queues}
    found: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):]
                start = loop.index(min(loop))
                loop = loop[start:] + loop[:start]
                if loop not in found:
                    found.append(loop)
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
