"""How long ovs-vswitchd's main loop takes a turn, from the stats pollgate keeps.

fabric/net/pollgate.c, preloaded into each shard's ovs-vswitchd, times every turn
of the thread that polls every port, from one poll() returning to the next poll()
call (the time poll() then sleeps is not a turn: a frame arriving then wakes it).
It counts the turns and sums their time per bucket of a log-linear histogram (8
buckets per power of two of microseconds) in a small shared file
(``Shard.turn_stats``). A frame that reaches a port waits at most
about two turns before the datapath reads it, so the turn time is how late the
datapath can be, whatever its CPU share says: a thread that never sleeps because
each turn polls a thousand ports is busy, not necessarily late.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

MAGIC = 0x34736E7275746770   # "pgturns4", as pollgate.c writes it
BUCKETS = 256
LAYOUT = struct.Struct(f"=9Q{BUCKETS}Q{BUCKETS}Q")
#: Byte offset of the ``hold`` word in the stats file (the 7th of the header).
HOLD_OFFSET = 6 * 8


def bucket_of(us: int) -> int:
    """The histogram bucket of a turn of ``us`` microseconds (pollgate.c's turn_bucket)."""
    if us < 8:
        return us
    exp = us.bit_length() - 1
    return min(8 + 8 * (exp - 3) + ((us >> (exp - 3)) & 7), BUCKETS - 1)


def bucket_upper_us(bucket: int) -> float:
    """The (exclusive) upper bound of a bucket, in microseconds."""
    if bucket < 8:
        return float(bucket + 1)
    exp, mantissa = 3 + (bucket - 8) // 8, (bucket - 8) % 8
    return float((9 + mantissa) << (exp - 3))


@dataclass(frozen=True)
class Turns:
    """Cumulative turns of one ovs-vswitchd: how many, their time, the time its pacing
    slept, and per bucket the turns (``count``) and their time (``ns``)."""

    turns: int
    busy_ns: int
    count: tuple[int, ...]
    ns: tuple[int, ...]
    paced_ns: int = 0
    min_turn_us: int = 0
    #: Turns that began while the harness held the count (`held`), not in the figures.
    held_turns: int = 0
    #: netdev classes whose receive goes through pollgate's gate (0: not patched).
    rxq_gated: int = 0

    def since(self, before: "Turns") -> "Turns":
        """The turns taken after ``before`` was read."""
        return Turns(self.turns - before.turns, self.busy_ns - before.busy_ns,
                     tuple(a - b for a, b in zip(self.count, before.count)),
                     tuple(a - b for a, b in zip(self.ns, before.ns)),
                     self.paced_ns - before.paced_ns, self.min_turn_us,
                     self.held_turns - before.held_turns, self.rxq_gated)

    def quantile_us(self, q: float) -> float:
        """Upper bound (us) of the bucket holding quantile ``q`` of the turns (0 if none)."""
        return _quantile(self.count, q)

    def time_quantile_us(self, q: float) -> float:
        """Upper bound (us) of the bucket holding quantile ``q`` of the turns' *time*: a
        frame arriving at a random moment of the thread's turns meets a turn this long
        or shorter with probability ``q`` (0 if none)."""
        return _quantile(self.ns, q)

    def wall_quantile_us(self, q: float, wall_ns: float) -> float:
        """The turn length L (a bucket's upper bound, us) such that turns longer than L took
        at most 1 - ``q`` of ``wall_ns``, the period they were taken in: a frame arriving at
        a random moment of that period meets a turn of at most L with probability >= q,
        asleep or not (0: not even 1 - q of the period was spent in turns)."""
        allowed, above = (1 - q) * wall_ns, 0
        for bucket in range(len(self.ns) - 1, -1, -1):
            above += self.ns[bucket]
            if above > allowed:
                return bucket_upper_us(bucket)
        return 0.0

    def summary(self) -> dict[str, float]:
        """What fidelity.json records of one instance's turns."""
        return {"turns": self.turns, "busy_s": round(self.busy_ns / 1e9, 3),
                "paced_s": round(self.paced_ns / 1e9, 3), "min_turn_us": self.min_turn_us,
                "held_turns": self.held_turns, "rxq_gated": self.rxq_gated,
                "mean_us": round(self.busy_ns / self.turns / 1e3, 1) if self.turns else 0.0,
                "p50_us": self.quantile_us(0.5), "p99_us": self.quantile_us(0.99),
                "time_p99_us": self.time_quantile_us(0.99), "max_us": self.quantile_us(1.0)}


def _quantile(weights: tuple[int, ...], q: float) -> float:
    total = sum(weights)
    if total <= 0:
        return 0.0
    rank, seen = q * total, 0
    for bucket, weight in enumerate(weights):
        seen += weight
        if seen >= rank and weight:
            return bucket_upper_us(bucket)
    return bucket_upper_us(len(weights) - 1)


def read_turns(path: Path) -> Turns | None:
    """The stats pollgate wrote to ``path`` (None when it has not, e.g. pollgate off)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < LAYOUT.size:
        return None
    (magic, turns, busy_ns, _max_nfds, paced_ns, min_turn_us, _hold, held_turns, rxq_gated,
     *rest) = LAYOUT.unpack_from(data)
    if magic != MAGIC:
        return None
    return Turns(turns, busy_ns, tuple(rest[:BUCKETS]), tuple(rest[BUCKETS:]), paced_ns,
                 min_turn_us, held_turns, rxq_gated)


@contextlib.contextmanager
def held(paths: Iterable[Path]) -> Iterator[None]:
    """Hold the turn count of these stats files for the block: the harness's own requests
    to ovs-vswitchd between rounds (a dump of every datapath flow) make long turns while
    no frame is in flight, which say nothing of how late the datapath was."""
    fds = []
    try:
        for path in paths:
            with contextlib.suppress(OSError):
                fds.append(os.open(path, os.O_WRONLY))
        for fd in fds:
            os.pwrite(fd, struct.pack("=Q", 1), HOLD_OFFSET)
        yield
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.pwrite(fd, struct.pack("=Q", 0), HOLD_OFFSET)
            os.close(fd)
