"""What an agent records (sent messages, deliveries, delay samples) and its CSV files.

Columns are exactly those of docs/run-folder.md. ``packets`` of a sent
message counts every data packet transmitted for it, retransmissions
included (so the column sums to the agent's ``data_sent``); a message never
acknowledged has an empty ``acked_ns`` (and an empty ``start_ns`` if it never
started).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MESSAGE_COLUMNS = ("id", "src", "src_rail", "dst_ip", "size", "qps", "start_ns", "acked_ns",
                   "packets", "retransmits", "timeouts", "naks")
DELIVERY_COLUMNS = ("id", "dst", "dst_rail", "bytes", "first_ns", "last_ns")
DELAY_COLUMNS = ("recv_ns", "src_ip", "dst_ip", "rail", "delay_ns")
COUNTER_NAMES = ("data_sent", "data_received", "acks_sent", "acks_received", "control_sent",
                 "control_received", "cnps_received", "socket_drops",
                 # In-band control (announce mode): grants received, requests that went
                 # unanswered three times (the QP then sent at line rate).
                 "grants_received", "grant_timeouts",
                 # Fidelity of the NIC itself: wire bytes sent, and line-rate credit lost
                 # because the agent woke up late while it had packets waiting (CPU).
                 "wire_bytes_sent", "late_bytes",
                 # Sends the NIC's own qdisc dropped and reported (ENOBUFS): counted there as
                 # drops but never sent (sent again later), so conservation subtracts them.
                 "sends_refused",
                 # DCQCN: CNPs the receivers sent (fabric/nic/dcqcn.py).
                 "cnps_sent",
                 # PLB: QPs that took a new UDP source port after congested rounds.
                 "repaths",
                 # Swift: rate decreases on an echoed delay above the target (fabric/nic/swift.py).
                 "swift_cuts")


@dataclass
class SentMessage:
    """A message this agent sends, and what happened to it."""

    id: int
    src_rail: int
    dst_ip: str
    size: int
    qps: int
    after: tuple[int, ...] = ()
    hops: int = 1  # switches on the way (Swift's target)
    not_before: int | None = None  # monotonic ns from which it may start (set by start)
    released: bool = False
    start_ns: int | None = None
    acked_ns: int | None = None
    shares_left: int = 0
    packets: int = 0
    retransmits: int = 0
    timeouts: int = 0
    naks: int = 0

    @property
    def done(self) -> bool:
        """True once every QP share is acknowledged."""
        return self.acked_ns is not None


@dataclass
class Delivery:
    """A message this agent receives (expected or not), bytes delivered in order."""

    id: int
    dst_rail: int
    size: int
    expected: bool = False
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def complete(self) -> bool:
        """True once all of the message's bytes were delivered in order."""
        return self.bytes >= self.size


@dataclass
class Records:
    """Everything one agent writes at ``finish``."""

    sent: dict[int, SentMessage] = field(default_factory=dict)
    delivered: dict[int, Delivery] = field(default_factory=dict)
    delays: list[tuple[int, str, str, int, int]] = field(default_factory=list)


def _cell(value: object) -> object:
    return "" if value is None else value


def write_csvs(out_dir: Path | str, server: str, records: Records) -> list[Path]:
    """Write ``{server}.messages.csv``, ``.deliveries.csv``, ``.delays.csv``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    messages = [(m.id, server, m.src_rail, m.dst_ip, m.size, m.qps, _cell(m.start_ns),
                 _cell(m.acked_ns), m.packets, m.retransmits, m.timeouts, m.naks)
                for m in sorted(records.sent.values(), key=lambda m: m.id)]
    deliveries = [(d.id, server, d.dst_rail, d.bytes, _cell(d.first_ns), _cell(d.last_ns))
                  for d in sorted(records.delivered.values(), key=lambda d: d.id)
                  if d.bytes > 0 or d.expected]
    paths = []
    for kind, columns, rows in (("messages", MESSAGE_COLUMNS, messages),
                                ("deliveries", DELIVERY_COLUMNS, deliveries),
                                ("delays", DELAY_COLUMNS, records.delays)):
        path = out / f"{server}.{kind}.csv"
        _write(path, columns, rows)
        paths.append(path)
    return paths


def _write(path: Path, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    """Write one CSV atomically (temporary file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    temporary.replace(path)


def progress(records: Records, sent_done: int, received: int, counters: dict,
             held: int = 0) -> dict:
    """The ``status`` reply (without ``ok``) of either transport (``held``: QPs waiting
    for a grant in announce mode)."""
    send_total = len(records.sent)
    expect_total = sum(1 for d in records.delivered.values() if d.expected)
    return {"sent_done": sent_done, "send_total": send_total,
            "received": received, "expect_total": expect_total,
            "done": sent_done == send_total and received == expect_total,
            "held": held, "counters": counters}
