"""The PFC loop: every `PERIOD_S`, read each switch egress backlog, pause and resume gates.

One thread in the process that owns the fabric. Each period it reads every
switch egress queue's backlog with one rtnetlink dump per OVS shard
(`QueueReader`), asks the `Policy`, and closes or opens gates over rtnetlink
(`GateControl`). Which gates fed a queue comes from the datapath flows
(`FeederMap`), read again on a new congestion when older than `FRESH_S`;
when they name none (a flow newer than the last read), every gate of the
switch's other ports is paused instead. Its own lateness is measured
(the trusted verdict judges it) and so is its CPU time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from fabric.measure.telemetry import QueueReader
from fabric.net.pfc import feeders as feeder_map
from fabric.net.pfc.gates import GateControl
from fabric.net.pfc.layout import Layout
from fabric.net.pfc.policy import LATE_FRACTION, PERIOD_S, Policy


class PfcLoop:
    """PFC over a live fabric; `start` after the fabric is up, `stop` before it goes."""

    def __init__(self, layout: Layout, queue_netns: dict[str | None, set[str]],
                 vswitchd_sockets: list[Path], period_s: float = PERIOD_S) -> None:
        self.layout = layout
        self.queue_netns = queue_netns
        self.period_s = period_s
        self.policy = Policy(layout.limits)
        self.feeders = feeder_map.FeederMap(vswitchd_sockets, layout.gate_of)
        self.control = GateControl()
        self.ticks = self.late = self.structural = 0
        # Readings after one that found a frame queued somewhere: only there can a late
        # reading let a queue outgrow its headroom (from empty queues, Xoff is far).
        self.busy_ticks = self.busy_late = 0
        self._busy = False
        self.lateness: list[float] = []
        self.events: list[dict[str, Any]] = []
        self.intervals: dict[str, list[list[float]]] = {}   # gate -> [[start, end], ...]
        self.cpu_s = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pfc", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        """Open every gate's sockets and start the loop."""
        self._readers = {ns: QueueReader(ns) for ns in self.queue_netns}
        self._started = time.time()
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop, open every gate it holds and close its sockets (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        now = time.time()
        for gate in list(self.policy.paused_since):
            self._resume(gate, None, now)
        self.policy.finish(now)
        self.control.close()
        for reader in getattr(self, "_readers", {}).values():
            reader.close()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - recorded, the verdict says so
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.cpu_s = time.thread_time()

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            behind = time.monotonic() - due
            self.ticks += 1
            self.lateness.append(behind)
            if behind > self.period_s:
                self.late += 1
            if self._busy:
                self.busy_ticks += 1
                self.busy_late += behind > self.period_s
            self.tick(time.time())
            due += self.period_s
            if due < time.monotonic():
                due = time.monotonic()   # fell behind: measured above, no burst of ticks
            self._stop.wait(max(0.0, due - time.monotonic()))

    def tick(self, now: float) -> None:
        """One reading and the pauses and resumes it calls for."""
        backlogs: dict[str, int] = {}
        for ns, reader in self._readers.items():
            for dev, sample in reader.read(self.queue_netns[ns]).items():
                backlogs[dev] = sample.backlog_bytes
        self._busy = any(backlogs.values())
        age = now - self.feeders.read_at
        if (self.policy.newly_congested(backlogs) and age > feeder_map.FRESH_S) or (
                self.policy.congested and age > feeder_map.REFRESH_S):
            self.feeders.refresh(now)
        decision = self.policy.step(now, backlogs, self._feeders_of)
        for gate in sorted(decision.pause):
            self.control.pause(self.layout.gates[gate])
            self.intervals.setdefault(gate, []).append([now, None])
        for gate in sorted(decision.resume):
            self._resume(gate, backlogs.get(gate), now)
        for gate in decision.storms:
            self.events.append({"t": round(now, 4), "event": "watchdog", "gate": gate})
        for cycle in decision.cycles:
            self.events.append({"t": round(now, 4), "event": "cycle", "gates": cycle})

    def _resume(self, gate: str, backlog: int | None, now: float) -> None:
        self.control.resume(self.layout.gates[gate], backlog)
        spans = self.intervals.get(gate)
        if spans and spans[-1][1] is None:
            spans[-1][1] = now

    def _feeders_of(self, queue: str) -> set[str]:
        found = self.feeders.feeders(queue)
        if not found:
            self.structural += 1
            found = self.layout.structural_feeders(queue)
        return found

    def paused_before(self, gate: str, t: float) -> float:
        """Seconds ``gate`` spent paused before time ``t`` (time.time clock)."""
        total = 0.0
        for start, end in self.intervals.get(gate, ()):
            stop = t if end is None else min(end, t)
            total += max(0.0, stop - start)
        return total

    def summary(self) -> dict[str, Any]:
        """pfc.json: the loop's timing and cost, and each gate's pauses."""
        ordered = sorted(self.lateness)
        p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
        late_fraction = self.busy_late / self.busy_ticks if self.busy_ticks else 0.0
        gates = {gate: {"pauses": s.pauses, "paused_ms": round(1000 * s.paused_s, 1),
                        "watchdog": s.watchdog}
                 for gate, s in sorted(self.policy.stats.items()) if s.pauses}
        return {
            "flow_control": "pfc", "period_ms": 1000 * self.period_s, "ticks": self.ticks,
            "late_ticks": self.late, "busy_ticks": self.busy_ticks,
            "busy_late_ticks": self.busy_late, "late_fraction": round(late_fraction, 5),
            "late_fraction_limit": LATE_FRACTION,
            "lateness_p99_ms": round(1000 * p99, 3),
            "lateness_max_ms": round(1000 * (ordered[-1] if ordered else 0.0), 3),
            "cpu_s": round(self.cpu_s, 3),
            "seconds": round(time.time() - self._started, 3) if self._started else 0.0,
            "feeder_reads": self.feeders.reads, "structural_pauses": self.structural,
            "pause_events": sum(g["pauses"] for g in gates.values()),
            "paused_ms": round(sum(g["paused_ms"] for g in gates.values()), 1),
            "watchdog_resumes": sum(g["watchdog"] for g in gates.values()),
            "cycles": [e["gates"] for e in self.events if e["event"] == "cycle"],
            "error": self.error, "gates": gates, "events": self.events[:1000],
            "thresholds": {q: {"xoff": t.xoff, "xon": t.xon, "limit": t.limit}
                           for q, t in sorted(self.layout.limits.items())},
        }

    def write(self, path: Path) -> dict[str, Any]:
        """Write pfc.json; its content."""
        data = self.summary()
        path.write_text(json.dumps(data, indent=1) + "\n")
        return data
