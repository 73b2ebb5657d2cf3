"""A fluid max-min estimate of a run: its own transfers, on the paths its flows took.

What a run would reach if every flow got its max-min fair share of every link it
crossed at every instant: no queues, no loss, no pause, no pacing error. The
paths are the ones the switches' hash chose in that run (``paths.json``,
fabric.measure.paths), so the estimate keeps the collisions and removes only
what congestion control and flow control do with them. The gap between a run and
its estimate is the cost of how the fabric handled contention, not of where the
flows went.

Per round (the runner runs rounds one after another), a transfer starts when the
transfers it comes ``after`` are done; its bytes are split evenly over the data
flows recorded between its two NICs in that round (its QPs; ACK flows, whose
packets are small, are left out), and each flow crosses its links at its max-min
share of the links' payload rate (link rate x the wire ceiling at the run's MTU),
each direction of a link on its own (full duplex).
Time advances to the next flow finishing, and the rates are filled again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from controllers.core.maxmin import max_min_rates
from experiments.analysis import metrics

#: A recorded flow whose packets average more than this is a data flow (ACKs are ~60 B).
DATA_PACKET_BYTES = 1000


def direction(link: str, sender: str) -> str:
    """A link's direction as a resource of its own (links are full duplex)."""
    return f"{link}>{sender}"


def data_paths(flows: Iterable[Mapping[str, Any]]) -> dict[tuple[int, str, str], list[list[str]]]:
    """(round, src ip, dst ip) -> the directed links (`direction`) of the complete data
    flows between them."""
    paths: dict[tuple[int, str, str], list[list[str]]] = defaultdict(list)
    for flow in flows:
        if flow.get("complete") and flow["packets"] and \
                flow["bytes"] / flow["packets"] > DATA_PACKET_BYTES:
            paths[(flow["round"], flow["src_ip"], flow["dst_ip"])].append(
                [direction(link, node) for link, node in zip(flow["links"], flow["nodes"])])
    return dict(paths)


def capacities(links: Iterable[tuple[str, str, str, float]]) -> dict[str, float]:
    """Both directions of every link at its rate: ``links`` (name, node a, node b, bytes/s)."""
    return {direction(name, end): rate for name, a, b, rate in links for end in (a, b)}


def round_times(transfers: Sequence[Mapping[str, Any]], paths: Mapping[int, Sequence[Sequence[str]]],
                capacity: Mapping[str, float]) -> dict[int, tuple[float, float]]:
    """Start and end (s from the round's start) of each transfer of one round under
    max-min fair rates; ``paths``: transfer id -> its flows' links; ``capacity``: link ->
    bytes/s. Raises ValueError when a transfer has no path or the dependencies loop."""
    ids = {int(t["id"]) for t in transfers}
    for t in transfers:
        if not paths.get(int(t["id"])):
            raise ValueError(f"transfer {t['id']} has no recorded path")
    waiting = {int(t["id"]): {int(a) for a in t.get("after", ()) if int(a) in ids}
               for t in transfers}
    dependents: dict[int, list[int]] = defaultdict(list)
    for tid, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(tid)
    ready = [tid for tid, deps in waiting.items() if not deps]
    size = {int(t["id"]): float(t["size"]) for t in transfers}
    times: dict[int, tuple[float, float]] = {}
    left: dict[tuple[int, int], float] = {}
    flows_left: dict[int, int] = {}
    now = 0.0

    def start_ready() -> None:
        while ready:
            tid = ready.pop()
            del waiting[tid]
            if size[tid] <= 0:
                finish(tid, now)
                continue
            times[tid] = (now, float("nan"))
            flows_left[tid] = len(paths[tid])
            for index in range(len(paths[tid])):
                left[(tid, index)] = size[tid] / len(paths[tid])

    def finish(tid: int, at: float) -> None:
        times[tid] = (times.get(tid, (at, at))[0], at)
        for dependent in dependents.get(tid, ()):
            deps = waiting[dependent]
            deps.discard(tid)
            if not deps:
                ready.append(dependent)

    start_ready()
    while left:
        flow_paths = {key: paths[key[0]][key[1]] for key in left}
        used = {link: capacity[link] for path in flow_paths.values() for link in path
                if link in capacity}
        rates = max_min_rates(flow_paths, used)
        step = min(left[key] / rates[key] for key in left)
        now += step
        for key in list(left):
            left[key] -= rates[key] * step
            if left[key] <= 1e-9 * size[key[0]]:
                del left[key]
                flows_left[key[0]] -= 1
                if not flows_left[key[0]]:
                    finish(key[0], now)
        start_ready()
    if waiting:
        raise ValueError(f"transfers {sorted(waiting)} wait on each other")
    return times


def estimate(transfers: Sequence[Mapping[str, Any]], flows: Iterable[Mapping[str, Any]],
             capacity: Mapping[str, float]) -> dict[int, float] | None:
    """Each transfer's fluid completion time (s from its round's start), every round of
    the run; None when a transfer's NIC pair has no recorded data flow in its round."""
    paths = data_paths(flows)
    rounds: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for t in transfers:
        rounds[(int(t["phase"]), int(t["iteration"]))].append(t)
    done: dict[int, float] = {}
    for number, key in enumerate(sorted(rounds), 1):
        members = rounds[key]
        by_id = {}
        for t in members:
            found = paths.get((number, t["src_ip"], t["dst_ip"]))
            if not found:
                return None
            by_id[int(t["id"])] = found
        done.update({tid: end for tid, (_, end) in round_times(members, by_id, capacity).items()})
    return done


def job_rows(transfers: Sequence[Mapping[str, Any]], done: Mapping[int, float],
             nic_mbps: float) -> list[dict[str, Any]]:
    """The estimate per (job, collective size), as the run's rows count it: the mean over
    iterations of the last transfer's end, its bus bandwidth and efficiency."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for t in transfers:
        groups[(t["job"], int(t.get("collective_size", t["size"])))].append(t)
    rows = []
    for (job, size), members in groups.items():
        ends: dict[int, float] = defaultdict(float)
        for t in members:
            ends[int(t["iteration"])] = max(ends[int(t["iteration"])], done[int(t["id"])])
        seconds = sum(ends.values()) / len(ends)
        ranks = {t["src"] for t in members} | {t["dst"] for t in members}
        rails = {t["src_rail"] for t in members} | {t["dst_rail"] for t in members}
        busbw = metrics.busbw(size, seconds, members[0]["kind"], len(ranks))
        rows.append({"job": job, "size": size, "time_ms": 1e3 * seconds,
                     "busbw_Mbps": busbw * 8 / 1e6, "bytes": sum(int(t["size"]) for t in members),
                     "efficiency": metrics.efficiency(busbw, nic_mbps, len(rails))})
    return rows
