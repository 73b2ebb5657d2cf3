"""Which servers a job gets: packed into pods (ToR-affine) or scattered at random.

The returned list is the job's rank order. ``packed`` keeps the fabric's
numbering order (h1, h2, ...), so ring neighbours share ToRs wherever
possible. ``scattered`` also returns its pick in numbering order (as a
launcher reading a sorted hostfile would); what is random is which servers
are picked, from ``random.Random(seed)``, so a seed reproduces a placement.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from topologies.model import Node, Topology

POLICIES = ("packed", "scattered")


def _number(node: Node) -> int:
    return int(node.name[1:])


def free_servers(topology: Topology, exclude: Collection[str] = frozenset()) -> list[Node]:
    """Servers not in ``exclude``, in numbering order; ValueError on unknown names."""
    servers = topology.servers()
    known = {node.name for node in servers}
    unknown = sorted(set(exclude) - known)
    if unknown:
        raise ValueError(f"placement.exclude: unknown server {unknown[0]!r} "
                         f"(servers are h1..h{len(servers)})")
    return sorted((node for node in servers if node.name not in exclude), key=_number)


def _packed(free: list[Node], servers: int) -> list[Node]:
    """The first pod that holds the whole job; else fill pods in order."""
    pods: dict[int, list[Node]] = {}
    for node in free:
        pods.setdefault(node.pod if node.pod is not None else 0, []).append(node)
    for pod in sorted(pods):
        if len(pods[pod]) >= servers:
            return pods[pod][:servers]
    return [node for pod in sorted(pods) for node in pods[pod]][:servers]


def place(topology: Topology, servers: int, policy: str = "packed", seed: int = 0,
          exclude: Collection[str] = frozenset()) -> list[str]:
    """Names of the ``servers`` servers a job runs on, in rank order."""
    if policy not in POLICIES:
        raise ValueError(f"placement.policy: must be one of {', '.join(POLICIES)}, "
                         f"got {policy!r}")
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 1:
        raise ValueError(f"placement.servers: must be an integer >= 1, got {servers!r}")
    free = free_servers(topology, exclude)
    if servers > len(free):
        excluded = len(topology.servers()) - len(free)
        raise ValueError(f"placement.servers: job needs {servers} servers, fabric "
                         f"{topology.name!r} has {len(free)} free ({excluded} excluded)")
    if policy == "packed":
        chosen = _packed(free, servers)
    else:
        chosen = sorted(random.Random(seed).sample(free, servers), key=_number)
    return [node.name for node in chosen]


def pods_of(topology: Topology, names: Collection[str]) -> set[int]:
    """The pods a set of servers spans."""
    return {topology.node(name).pod for name in names}
