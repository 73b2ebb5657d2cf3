"""Control protocol: request validation, and real agent processes talking over loopback.

Two agents bind distinct 127.x.y.z addresses (port 4791 needs no root), so the
whole process (control socket, UDP sockets, event loop, files) runs unprivileged.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.nic import control
from fabric.nic.agent import Agent
from fabric.nic.client import AgentClient, AgentError, wait_socket

CONFIG = {"op": "configure", "nics": [{"rail": 0, "ip": "10.0.0.1"}], "line_mbps": 10.0,
          "out_dir": "/tmp/x"}


def test_configure_defaults_and_strictness():
    config = control.parse_configure(dict(CONFIG))
    assert config.mtu == 9000 and config.window_packets == 32 and config.transport == "roce"
    with pytest.raises(control.RequestError, match="unknown key.*colour"):
        control.parse_configure({**CONFIG, "colour": 1})
    with pytest.raises(control.RequestError, match="missing line_mbps"):
        control.parse_configure({k: v for k, v in CONFIG.items() if k != "line_mbps"})
    with pytest.raises(control.RequestError, match=r"nics\[0\].ip: not an IPv4"):
        control.parse_configure({**CONFIG, "nics": [{"rail": 0, "ip": "h1"}]})
    with pytest.raises(control.RequestError, match="mtu: must be"):
        control.parse_configure({**CONFIG, "mtu": 50})
    with pytest.raises(control.RequestError, match="line_mbps: must be a number > 0"):
        control.parse_configure({**CONFIG, "line_mbps": 0})
    with pytest.raises(control.RequestError, match="transport"):
        control.parse_configure({**CONFIG, "transport": "ib"})
    with pytest.raises(control.RequestError, match="unique"):
        control.parse_configure({**CONFIG, "nics": [{"rail": 0, "ip": "10.0.0.1"}] * 2})
    assert config.datapath == "compiled"
    assert control.parse_configure({**CONFIG, "datapath": "python"}).datapath == "python"
    with pytest.raises(control.RequestError, match="configure.datapath: must be one of compiled"):
        control.parse_configure({**CONFIG, "datapath": "rust"})


def test_load_validation():
    ok = {"op": "load", "send": [{"id": 1, "src_rail": 0, "dst_ip": "10.0.1.1", "size": 10,
                                  "after": [3], "qps": 2}],
          "expect": [{"id": 3, "dst_rail": 0, "size": 5}]}
    sends, expects = control.parse_load(ok, {0})
    assert sends[0].after == (3,) and sends[0].qps == 2 and expects[0].size == 5
    with pytest.raises(control.RequestError, match="no NIC on rail 1"):
        control.parse_load({**ok, "send": [{**ok["send"][0], "src_rail": 1}]}, {0})
    with pytest.raises(control.RequestError, match="size: must be"):
        control.parse_load({**ok, "send": [{**ok["send"][0], "size": 0}]}, {0})
    with pytest.raises(control.RequestError, match="duplicate"):
        control.parse_load({**ok, "expect": ok["expect"] * 2}, {0})
    with pytest.raises(control.RequestError, match="id: must be an integer"):
        control.parse_load({**ok, "expect": [{"id": "a", "dst_rail": 0, "size": 1}]}, {0})


def test_bad_requests_get_errors_from_the_agent(tmp_path):
    agent = Agent("h1", tmp_path / "h1.sock")
    assert agent.handle_line(b"{nope")["ok"] is False
    assert "op: must be one of" in agent.handle_line(b'{"op": "dance"}')["error"]
    assert "configure first" in agent.handle_line(b'{"op": "status"}')["error"]
    assert "configure first" in agent.handle_line(b'{"op": "load", "send": []}')["error"]
    assert "start.at_ns" in agent.handle_line(b'{"op": "start", "at_ns": "soon"}')["error"]
    assert agent.handle_line(b'{"op": "quit"}') == {"ok": True}
    agent.close()


# -- real processes over loopback --------------------------------------------------------
def _spawn(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    sock = tmp_path / f"{name}.sock"
    proc = subprocess.Popen([sys.executable, "-m", "fabric.nic.agent", "--server", name,
                             "--socket", str(sock), "--log", str(tmp_path / f"{name}.log")],
                            cwd=Path(__file__).resolve().parents[3],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_socket(sock, timeout=15):
        proc.kill()
        raise AssertionError(f"{name}: no socket; {proc.stderr.read().decode()}")
    return proc, sock


@pytest.fixture
def two_agents(tmp_path):
    """Two agent processes; their loopback IPs; they are stopped afterwards."""
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    procs = {}
    try:
        for name in ("h1", "h5"):
            procs[name] = _spawn(tmp_path, name)
        yield procs, (f"{net}.2", f"{net}.3")
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.parametrize("datapath", control.DATAPATHS)
def test_two_agent_processes_exchange_messages(tmp_path, two_agents, datapath):
    procs, (ip1, ip5) = two_agents
    clients = {name: AgentClient(sock) for name, (_, sock) in procs.items()}
    for name, ip in (("h1", ip1), ("h5", ip5)):
        sock = procs[name][1]
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        clients[name].configure(nics=[{"rail": 0, "ip": ip}], line_mbps=200.0, mtu=9000,
                                window_packets=32, rto_ms=50, ack_every=8,
                                delay_sample_every=4, out_dir=str(tmp_path / "out"), salt=3,
                                datapath=datapath)
    with pytest.raises(AgentError, match="already configured"):
        clients["h1"].configure(nics=[{"rail": 0, "ip": ip1}], line_mbps=1.0, out_dir="x")
    clients["h1"].load(send=[{"id": 1, "src_rail": 0, "dst_ip": ip5, "size": 1_000_000}],
                       expect=[{"id": 2, "dst_rail": 0, "size": 300_000}])
    clients["h5"].load(send=[{"id": 2, "src_rail": 0, "dst_ip": ip1, "size": 300_000,
                              "after": [1], "qps": 2}],
                       expect=[{"id": 1, "dst_rail": 0, "size": 1_000_000}])
    start = time.time_ns() + 100_000_000
    for client in clients.values():
        client.start(start)
    deadline = time.monotonic() + 20
    while not all(c.status()["done"] for c in clients.values()):
        assert time.monotonic() < deadline, [c.status() for c in clients.values()]
        time.sleep(0.05)
    assert clients["h1"].set_rate(ip5, 5.0)["qps"] == 1
    replies = {name: client.finish() for name, client in clients.items()}
    counters = replies["h1"]["counters"]
    assert set(counters) == {"data_sent", "data_received", "acks_sent", "acks_received",
                             "control_sent", "control_received", "cnps_received",
                             "socket_drops", "wire_bytes_sent", "late_bytes",
                             "grants_received", "grant_timeouts", "sends_refused", "cnps_sent", "repaths",
                             "swift_cuts"}
    assert counters["wire_bytes_sent"] >= counters["data_sent"] * 1000
    assert counters["data_sent"] >= 112 and counters["acks_received"] > 0
    assert replies["h5"]["counters"]["data_received"] >= 112
    out = tmp_path / "out"
    with open(out / "h1.messages.csv") as handle:
        sent = list(csv.DictReader(handle))
    assert sent[0]["id"] == "1" and int(sent[0]["start_ns"]) >= start
    with open(out / "h5.messages.csv") as handle:
        second = next(csv.DictReader(handle))
    with open(out / "h5.deliveries.csv") as handle:
        first = next(csv.DictReader(handle))
    assert first["bytes"] == "1000000" and second["qps"] == "2"
    assert int(second["start_ns"]) >= int(first["last_ns"])
    with open(out / "h5.delays.csv") as handle:
        delays = list(csv.DictReader(handle))
    assert delays and all(0 < int(row["delay_ns"]) < 1_000_000_000 for row in delays)
    for name, client in clients.items():
        client.quit()
        proc, sock = procs[name]
        assert proc.wait(timeout=10) == 0
        assert not sock.exists()


def test_agent_survives_bad_requests_and_exits_cleanly_on_sigterm(tmp_path):
    proc, sock = _spawn(tmp_path, "h3")
    try:
        client = AgentClient(sock)
        with pytest.raises(AgentError, match="configure first"):
            client.status()
        with pytest.raises(AgentError, match="cannot open UDP sockets"):
            client.configure(nics=[{"rail": 0, "ip": "192.0.2.77"}], line_mbps=1.0,
                             out_dir=str(tmp_path))
        raw = client._connect()
        raw.sendall(b"not json\n")
        assert json.loads(raw.recv(4096))["ok"] is False
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0
    assert not sock.exists()
    assert "SIGTERM" in (tmp_path / "h3.log").read_text()
