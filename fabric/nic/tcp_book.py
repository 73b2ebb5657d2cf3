"""The socket-free part of the agent's TCP transport: framing, records, dependencies.

Stream format (fabric/nic/tcp.py): per message a 16-byte header (message
id u64, size u64, network order) then ``size`` bytes; the receiver replies
the id (u64) once the whole message arrived. ``TcpBook`` keeps the records
of docs/run-folder.md and decides which messages may start (``after``
dependencies, as in RoCE mode); ``Deframer`` parses one received stream.
"""

from __future__ import annotations

import struct
from pathlib import Path

from fabric.nic.control import AgentConfig, ExpectSpec, RequestError, SendSpec
from fabric.nic.port import Clock, earliest
from fabric.nic.records import (COUNTER_NAMES, Delivery, Records, SentMessage, progress,
                                  write_csvs)

HEADER = struct.Struct("!QQ")
ACK = struct.Struct("!Q")


def frame_header(message_id: int, size: int) -> bytes:
    """The 16-byte header that precedes a message's ``size`` payload bytes."""
    return HEADER.pack(message_id, size)


class Deframer:
    """Splits one connection's byte stream into message pieces (pure; any chunking)."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._id = self._size = 0
        self._offset: int | None = None

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, int, int]]:
        """Pieces ``(id, size, offset, length)`` of message payload found in ``data``."""
        pieces, pos, end = [], 0, len(data)
        while True:
            if self._offset is None:
                take = min(HEADER.size - len(self._head), end - pos)
                self._head += data[pos:pos + take]
                pos += take
                if len(self._head) < HEADER.size:
                    return pieces
                self._id, self._size = HEADER.unpack(self._head)
                self._head.clear()
                self._offset = 0
            take = min(self._size - self._offset, end - pos)
            if take > 0 or self._size == 0:
                pieces.append((self._id, self._size, self._offset, take))
            pos += take
            self._offset += take
            if self._offset == self._size:
                self._offset = None
            elif pos == end:
                return pieces


class TcpBook:
    """Messages to send and receive, their records, and which may start now."""

    def __init__(self, server: str, config: AgentConfig, clock: Clock) -> None:
        self.server, self.config, self.clock = server, config, clock
        self.count = dict.fromkeys(COUNTER_NAMES, 0)
        self.nic_by_rail = {nic.rail: nic for nic in config.nics}
        self.records = Records()
        self.unstarted: list[SentMessage] = []
        self.pending: list[SentMessage] = []
        self.received_ids: set[int] = set()
        self.sent_done = self.received_expected = 0
        self._release_due, self._next_start = False, None

    def load(self, sends: list[SendSpec], expects: list[ExpectSpec]) -> None:
        """Add messages to send (they wait for the next ``start``) and to receive."""
        clash = [s.id for s in sends if s.id in self.records.sent]
        if clash:
            raise RequestError(f"load.send: message id {clash[0]} already loaded")
        for spec in sends:
            message = SentMessage(spec.id, spec.src_rail, spec.dst_ip, spec.size, 1, spec.after)
            self.records.sent[spec.id] = message
            self.unstarted.append(message)
        for spec in expects:
            delivery = self.records.delivered.setdefault(
                spec.id, Delivery(spec.id, spec.dst_rail, spec.size))
            if not delivery.expected:
                delivery.expected, delivery.dst_rail = True, spec.dst_rail
                self.received_expected += spec.id in self.received_ids

    def start(self, at_wall_ns: int | None) -> None:
        """Let every loaded, not yet started message go from wall-clock time ``at_wall_ns``."""
        now = self.clock.mono_ns()
        at = now if at_wall_ns is None else now + (at_wall_ns - self.clock.wall_ns())
        for message in self.unstarted:
            message.not_before = at
            self._next_start = earliest(self._next_start, at)
        self.pending += self.unstarted
        self.unstarted = []

    def counters(self) -> dict[str, int]:
        """The counters of docs/run-folder.md (all 0 over TCP: the kernel retransmits)."""
        return dict(self.count)

    def status(self) -> dict:
        """Progress of the loaded messages (the ``status`` reply without ``ok``)."""
        return progress(self.records, self.sent_done, self.received_expected, self.counters())

    def finish(self, out_dir: str | Path | None = None) -> list[Path]:
        """Write the three CSV files (``delays.csv`` stays empty); their paths."""
        return write_csvs(out_dir or self.config.out_dir, self.server, self.records)

    def on_piece(self, rail: int, mid: int, size: int, offset: int, length: int,
                 wall: int) -> bool:
        """Record payload bytes ``[offset, offset+length)`` of ``mid``; True: reply its id."""
        complete = offset + length >= size
        if mid in self.received_ids:
            return complete  # sent again after a broken connection: acknowledge again
        delivery = self.records.delivered.get(mid)
        if delivery is None:
            delivery = self.records.delivered[mid] = Delivery(mid, rail, size)
        if delivery.first_ns is None:
            delivery.first_ns = wall
        delivery.bytes, delivery.last_ns = offset + length, wall
        if complete:
            self.received_ids.add(mid)
            self.received_expected += delivery.expected
            self._release_due = True
        return complete

    def acked(self, message: SentMessage, retransmits: int) -> None:
        """The receiver confirmed ``message``: record ``acked_ns`` (once)."""
        if message.acked_ns is None:
            message.acked_ns = self.clock.wall_ns()
            message.retransmits = max(0, retransmits)
            self.sent_done += 1

    def release(self, now: int) -> list[SentMessage]:
        """The pending messages whose start time came and whose ``after`` ids were received."""
        if not self.pending or not (self._release_due or (self._next_start is not None
                                                          and now >= self._next_start)):
            return []
        self._release_due, self._next_start = False, None
        waiting, ready = [], []
        for message in self.pending:
            if message.not_before > now:
                self._next_start = earliest(self._next_start, message.not_before)
            if message.not_before > now or not all(d in self.received_ids
                                                   for d in message.after):
                waiting.append(message)
            else:
                message.released = True
                ready.append(message)
        self.pending = waiting
        return ready

    def next_start(self) -> int | None:
        """Monotonic ns at which a pending message's start time comes (None: no such)."""
        return self._next_start if self.pending else None
