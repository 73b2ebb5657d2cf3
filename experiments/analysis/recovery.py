"""Recovery figures of a run with faults: detect, reroute, what was lost, CCT inflation.

Pure: reads the run folder's faults.jsonl (what the fabric did, when),
controller-events.jsonl (what the controller saw, when), delays.csv (every
sampled data packet's arrival), messages.csv and transfers.json. All times share
one clock (time.time_ns). Per fault, from its first executed action ``t0``:

- ``detect_ms``: the controller's first port or switch event after ``t0``
  (None for a fault the controller cannot see: a slowed link, its own death);
- ``stalled_flows``: NIC-to-NIC flows that were delivering just before ``t0``
  (a packet within `ACTIVE_MS`) and retransmitted a message sent in the
  `AFFECT_MS` after ``t0``: the flows the fault cut;
- ``reroute_ms``: for those flows, the time from ``t0`` to the arrival of their
  first packet sent after ``t0`` (its send time is its arrival minus its one-way
  delay: the failed element carried none of those, so it crossed a working
  path), median and max. A flow is a (source NIC, destination NIC) pair: its
  QPs hash apart, so under ECMP its first such packet may be a QP the fault
  never touched;
- ``longest_stall_ms``: the longest pause between those flows' arrivals in the
  `AFFECT_MS` after ``t0`` (a go-back-N window lost whole waits its timeout);
- ``retransmits`` / ``timeouts``: of the messages sending in the `AFFECT_MS`
  after ``t0`` (in a lossy run they include the collisions' own);
- ``cct_inflation``: the completion time of the round the fault hit, over the
  median of the same job's rounds of that size it did not touch, minus one
  (None when every round was touched: add an iteration before the fault);
- ``resync_ms``: for a restarted controller, from its start to every switch
  configured again.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping

from fabric.measure.fidelity import read_faults, read_jsonl

#: A flow delivering a packet this close before the fault was active when it struck.
ACTIVE_MS = 20.0
#: Messages sending within this long after the fault count as hit by it.
AFFECT_MS = 1000.0


def first_after(delays: Iterable[Mapping[str, Any]], t0_ns: int) -> dict[tuple, float | None]:
    """Per flow active at ``t0_ns`` (a delivery within `ACTIVE_MS` before it): ms from
    ``t0_ns`` to the arrival of its first packet *sent* after it (send = arrival - one-way
    delay), None if none arrived. The failed element carried nothing sent after the
    fault, so that packet crossed a working path."""
    active: set[tuple] = set()
    first: dict[tuple, int] = {}
    for row in delays:
        flow, arrival = (row["src_ip"], row["dst_ip"]), int(row["recv_ns"])
        if t0_ns - ACTIVE_MS * 1e6 <= arrival <= t0_ns:
            active.add(flow)
        if arrival - int(row["delay_ns"]) > t0_ns and arrival < first.get(flow, arrival + 1):
            first[flow] = arrival
    return {flow: ((first[flow] - t0_ns) / 1e6 if flow in first else None) for flow in active}


def longest_gap(delays: Iterable[Mapping[str, Any]], flows: set[tuple], t0_ns: int) -> float:
    """The longest pause between arrivals of any of ``flows`` in the `AFFECT_MS` after
    ``t0_ns`` (ms): a go-back-N timeout shows here."""
    times: dict[tuple, list[int]] = {}
    end = t0_ns + AFFECT_MS * 1e6
    for row in delays:
        flow, arrival = (row["src_ip"], row["dst_ip"]), int(row["recv_ns"])
        if flow in flows and t0_ns <= arrival <= end:
            times.setdefault(flow, []).append(arrival)
    gaps = [(b - a) / 1e6 for v in times.values() for a, b in zip(sorted(v), sorted(v)[1:])]
    return max(gaps, default=0.0)


def round_times(transfers: list[Mapping[str, Any]], messages: Mapping[int, Mapping[str, Any]]
                ) -> dict[tuple, tuple[int, int]]:
    """(job, phase, iteration) -> (first start, last ACK) in ns, over its sent messages."""
    spans: dict[tuple, tuple[int, int]] = {}
    for t in transfers:
        sent = messages.get(t["id"])
        if not sent or not sent.get("start_ns") or not sent.get("acked_ns"):
            continue
        key = (t["job"], t["phase"], t["iteration"])
        start, end = int(sent["start_ns"]), int(sent["acked_ns"])
        old = spans.get(key, (start, end))
        spans[key] = (min(old[0], start), max(old[1], end))
    return spans


def inflation(spans: Mapping[tuple, tuple[int, int]], t0_ns: int) -> dict[str, float | None]:
    """Per job whose round was running at ``t0_ns``: its CCT over the median of that job's
    untouched rounds of the same phase, minus one."""
    result: dict[str, float | None] = {}
    for (job, phase, iteration), (start, end) in spans.items():
        if not start <= t0_ns <= end:
            continue
        others = [e - s for (j, p, _), (s, e) in spans.items()
                  if j == job and p == phase and not s <= t0_ns <= e]
        result[job] = ((end - start) / statistics.median(others) - 1) if others else None
    return result


def in_flight(messages: Mapping[int, Mapping[str, Any]], t0_ns: int) -> list[Mapping[str, Any]]:
    """Messages sending at some time in the `AFFECT_MS` after ``t0_ns`` (a message that
    starts just after the fault, before the controller reacts, takes the dead path too)."""
    end = t0_ns + AFFECT_MS * 1e6
    return [m for m in messages.values() if m.get("start_ns") and m.get("acked_ns")
            and int(m["start_ns"]) <= end and int(m["acked_ns"]) >= t0_ns]


def fault_figures(fault: int, events: list[Mapping[str, Any]],
                  controller: list[Mapping[str, Any]], delays: list[Mapping[str, Any]],
                  messages: Mapping[int, Mapping[str, Any]],
                  transfers: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The recovery figures of one fault (see the module doc)."""
    mine = [e for e in events if e["fault"] == fault]
    done = [e for e in mine if e["ok"]]
    if not done:
        return {"fault": fault, "kind": mine[0]["kind"] if mine else "?",
                "target": mine[0]["target"] if mine else "?", "executed": False,
                "error": mine[0].get("error") if mine else "never anchored"}
    t0 = int(done[0]["t_ns"])
    visible = done[0]["op"] in ("down", "up")  # the controller cannot see a rate or itself
    seen = [int(e["t_ns"]) for e in controller
            if visible and e["event"] in ("port", "disconnected") and int(e["t_ns"]) >= t0]
    hit = in_flight(messages, t0)
    # A gap alone may be a ring step waiting for its upstream; a flow the fault cut also
    # lost packets (its message in flight at t0 was retransmitted).
    by_id = {t["id"]: (t["src_ip"], t["dst_ip"]) for t in transfers}
    resent = {by_id[int(m["id"])] for m in hit
              if int(m.get("retransmits", 0)) > 0 and int(m["id"]) in by_id}
    cut = {flow: ms for flow, ms in first_after(delays, t0).items() if flow in resent}
    reroutes = sorted(ms for ms in cut.values() if ms is not None)
    figures = {
        "fault": fault, "kind": done[0]["kind"], "target": done[0]["target"],
        "executed": True, "t0_ns": t0, "actions": len(done),
        "detect_ms": round((min(seen) - t0) / 1e6, 3) if seen else None,
        "stalled_flows": len(cut), "never_recovered": sum(ms is None for ms in cut.values()),
        "reroute_ms": ({"median": round(statistics.median(reroutes), 3),
                        "max": round(reroutes[-1], 3)} if reroutes else None),
        "longest_stall_ms": round(longest_gap(delays, set(cut), t0), 3) if cut else None,
        "retransmits": sum(int(m.get("retransmits", 0)) for m in hit),
        "timeouts": sum(int(m.get("timeouts", 0)) for m in hit),
        "cct_inflation": {job: (round(v, 4) if v is not None else None)
                          for job, v in inflation(round_times(transfers, messages), t0).items()},
    }
    restarts = [e for e in done if e["op"] == "start"]
    if restarts:
        figures["resync_ms"] = round(1000 * restarts[0].get("resync_s", float("nan")), 1)
    return figures


def recovery(run_dir: Path | str, delays: list[Mapping[str, Any]],
             messages: Mapping[int, Mapping[str, Any]],
             transfers: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Recovery figures of every fault of a run ([] for a run without faults)."""
    path = Path(run_dir)
    events = read_faults(path)
    controller = read_jsonl(path / "controller-events.jsonl")
    indices = sorted({e["fault"] for e in events})
    return [fault_figures(i, events, controller, delays, messages, transfers) for i in indices]
