"""The agent's TCP transport: framing and records (pure), then two real agents over loopback."""

from __future__ import annotations

import csv
import random
import time

import pytest

from fabric.nic import control
from fabric.nic.client import AgentClient
from fabric.nic.tcp_book import ACK, Deframer, TcpBook, frame_header
from tests.unit.fabric.test_agent_control import _spawn


class FakeClock:
    """Settable monotonic and wall clocks (wall = mono + 10**18)."""

    def __init__(self) -> None:
        self.now = 1_000

    def mono_ns(self) -> int:
        """Monotonic ns."""
        return self.now

    def wall_ns(self) -> int:
        """Wall-clock ns."""
        return self.now + 10**18


def _book(tmp_path) -> tuple[TcpBook, FakeClock]:
    config = control.parse_configure({"op": "configure", "nics": [{"rail": 0, "ip": "10.0.0.1"}],
                                      "line_mbps": 10.0, "out_dir": str(tmp_path),
                                      "transport": "tcp"})
    clock = FakeClock()
    return TcpBook("h1", config, clock), clock


def test_deframer_reassembles_any_chunking():
    sizes = {1: 5, 2: 0, 3: 70_000, 4: 1}
    stream = b"".join(frame_header(mid, size) + bytes(size) for mid, size in sizes.items())
    assert frame_header(7, 9) == bytes.fromhex("0000000000000007" "0000000000000009")
    rng = random.Random(4)
    for _ in range(50):
        deframer, seen, pos = Deframer(), {}, 0
        while pos < len(stream):
            step = rng.choice([1, 3, 16, 17, 1000, 65536])
            for mid, size, offset, length in deframer.feed(memoryview(stream)[pos:pos + step]):
                assert size == sizes[mid] and offset == seen.get(mid, 0)
                seen[mid] = offset + length
            pos += step
        assert seen == sizes
    assert Deframer().feed(stream[:15]) == []


def test_book_records_deliveries_and_releases_dependents(tmp_path):
    book, clock = _book(tmp_path)
    book.load([control.SendSpec(2, 0, "10.0.1.1", 100, after=(1,))],
              [control.ExpectSpec(1, 0, 50)])
    book.start(None)
    assert book.release(clock.now) == [] and book.status()["done"] is False
    assert book.on_piece(0, 1, 50, 0, 20, 10**18 + 5) is False
    assert book.release(clock.now) == []
    assert book.on_piece(0, 1, 50, 20, 30, 10**18 + 9) is True
    assert book.on_piece(0, 1, 50, 0, 50, 10**18 + 20) is True  # resent: ack again, no change
    ready = book.release(clock.now)
    assert [m.id for m in ready] == [2] and ready[0].released
    assert book.status()["received"] == 1 and book.status()["sent_done"] == 0
    clock.now += 500
    ready[0].start_ns = 10**18 + 1_000
    book.acked(ready[0], 3)
    status = book.status()
    assert status["done"] and set(status["counters"].values()) == {0}
    book.finish()
    with open(tmp_path / "h1.deliveries.csv") as handle:
        delivery = next(csv.DictReader(handle))
    assert delivery == {"id": "1", "dst": "h1", "dst_rail": "0", "bytes": "50",
                        "first_ns": str(10**18 + 5), "last_ns": str(10**18 + 9)}
    with open(tmp_path / "h1.messages.csv") as handle:
        sent = next(csv.DictReader(handle))
    assert sent["acked_ns"] == str(10**18 + 1_500) and sent["retransmits"] == "3"
    assert sent["packets"] == "0" and sent["qps"] == "1"
    assert (tmp_path / "h1.delays.csv").read_text().strip() == ",".join(
        ("recv_ns", "src_ip", "dst_ip", "rail", "delay_ns"))
    with pytest.raises(control.RequestError, match="already loaded"):
        book.load([control.SendSpec(2, 0, "10.0.1.1", 1)], [])


def test_two_tcp_agents_exchange_messages_over_loopback(tmp_path):
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    ips = {"h1": f"{net}.2", "h5": f"{net}.3"}
    procs = {name: _spawn(tmp_path, name) for name in ips}
    try:
        clients = {name: AgentClient(sock) for name, (_, sock) in procs.items()}
        for name, ip in ips.items():
            clients[name].configure(nics=[{"rail": 0, "ip": ip}], line_mbps=100.0,
                                    out_dir=str(tmp_path / "out"), transport="tcp")
        clients["h1"].load(send=[{"id": 1, "src_rail": 0, "dst_ip": ips["h5"], "size": 3_000_000},
                                 {"id": 3, "src_rail": 0, "dst_ip": ips["h5"], "size": 10}],
                           expect=[{"id": 2, "dst_rail": 0, "size": 300_000}])
        clients["h5"].load(send=[{"id": 2, "src_rail": 0, "dst_ip": ips["h1"], "size": 300_000,
                                  "after": [1]}],
                           expect=[{"id": 1, "dst_rail": 0, "size": 3_000_000},
                                   {"id": 3, "dst_rail": 0, "size": 10}])
        start = time.time_ns() + 100_000_000
        for client in clients.values():
            client.start(start)
        deadline = time.monotonic() + 20
        while not all(c.status()["done"] for c in clients.values()):
            assert time.monotonic() < deadline, [c.status() for c in clients.values()]
            time.sleep(0.05)
        assert clients["h1"].set_rate(ips["h5"], 5.0)["qps"] == 1
        replies = {name: client.finish() for name, client in clients.items()}
        assert replies["h1"]["transport"] == "tcp"
        assert set(replies["h1"]["counters"].values()) == {0}
        out = tmp_path / "out"
        with open(out / "h1.messages.csv") as handle:
            sent = {row["id"]: row for row in csv.DictReader(handle)}
        with open(out / "h5.deliveries.csv") as handle:
            got = {row["id"]: row for row in csv.DictReader(handle)}
        with open(out / "h5.messages.csv") as handle:
            second = next(csv.DictReader(handle))
        assert got["1"]["bytes"] == "3000000" and got["3"]["bytes"] == "10"
        assert int(sent["1"]["start_ns"]) >= start
        assert int(sent["1"]["acked_ns"]) >= int(got["1"]["last_ns"])
        assert int(second["start_ns"]) >= int(got["1"]["last_ns"]) and second["acked_ns"]
        for name, client in clients.items():
            client.quit()
            assert procs[name][0].wait(timeout=10) == 0
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def test_ack_is_the_message_id():
    assert ACK.pack(5) == (5).to_bytes(8, "big")
