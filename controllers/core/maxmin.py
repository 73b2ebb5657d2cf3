"""Max-min fair rates of flows over capacitated links, by progressive filling (pure, stdlib only).

Water-filling: every unfrozen flow's rate rises together; the first link to
fill (smallest remaining capacity / unfrozen flows crossing it) freezes its
flows at that share, and a flow whose demand is below the current share
freezes at its demand. A link's share never decreases as flows freeze
(a flow frozen at v <= share leaves (R - v) / (n - 1) >= R / n), so the heap
holds one ``(key, link)`` entry per link whose key is a lower bound of its
share: the top entry is refreshed when stale and used when current. Each
bottleneck costs O(log links) and the run is about O((sum of path lengths)
log links). Links tied at the same share are popped one after the other.
"""

from __future__ import annotations

import heapq
from math import inf, isinf
from typing import Hashable, Mapping, Sequence


def max_min_rates(paths: Mapping[Hashable, Sequence[Hashable]],
                  capacity: Mapping[Hashable, float],
                  demand: Mapping[Hashable, float] | None = None) -> dict[Hashable, float]:
    """Max-min fair rate of every flow: ``paths`` flow -> the links it crosses, ``capacity`` link -> rate; ``demand`` optional per-flow cap.

    A flow with an empty path gets its demand, or ``inf`` when it has none
    (nothing limits it). A flow absent from ``demand`` (or with demand
    ``inf``) is uncapped. Raises ValueError on a negative or NaN capacity or
    demand, on a path link missing from ``capacity``, on a link repeated in
    one path and on a ``demand`` key that is not a flow. The result keeps the
    order of ``paths``.
    """
    demand = {} if demand is None else demand
    link_index = _index_links(capacity)
    _check_demand(paths, demand)
    flows = list(paths)
    flow_links = [_path_ids(flow, paths[flow], link_index) for flow in flows]
    remaining = [float(capacity[link]) for link in link_index]
    users: list[list[int]] = [[] for _ in remaining]
    for flow_id, ids in enumerate(flow_links):
        for link_id in ids:
            users[link_id].append(flow_id)
    unfrozen = [len(flow_ids) for flow_ids in users]
    rate = [inf] * len(flows)
    frozen = [False] * len(flows)
    demand_heap = []
    for flow_id, flow in enumerate(flows):
        cap = float(demand.get(flow, inf))
        if not flow_links[flow_id]:
            rate[flow_id], frozen[flow_id] = cap, True
        elif not isinf(cap):
            demand_heap.append((cap, flow_id))
    heapq.heapify(demand_heap)

    # One entry per link; its key is a lower bound of the link's share (shares only rise).
    link_heap = [(remaining[i] / unfrozen[i], i) for i in range(len(remaining)) if unfrozen[i]]
    heapq.heapify(link_heap)

    def freeze(flow_id: int, value: float) -> None:
        rate[flow_id], frozen[flow_id] = value, True
        for link_id in flow_links[flow_id]:
            remaining[link_id] -= value
            unfrozen[link_id] -= 1

    while link_heap:
        key, link_id = link_heap[0]
        if not unfrozen[link_id]:
            heapq.heappop(link_heap)
            continue
        share = max(remaining[link_id], 0.0) / unfrozen[link_id]
        if share > key:  # stale lower bound: refresh and look again
            heapq.heapreplace(link_heap, (share, link_id))
            continue
        while demand_heap and frozen[demand_heap[0][1]]:
            heapq.heappop(demand_heap)
        if demand_heap and demand_heap[0][0] <= share:
            value, flow_id = heapq.heappop(demand_heap)
            freeze(flow_id, value)
            continue
        heapq.heappop(link_heap)
        for flow_id in users[link_id]:
            if not frozen[flow_id]:
                freeze(flow_id, share)
    return dict(zip(flows, rate))


def link_loads(paths: Mapping[Hashable, Sequence[Hashable]],
               rates: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Sum of the rates of the flows crossing each link (only links some flow crosses)."""
    loads: dict[Hashable, float] = {}
    for flow, path in paths.items():
        for link in path:
            loads[link] = loads.get(link, 0.0) + rates[flow]
    return loads


def _index_links(capacity: Mapping[Hashable, float]) -> dict[Hashable, int]:
    """Link -> dense id in the order of ``capacity``; rejects negative or NaN capacities."""
    for link, value in capacity.items():
        if not value >= 0:
            raise ValueError(f"capacity[{link!r}]: must be >= 0, got {value!r}")
    return {link: i for i, link in enumerate(capacity)}


def _check_demand(paths: Mapping[Hashable, Sequence[Hashable]],
                  demand: Mapping[Hashable, float]) -> None:
    """Reject demands that are negative, NaN or of unknown flows."""
    for flow, value in demand.items():
        if flow not in paths:
            raise ValueError(f"demand[{flow!r}]: not a flow of paths")
        if not value >= 0:
            raise ValueError(f"demand[{flow!r}]: must be >= 0, got {value!r}")


def _path_ids(flow: Hashable, path: Sequence[Hashable], link_index: Mapping[Hashable, int]) -> list[int]:
    """Dense link ids of one flow's path; rejects unknown and repeated links."""
    ids = []
    for link in path:
        link_id = link_index.get(link)
        if link_id is None:
            raise ValueError(f"paths[{flow!r}]: link {link!r} has no capacity")
        ids.append(link_id)
    if len(set(ids)) != len(ids):
        raise ValueError(f"paths[{flow!r}]: repeats a link: {list(path)!r}")
    return ids
