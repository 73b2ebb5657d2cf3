"""Collective operations as pure data: which NIC sends how many bytes to which, when.

Model (following NCCL on rail-optimized fabrics):
- A *rank* is a server; its GPU r owns NIC r (rail r). ``size`` is S, the
  bytes of one rank's buffer, as in nccl-tests. Moves inside a server are
  NVLink hops, free and instant, and never appear in a schedule.
- S is split evenly over the rails (integer split, the first rails take the
  remainder bytes) and each rail runs its own ring or exchange, the way NCCL
  opens one channel per NIC. Ring collectives therefore never leave a rail.
- A schedule is a list of steps; a step lists `Transfer`s. ``depends_on``
  names earlier transfers *into the source NIC* that must complete before a
  transfer may start (ring: step k waits for what the rank received in step
  k-1 on the same rail). Transfers without dependencies start at once.
- busbw factors are nccl-tests': AllReduce 2(n-1)/n, AllGather,
  ReduceScatter and All2All (n-1)/n, SendRecv 1, with n = ranks (servers).
  Since a rank drives all its rails, the line rate that busbw compares to is
  rails x NIC rate (see ``experiments.analysis.metrics.efficiency``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from topologies.model import Topology

ALLREDUCE, ALLGATHER, REDUCESCATTER, ALL2ALL, SENDRECV = (
    "allreduce", "allgather", "reducescatter", "all2all", "sendrecv")
KINDS = (ALLREDUCE, ALLGATHER, REDUCESCATTER, ALL2ALL, SENDRECV)


@dataclass(frozen=True)
class Transfer:
    """One message from NIC (src, src_rail) to NIC (dst, dst_rail)."""

    id: str
    src: str
    src_rail: int
    dst: str
    dst_rail: int
    size: int
    step: int
    depends_on: tuple[str, ...] = ()
    job: str = "job0"

    @property
    def crosses_rails(self) -> bool:
        """True when the message leaves its rail (goes through the spines)."""
        return self.src_rail != self.dst_rail


@dataclass(frozen=True)
class Schedule:
    """The transfers of one collective of one job, step by step."""

    kind: str
    job: str
    ranks: tuple[str, ...]
    rails: int
    size: int
    steps: tuple[tuple[Transfer, ...], ...]

    def transfers(self) -> Iterator[Transfer]:
        """Every transfer, step by step."""
        for step in self.steps:
            yield from step

    def bytes_sent(self, server: str) -> int:
        """Bytes the NICs of ``server`` put on the network over the whole collective."""
        return sum(t.size for t in self.transfers() if t.src == server)

    @property
    def busbw_factor(self) -> float:
        """The nccl-tests bus bandwidth factor of this collective."""
        return busbw_factor(self.kind, len(self.ranks))


def busbw_factor(kind: str, ranks: int) -> float:
    """nccl-tests busbw / algbw for ``kind`` over ``ranks`` ranks."""
    if ranks < 1:
        raise ValueError(f"collective.ranks: must be >= 1, got {ranks}")
    if kind == ALLREDUCE:
        return 2 * (ranks - 1) / ranks
    if kind in (ALLGATHER, REDUCESCATTER, ALL2ALL):
        return (ranks - 1) / ranks
    if kind == SENDRECV:
        return 1.0
    raise ValueError(f"collective.kind: must be one of {', '.join(KINDS)}, got {kind!r}")


def split(total: int, parts: int) -> list[int]:
    """``total`` bytes in ``parts`` near-equal integer shares, larger shares first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _check(ranks: Sequence[str], size: int, rails: int, minimum_ranks: int = 2) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"collective.size: must be an integer > 0 bytes, got {size!r}")
    if isinstance(rails, bool) or not isinstance(rails, int) or rails < 1:
        raise ValueError(f"collective.rails: must be an integer >= 1, got {rails!r}")
    if len(ranks) < minimum_ranks:
        raise ValueError(f"collective.ranks: need at least {minimum_ranks} ranks, "
                         f"got {len(ranks)}")
    duplicates = sorted({r for r in ranks if list(ranks).count(r) > 1})
    if duplicates:
        raise ValueError(f"collective.ranks: server {duplicates[0]!r} appears twice")


def _tid(job: str, step: int, src: str, src_rail: int, dst: str, dst_rail: int) -> str:
    return f"{job}:{step}:{src}.{src_rail}>{dst}.{dst_rail}"


def _ring(kind: str, ranks: Sequence[str], size: int, rails: int, job: str,
          chunk_shift: Sequence[int]) -> Schedule:
    """Ring steps; ``chunk_shift[k]`` picks which chunk rank i sends in step k."""
    _check(ranks, size, rails)
    n = len(ranks)
    if size < n * rails:
        raise ValueError(f"collective.size: must be >= ranks x rails ({n * rails}) so every "
                         f"ring chunk has a byte, got {size}")
    chunks = [split(share, n) for share in split(size, rails)]
    steps = []
    for k, shift in enumerate(chunk_shift):
        step = []
        for rail in range(rails):
            for i, src in enumerate(ranks):
                dst, prev = ranks[(i + 1) % n], ranks[(i - 1) % n]
                depends = (_tid(job, k - 1, prev, rail, src, rail),) if k else ()
                step.append(Transfer(_tid(job, k, src, rail, dst, rail), src, rail, dst, rail,
                                     chunks[rail][(i - shift) % n], k, depends, job))
        steps.append(tuple(step))
    return Schedule(kind, job, tuple(ranks), rails, size, tuple(steps))


