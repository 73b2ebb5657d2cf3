"""The NIC agent with ``transport: "tcp"`` on a real fabric: delivery and line rate."""

from __future__ import annotations

import time

import pytest

from tests.emulation.test_agent import _nic, agents, net, rows  # noqa: F401  (net: fixture)

pytestmark = pytest.mark.emulation


def test_one_megabyte_over_tcp_is_delivered_at_line_rate(net, tmp_path):
    size, dst_ip = 1_000_000, _nic(net, "h5", 0).ip
    with agents(net, ["h1", "h5"], tmp_path, transport="tcp") as clients:
        clients["h1"].load([{"id": 1, "src_rail": 0, "dst_ip": dst_ip, "size": size}], [])
        clients["h5"].load([], [{"id": 1, "dst_rail": 0, "size": size}])
        start = time.time_ns() + 200_000_000
        for client in clients.values():
            client.start(start)
        deadline = time.monotonic() + 60
        while not all(client.status()["done"] for client in clients.values()):
            assert time.monotonic() < deadline, {s: c.status() for s, c in clients.items()}
            time.sleep(0.1)
        replies = {server: client.finish() for server, client in clients.items()}
    assert all(reply["transport"] == "tcp" for reply in replies.values())
    assert set(replies["h1"]["counters"].values()) == {0}
    sent = rows(tmp_path / "h1.messages.csv")[0]
    delivery = rows(tmp_path / "h5.deliveries.csv")[0]
    assert delivery["bytes"] == str(size) and delivery["dst_rail"] == "0"
    assert int(sent["start_ns"]) >= start and int(sent["acked_ns"]) >= int(delivery["last_ns"])
    seconds = (int(delivery["last_ns"]) - int(sent["start_ns"])) / 1e9
    mbps = size * 8 / seconds / 1e6
    line = net.topology.spec.nic_mbps
    assert line == 10.0
    assert abs(mbps - line) <= 0.15 * line, (mbps, seconds, sent)
