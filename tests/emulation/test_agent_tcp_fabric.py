"""The NIC agent with ``transport: "tcp"`` on a real fabric: delivery and line rate."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from fabric.agent_client import AgentClient, wait_socket
from fabric.network import Network
from tests.emulation.conftest import start_network
from tests.emulation.test_agent import _nic, rows

pytestmark = pytest.mark.emulation


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[Network]:
    """rail-2tier-small under ecmp, for this module only."""
    network = start_network("rail-2tier-small", tmp_path_factory.mktemp("agent_tcp"))
    try:
        yield network
    finally:
        network.stop()


@contextlib.contextmanager
def tcp_agents(net: Network, servers: list[str], out: Path) -> Iterator[dict[str, AgentClient]]:
    """Start and configure (transport tcp) one agent per server; stop only those PIDs."""
    out.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    clients: dict[str, AgentClient] = {}
    try:
        for server in servers:
            procs[server] = net.popen(server, [sys.executable, "-m", "fabric.agent", "--server",
                                               server, "--socket", str(out / f"{server}.sock"),
                                               "--log", str(out / f"{server}.log")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=open(out / f"{server}.stderr", "wb"),
                                      cwd=Path(__file__).resolve().parents[2])
        for server in servers:
            assert wait_socket(out / f"{server}.sock", timeout=20), \
                (out / f"{server}.stderr").read_text()
            clients[server] = AgentClient(out / f"{server}.sock")
            clients[server].configure(
                nics=[{"rail": n.rail, "ip": n.ip} for n in net.topology.nics_of(server)],
                mtu=net.topology.spec.mtu, line_mbps=net.topology.spec.nic_mbps,
                out_dir=str(out), transport="tcp")
        yield clients
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.quit()
        for proc in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server, proc in procs.items():
            assert proc.returncode == 0, (out / f"{server}.log").read_text()[-2000:]


def test_one_megabyte_over_tcp_is_delivered_at_line_rate(net, tmp_path):
    size, dst_ip = 1_000_000, _nic(net, "h5", 0).ip
    with tcp_agents(net, ["h1", "h5"], tmp_path) as clients:
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