def ring_allreduce(ranks: Sequence[str], size: int, rails: int, job: str = "job0") -> Schedule:
    """Ring AllReduce: reduce-scatter then all-gather, 2(n-1) steps of S/(n x rails) per rail."""
    n = len(ranks)
    reduce_scatter = list(range(n - 1))
    all_gather = [k - 1 for k in range(n - 1)]  # send the chunk just completed / received
    return _ring(ALLREDUCE, ranks, size, rails, job, reduce_scatter + all_gather)


def ring_reduce_scatter(ranks: Sequence[str], size: int, rails: int,
                        job: str = "job0") -> Schedule:
    """Ring ReduceScatter of an S-byte buffer: n-1 steps."""
    return _ring(REDUCESCATTER, ranks, size, rails, job, list(range(len(ranks) - 1)))


def ring_all_gather(ranks: Sequence[str], size: int, rails: int, job: str = "job0") -> Schedule:
    """Ring AllGather into an S-byte buffer: n-1 steps, each rank forwards what it got."""
    return _ring(ALLGATHER, ranks, size, rails, job, list(range(len(ranks) - 1)))


def all2all(ranks: Sequence[str], size: int, rails: int, pxn: bool = True,
            job: str = "job0") -> Schedule:
    """All2All in one step: each rank sends S/n to every other rank, spread over rails.

    The S/n for server b is split evenly over b's rails j. With ``pxn`` the
    share for (b, j) is gathered over NVLink on local GPU j and sent from NIC
    j, so it stays on rail j. Without it, every local GPU r sends its own
    1/rails of that share from NIC r straight to NIC j of b, crossing rails
    whenever r != j.
    """
    _check(ranks, size, rails)
    n = len(ranks)
    step = []
    for a, src in enumerate(ranks):
        per_peer = split(size, n)
        for b, dst in enumerate(ranks):
            if a == b:
                continue
            for dst_rail, share in enumerate(split(per_peer[b], rails)):
                pieces = [(dst_rail, share)] if pxn else list(enumerate(split(share, rails)))
                for src_rail, piece in pieces:
                    if piece:
                        step.append(Transfer(_tid(job, 0, src, src_rail, dst, dst_rail), src,
                                             src_rail, dst, dst_rail, piece, 0, (), job))
    return Schedule(ALL2ALL, job, tuple(ranks), rails, size, (tuple(step),))


def pipeline(stages: Sequence[str], size: int, rails: int, microbatches: int = 1,
             job: str = "job0") -> Schedule:
    """Pipeline Send/Recv: each microbatch of S bytes (split over rails) flows stage i -> i+1.

    Microbatch m leaves stage i at step m + i, once stage i has received it
    (compute is instant); stages send their microbatches in order.
    """
    _check(stages, size, rails)
    if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"collective.microbatches: must be an integer >= 1, got {microbatches!r}")
    shares = split(size, rails)
    steps: list[list[Transfer]] = [[] for _ in range(microbatches + len(stages) - 2)]
    for m in range(microbatches):
        for i in range(len(stages) - 1):
            k = m + i
            src, dst = stages[i], stages[i + 1]
            for rail, share in enumerate(shares):
                depends = (_tid(job, k - 1, stages[i - 1], rail, src, rail),) if i else ()
                steps[k].append(Transfer(_tid(job, k, src, rail, dst, rail), src, rail, dst,
                                         rail, share, k, depends, job))
    return Schedule(SENDRECV, job, tuple(stages), rails, size, tuple(tuple(s) for s in steps))


@dataclass(frozen=True)
class Workload:
    """Several jobs' schedules running at once on disjoint servers."""

    jobs: tuple[Schedule, ...]

    def transfers(self) -> Iterator[Transfer]:
        """Every transfer of every job."""
        for schedule in self.jobs:
            yield from schedule.transfers()

    def step(self, index: int) -> list[Transfer]:
        """Transfers of step ``index`` of every job that has one."""
        return [t for s in self.jobs if index < len(s.steps) for t in s.steps[index]]


def combine(schedules: Sequence[Schedule]) -> Workload:
    """Run jobs side by side; ValueError if two share a server or a job name."""
    owner: dict[str, str] = {}
    names: set[str] = set()
    for schedule in schedules:
        if schedule.job in names:
            raise ValueError(f"workload.jobs: job name {schedule.job!r} used twice")
        names.add(schedule.job)
        for server in schedule.ranks:
            if server in owner:
                raise ValueError(f"workload.jobs: server {server!r} is in both job "
                                 f"{owner[server]!r} and job {schedule.job!r}")
            owner[server] = schedule.job
    return Workload(tuple(schedules))


def nic_ips(topology: Topology) -> Mapping[tuple[str, int], str]:
    """(server, rail) -> NIC IP, to turn transfers into addresses."""
    return {(nic.server, nic.rail): nic.ip for nic in topology.nics}
