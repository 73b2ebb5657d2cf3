"""Faults executed on a live fabric: links down and up, slowed links, the controller killed.

The plan comes from the spec (`experiments.workload.faults`): each fault's actions
are timed from an anchor (the first round, a phase, a job's iteration). The runner
calls `FaultInjector.anchor` when a round starts; one thread runs the due actions
in time order and appends each to the run folder's ``faults.jsonl`` as it happens
(``t_ns`` is `time.time_ns()`, the clock of every other record), so a run that
dies keeps the log.

A link is taken down at its switch ends (``ip link set down`` on each switch
interface, in its shard's namespace; a server's NIC loses carrier, and each
switch port reports link-down to the controller as a real port would), slowed by changing the htb rate of both ends, and restored by
the link's own shape (fabric.net.shaping).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

from fabric.net import shaping
from fabric.net.controller_process import MARKER
from fabric.net.sh import FabricError, batch

log = logging.getLogger(__name__)
#: How long a restarted controller may take to configure every switch again.
RESYNC_TIMEOUT_S = 10.0


class PlannedFault(Protocol):
    """What the injector needs of a fault (experiments.workload.faults.Fault)."""

    index: int
    kind: str
    target: str
    anchor: str

    def actions(self) -> list: ...


class FaultInjector:
    """Runs a run's faults on its network; a context manager that stops its thread."""

    def __init__(self, net: Any, faults: Iterable[PlannedFault], log_path: Path) -> None:
        self.net = net
        self.faults = {fault.index: fault for fault in faults}
        self.log_path = Path(log_path)
        self.events: list[dict[str, Any]] = []
        self._armed: set[int] = set()
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._shape_of = {(s.intf, s.netns): s for s in net.shapes}
        self._restarts_left = sum(f.kind == "controller-restart" for f in self.faults.values())

    def __enter__(self) -> "FaultInjector":
        if self.faults:
            self.log_path.write_text("")
            self._boot_standby()
            self._thread = threading.Thread(target=self._loop, name="faults", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def anchor(self, names: Iterable[str], at_ns: int | None = None) -> None:
        """A moment faults are timed from (now, or ``at_ns`` in time.time_ns): schedule the
        faults anchored there (each fault once, at its first anchor)."""
        now, names = time.monotonic(), set(names)
        if at_ns is not None:
            now += (at_ns - time.time_ns()) / 1e9
        with self._wake:
            for index, fault in self.faults.items():
                if index in self._armed or fault.anchor not in names:
                    continue
                self._armed.add(index)
                for action in fault.actions():
                    heapq.heappush(self._heap, (now + action.offset_s, self._seq, action))
                    self._seq += 1
            self._wake.notify()

    def close(self) -> None:
        """Stop the thread; actions not yet due are logged as not reached."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=RESYNC_TIMEOUT_S + 5)
        for _, _, action in sorted(self._heap):
            self._record(action, ok=False, error="not reached: the run ended first")
        self._heap.clear()

    def rate_factors(self) -> dict[int, list[tuple[float, float]]]:
        """Per faulted link, (time.time() s, share of its configured rate) from each executed
        change on: 0 while down, the fraction while slowed, 1 when restored."""
        by_name = {self.net.topology.link_name(link): i
                   for i, link in enumerate(self.net.topology.links)}
        state: dict[int, tuple[bool, float]] = {}
        changes: dict[int, list[tuple[float, float]]] = {}
        for event in self.events:
            if not event["ok"] or event["op"] not in ("down", "up", "rate"):
                continue
            for name in event["links"]:
                index = by_name[name]
                up, fraction = state.get(index, (True, 1.0))
                if event["op"] == "rate":
                    fraction = event["fraction"]
                else:
                    up = event["op"] == "up"
                state[index] = (up, fraction)
                changes.setdefault(index, []).append((event["t_ns"] / 1e9,
                                                      fraction if up else 0.0))
        return changes

    # -- the thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closing and (not self._heap
                                             or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._closing:
                    return
                _, _, action = heapq.heappop(self._heap)
            self._run(action)

    def _run(self, action: Any) -> None:
        began = time.time_ns()
        try:
            extra = self.execute(action)
            self._record(action, ok=True, t_ns=began, **extra)
        except (FabricError, OSError) as exc:
            log.warning("fault %d %s failed: %s", action.fault, action.op, exc)
            self._record(action, ok=False, t_ns=began, error=str(exc))

    def execute(self, action: Any) -> dict[str, Any]:
        """Do one action now; returns extra fields for its log entry."""
        if action.op in ("down", "up"):
            self.set_links(action.links, action.op)
            return {}
        if action.op == "rate":
            self.set_rate(action.links, action.fraction)
            return {}
        controller = self.net.controller
        if controller is None:
            raise FabricError("the run has no controller")
        if action.op == "kill":
            controller.kill()
            return {}
        return self._restart(controller)

    def _boot_standby(self) -> None:
        """A controller-restart brings up a hot standby, as an HA pair has one: booted
        before the traffic (or the previous restart) so its start-up is not the re-sync's."""
        controller = self.net.controller
        if controller is not None and controller.standby is None and self._restarts_left:
            controller.boot_standby()
            self._own(controller.standby.pid)
            controller.wait_standby(timeout=RESYNC_TIMEOUT_S)

    def _restart(self, controller: Any) -> dict[str, Any]:
        started = time.monotonic()
        pid = controller.release()
        self._restarts_left -= 1
        self._own(pid)
        dpids = {switch.dpid for switch in self.net.topology.switches()}
        controller.wait_ready(dpids, timeout=RESYNC_TIMEOUT_S)
        resync_s = round(time.monotonic() - started, 4)
        self._boot_standby()   # for a later restart
        return {"pid": pid, "resync_s": resync_s}

    def _own(self, pid: int) -> None:
        """Record a process we started in the run's state, so cleanup can end it."""
        self.net.state.processes[str(pid)] = MARKER
        self.net.state.save()

    def _ends(self, links: Iterable[int], switches_only: bool = False) -> list[tuple[str, str]]:
        """(interface, namespace) of both ends of each link (or of its switch ends)."""
        ends = []
        for index in links:
            link = self.net.topology.links[index]
            for end in link.ends():
                if end.node in self.net.plan.netns:
                    if not switches_only:
                        ends.append((end.intf, self.net.plan.netns[end.node]))
                else:
                    ends.append(self.net.plan.intf_netns(end.node, end.port))
        return ends

    def set_links(self, links: Iterable[int], state: str) -> None:
        """Take links (indices into the topology's links) ``down`` or bring them ``up``."""
        # A server's own interface stays up (down, the kernel would flush its routes and
        # static neighbours); its carrier follows the switch port, as a cable pulled would.
        by_netns: dict[str, list[str]] = {}
        for intf, netns in self._ends(links, switches_only=True):
            by_netns.setdefault(netns, []).append(f"link set dev {intf} {state}")
        for netns, lines in by_netns.items():
            batch("ip", lines, netns=netns)

    def set_rate(self, links: Iterable[int], fraction: float) -> None:
        """Shape links to ``fraction`` of their configured rate (1.0 restores it)."""
        by_netns: dict[str, list[str]] = {}
        for intf, netns in self._ends(links):
            shape = self._shape_of[(intf, netns)]
            slowed = dataclasses.replace(shape, mbps=shape.mbps * fraction)
            by_netns.setdefault(netns, []).extend(
                line for line in shaping.tc_lines(slowed) if line.startswith("class "))
        for netns, lines in by_netns.items():
            batch("tc", lines, netns=netns)

    def _record(self, action: Any, ok: bool, t_ns: int | None = None, **extra: Any) -> None:
        """Log one action (``t_ns``: when it began) in memory and in faults.jsonl."""
        fault = self.faults[action.fault]
        event = {"t_ns": t_ns or time.time_ns(), "fault": action.fault, "kind": fault.kind,
                 "target": fault.target, "op": action.op,
                 "links": [self.net.topology.link_name(self.net.topology.links[i])
                           for i in action.links], "ok": ok, **extra}
        if action.op == "rate":
            event["fraction"] = action.fraction
        self.events.append(event)
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(event) + "\n")
