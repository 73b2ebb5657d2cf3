"""How long ovs-vswitchd's main loop takes a turn, from the stats pollgate keeps.

fabric/net/pollgate.c, preloaded into each shard's ovs-vswitchd, times every turn
of the thread that polls every port (from one poll() returning to the next call)
into a log2 histogram of microseconds in a small shared file
(``Shard.turn_stats``). A frame that reaches a port waits at most about two
turns before the datapath reads it, so the turn time is how late the
datapath can be, whatever its CPU share says: a thread that never sleeps
because each turn polls a thousand ports is busy, not necessarily late.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x736E727574677070   # "ppgturns", as pollgate.c writes it
BUCKETS = 32
LAYOUT = struct.Struct(f"=4Q{BUCKETS}Q")


@dataclass(frozen=True)
class Turns:
    """Cumulative turn counts of one ovs-vswitchd: how many, their time, the histogram
    (bucket i: [2^(i-1), 2^i) us; bucket 0: under 1 us)."""

    turns: int
    busy_ns: int
    hist: tuple[int, ...]

    def since(self, before: "Turns") -> "Turns":
        """The turns taken after ``before`` was read."""
        return Turns(self.turns - before.turns, self.busy_ns - before.busy_ns,
                     tuple(a - b for a, b in zip(self.hist, before.hist)))

    def quantile_us(self, q: float) -> float:
        """Upper bound (us) of the bucket holding quantile ``q`` of the turns (0 if none)."""
        if self.turns <= 0:
            return 0.0
        rank, seen = q * self.turns, 0
        for bucket, count in enumerate(self.hist):
            seen += count
            if seen >= rank and count:
                return float(2 ** bucket)
        return float(2 ** (len(self.hist) - 1))

    def summary(self) -> dict[str, float]:
        """What fidelity.json records of one instance's turns."""
        return {"turns": self.turns, "busy_s": round(self.busy_ns / 1e9, 3),
                "mean_us": round(self.busy_ns / self.turns / 1e3, 1) if self.turns else 0.0,
                "p50_us": self.quantile_us(0.5), "p99_us": self.quantile_us(0.99),
                "max_us": self.quantile_us(1.0)}


def read_turns(path: Path) -> Turns | None:
    """The stats pollgate wrote to ``path`` (None when it has not, e.g. pollgate off)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < LAYOUT.size:
        return None
    magic, turns, busy_ns, _max_nfds, *hist = LAYOUT.unpack_from(data)
    if magic != MAGIC:
        return None
    return Turns(turns, busy_ns, tuple(hist))
