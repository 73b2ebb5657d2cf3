"""The NIC agent on a real fabric: delivery, line-rate pacing, decodable RoCEv2, loss recovery."""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from fabric.nic.client import AgentClient, wait_socket
from fabric.net.network import Network
from tests.emulation.conftest import start_network

pytestmark = pytest.mark.emulation


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[Network]:
    """rail-2tier-small under ecmp, for this module only (one test changes a queue)."""
    network = start_network("rail-2tier-small", tmp_path_factory.mktemp("agent"))
    try:
        yield network
    finally:
        network.stop()


def _nic(net: Network, server: str, rail: int):
    return next(nic for nic in net.topology.nics_of(server) if nic.rail == rail)


@contextlib.contextmanager
def agents(net: Network, servers: list[str], out: Path,
           **config: object) -> Iterator[dict[str, AgentClient]]:
    """Start, configure (``config`` overrides the defaults) and finally stop one agent per
    server (only the PIDs we started)."""
    out.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    clients: dict[str, AgentClient] = {}
    spec = net.topology.spec
    try:
        for server in servers:
            procs[server] = net.popen(server, [sys.executable, "-m", "fabric.nic.agent", "--server",
                                               server, "--socket", str(out / f"{server}.sock"),
                                               "--log", str(out / f"{server}.log")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=open(out / f"{server}.stderr", "wb"),
                                      cwd=Path(__file__).resolve().parents[2])
        for server in servers:
            assert wait_socket(out / f"{server}.sock", timeout=20), \
                (out / f"{server}.stderr").read_text()
            clients[server] = AgentClient(out / f"{server}.sock")
            clients[server].configure(**{
                "nics": [{"rail": n.rail, "ip": n.ip} for n in net.topology.nics_of(server)],
                "mtu": spec.mtu, "line_mbps": spec.nic_mbps, "window_packets": 32,
                "rto_ms": 50, "ack_every": 8, "delay_sample_every": 1, "out_dir": str(out),
                "salt": 1, **config})
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


def run(clients: dict[str, AgentClient], sends: list[tuple[str, int, str, int, int, str]],
        timeout_s: float = 60) -> dict[str, dict]:
    """Load (sender, id, dst server, rail, size, dst ip) messages, start, wait, finish."""
    plan: dict[str, tuple[list, list]] = {server: ([], []) for server in clients}
    for src, mid, dst, rail, size, dst_ip in sends:
        plan[src][0].append({"id": mid, "src_rail": rail, "dst_ip": dst_ip, "size": size})
        plan[dst][1].append({"id": mid, "dst_rail": rail, "size": size})
    for server, (send, expect) in plan.items():
        clients[server].load(send, expect)
    start = time.time_ns() + 200_000_000
    for client in clients.values():
        client.start(start)
    deadline = time.monotonic() + timeout_s
    while not all(client.status()["done"] for client in clients.values()):
        assert time.monotonic() < deadline, {s: c.status() for s, c in clients.items()}
        time.sleep(0.1)
    return {server: client.finish()["counters"] for server, client in clients.items()}


def rows(path: Path) -> list[dict]:
    """The rows of a CSV file."""
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_one_megabyte_is_delivered_without_retransmissions(net, tmp_path):
    dst_ip = _nic(net, "h5", 0).ip
    with agents(net, ["h1", "h5"], tmp_path) as clients:
        counters = run(clients, [("h1", 1, "h5", 0, 1_000_000, dst_ip)])
    sent = rows(tmp_path / "h1.messages.csv")[0]
    delivery = rows(tmp_path / "h5.deliveries.csv")[0]
    assert delivery["bytes"] == "1000000"
    assert sent["retransmits"] == "0" and sent["timeouts"] == "0" and sent["naks"] == "0"
    assert counters["h1"]["data_sent"] == counters["h5"]["data_received"] == int(sent["packets"])
    assert counters["h5"]["socket_drops"] == 0
    delays = [int(row["delay_ns"]) for row in rows(tmp_path / "h5.delays.csv")]
    assert len(delays) == int(sent["packets"]) and 0 < min(delays) and max(delays) < 10**9


def test_one_nic_sends_at_line_rate(net, tmp_path):
    dst_ip = _nic(net, "h5", 1).ip
    with agents(net, ["h1", "h5"], tmp_path) as clients:
        run(clients, [("h1", 7, "h5", 1, 2_000_000, dst_ip)])
    sent = rows(tmp_path / "h1.messages.csv")[0]
    delivery = rows(tmp_path / "h5.deliveries.csv")[0]
    seconds = (int(delivery["last_ns"]) - int(sent["start_ns"])) / 1e9
    wire_bits = int(sent["packets"]) * (net.topology.spec.mtu + 14) * 8
    mbps = wire_bits / seconds / 1e6
    line = net.topology.spec.nic_mbps
    assert abs(mbps - line) <= 0.10 * line, (mbps, seconds)


def test_capture_decodes_as_rocev2_with_increasing_psns(net, tmp_path):
    from scapy.all import UDP, rdpcap
    from scapy.contrib.roce import BTH

    dst_ip = _nic(net, "h5", 0).ip
    pcap = tmp_path / "h5.pcap"
    dump = net.popen("h5", ["tcpdump", "-Z", "root", "--immediate-mode", "-i", "eth0", "-U",
                            "-w", str(pcap),
                            "udp port 4791"],
                     stdout=subprocess.DEVNULL, stderr=open(tmp_path / "tcpdump.err", "wb"))
    try:
        time.sleep(1.5)  # tcpdump needs a moment to open the interface
        with agents(net, ["h1", "h5"], tmp_path / "agents") as clients:
            run(clients, [("h1", 3, "h5", 0, 200_000, dst_ip)])
        time.sleep(1.0)  # let tcpdump write what it has read
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    data = [p for p in rdpcap(str(pcap)) if p.haslayer(BTH) and p[UDP].dport == 4791
            and p[BTH].opcode in (0, 1, 2, 4)]
    assert len(data) >= 23, (tmp_path / "tcpdump.err").read_text()  # ceil(200000 / 8932)
    psns = [p[BTH].psn for p in data]
    # First transmissions in PSN order 0..22; a busy machine may add go-back-N resends.
    assert list(dict.fromkeys(psns)) == list(range(23)), psns
    assert len({p[BTH].dqpn for p in data}) == 1
    assert {p[UDP].sport for p in data} and all(p[UDP].sport >= 49152 for p in data)


def test_tiny_switch_buffer_still_completes_with_retransmissions(net, tmp_path):
    dst = _nic(net, "h5", 0)
    port = net.switch_intf(dst.tor, dst.tor_port)
    original = next(link.buffer_bytes for link in net.topology.links
                    if {link.a.node, link.b.node} == {"h5", dst.tor} and
                    dst.tor_port in (link.a.port, link.b.port))
    subprocess.run(["tc", "-n", net.switch_netns(dst.tor), "qdisc", "replace", "dev", port,
                    "parent", "1:1", "handle", "10:",
                    "bfifo", "limit", "10000"], check=True)
    try:
        with agents(net, ["h1", "h2", "h5"], tmp_path) as clients:
            counters = run(clients, [("h1", 11, "h5", 0, 400_000, dst.ip),
                                     ("h2", 12, "h5", 0, 400_000, dst.ip)], timeout_s=120)
    finally:
        subprocess.run(["tc", "-n", net.switch_netns(dst.tor), "qdisc", "replace", "dev", port,
                    "parent", "1:1", "handle", "10:",
                        "bfifo", "limit", str(original)], check=True)
    sent = rows(tmp_path / "h1.messages.csv") + rows(tmp_path / "h2.messages.csv")
    assert all(row["acked_ns"] for row in sent)
    assert sum(int(row["retransmits"]) for row in sent) > 0
    assert {row["bytes"] for row in rows(tmp_path / "h5.deliveries.csv")} == {"400000"}
    assert counters["h5"]["data_received"] < counters["h1"]["data_sent"] + \
        counters["h2"]["data_sent"]
