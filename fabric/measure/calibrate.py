"""Calibration: does the live fabric run at the rates and queue sizes it claims?

Per link class, iperf3 (TCP) between two servers whose path's bottleneck is
that class; then a 2:1 overload of one switch port with two UDP senders:
drops must show up in that port's queue and nowhere else, and the port must
deliver its configured rate.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict, dataclass, field

from fabric.net.network import Network
from fabric.net.procs import stop_children
from fabric.net.sh import FabricError
from fabric.measure.telemetry import read_queues
from topologies import Topology

log = logging.getLogger(__name__)

TOLERANCE = 0.05
IPERF_PORT = 5201


@dataclass(frozen=True)
class LinkClassResult:
    """Configured vs measured rate of one link class."""

    link_class: str
    path: str
    configured_mbps: float
    measured_mbps: float

    @property
    def error_pct(self) -> float:
        """Signed error of the measurement, percent of configured."""
        return 100.0 * (self.measured_mbps - self.configured_mbps) / self.configured_mbps

    @property
    def ok(self) -> bool:
        """Within the fidelity tolerance (5 %)."""
        return abs(self.error_pct) <= 100 * TOLERANCE


@dataclass
class OverloadResult:
    """Two senders into one switch port."""

    port: str
    offered_ratio: float
    configured_mbps: float
    delivered_mbps: float
    drops_at_port: int
    drops_elsewhere: dict[str, int] = field(default_factory=dict)

    @property
    def error_pct(self) -> float:
        """Delivered vs port rate, percent."""
        return 100.0 * (self.delivered_mbps - self.configured_mbps) / self.configured_mbps

    @property
    def ok(self) -> bool:
        """Drops only at the port, and the port delivered its rate within 5 %."""
        return (self.drops_at_port > 0 and not self.drops_elsewhere
                and abs(self.error_pct) <= 100 * TOLERANCE)


def probe_pairs(topology: Topology) -> list[tuple[str, str, str]]:
    """(link class, source server, destination server) whose path bottleneck is that class."""
    spec = topology.spec
    servers = topology.servers()
    first_of_pod = {pod: next(s for s in servers if s.pod == pod) for pod in range(spec.pods)}
    pairs = []
    if spec.servers_per_pod >= 2:
        pairs.append(("host", servers[0].name, servers[1].name))
    if spec.tiers == 2 and spec.pods >= 2:
        pairs.append(("tor-spine", first_of_pod[0].name, first_of_pod[1].name))
    if spec.tiers == 3:
        if spec.pods_per_block >= 2:
            pairs.append(("tor-leaf", first_of_pod[0].name, first_of_pod[1].name))
        if spec.blocks >= 2:
            pairs.append(("leaf-spine", first_of_pod[0].name,
                          first_of_pod[spec.pods_per_block].name))
    return pairs


def _path_rate(topology: Topology, link_class: str) -> float:
    """Bottleneck rate of a probe path: the NIC and every fabric tier up to the class."""
    rates = [topology.spec.nic_mbps]
    if link_class != "host":
        rates.append(topology.spec.fabric_mbps)
    return min(rates)


def _iperf_server(net: Network, server: str, ip: str, port: int) -> subprocess.Popen:
    proc = net.popen(server, ["iperf3", "-s", "-1", "-B", ip, "-p", str(port)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc


def measure_tcp(net: Network, src: str, dst: str, seconds: float = 4.0) -> float:
    """iperf3 TCP goodput from src's rail-0 NIC to dst's rail-0 NIC, Mb/s."""
    dst_ip = net.topology.nics_of(dst)[0].ip
    server = _iperf_server(net, dst, dst_ip, IPERF_PORT)
    try:
        result = net.exec(src, ["iperf3", "-c", dst_ip, "-p", str(IPERF_PORT), "-J",
                                "-t", str(seconds), "-O", "1"], timeout=seconds + 30)
        if result.returncode != 0:
            raise FabricError(f"iperf3 {src}->{dst} failed: {result.stdout[-300:]}{result.stderr}")
        report = json.loads(result.stdout)
        return report["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        _stop(server)


def _stop(proc: subprocess.Popen) -> None:
    stop_children([proc], 5.0)


def calibrate_links(net: Network, seconds: float = 4.0) -> list[LinkClassResult]:
    """Measure each link class of the fabric once."""
    results = []
    for link_class, src, dst in probe_pairs(net.topology):
        measured = measure_tcp(net, src, dst, seconds)
        results.append(LinkClassResult(link_class, f"{src}->{dst}",
                                       _path_rate(net.topology, link_class), measured))
    return results


def overload_port(net: Network, seconds: float = 4.0, load: float = 0.97) -> OverloadResult:
    """Two same-ToR senders at ``load`` x line rate each into a third server's port."""
    topology = net.topology
    pod0 = [s.name for s in topology.servers() if s.pod == 0]
    if len(pod0) < 3:
        raise FabricError(f"{topology.name}: overload test needs 3 servers in a pod")
    senders, receiver = pod0[:2], pod0[2]
    nic = topology.nics_of(receiver)[0]
    port, port_ns = net.switch_intf(nic.tor, nic.tor_port), net.switch_netns(nic.tor)
    mbps = topology.spec.nic_mbps
    frame = topology.spec.mtu + 14
    payload = topology.spec.mtu - 28
    rate_bps = int(mbps * 1e6 * load * payload / frame)  # iperf3 paces payload bits
    servers = [_iperf_server(net, receiver, nic.ip, IPERF_PORT + i) for i in range(2)]
    namespaces = [port_ns] + [net.netns(s) for s in senders]
    before = {ns: read_queues(ns) for ns in namespaces}
    clients = [net.popen(src, ["iperf3", "-u", "-c", nic.ip, "-p", str(IPERF_PORT + i),
                               "-b", str(rate_bps), "-l", str(payload), "-t", str(seconds)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i, src in enumerate(senders)]
    time.sleep(1.0)  # let the queue fill, then measure the steady state
    window_start = read_queues(port_ns, {port})[port]
    time.sleep(seconds - 1.5)
    window_end = read_queues(port_ns, {port})[port]
    for proc in clients:
        try:
            proc.wait(timeout=seconds + 10)
        except subprocess.TimeoutExpired:
            _stop(proc)
    for proc in servers:
        _stop(proc)
    after = {ns: read_queues(ns) for ns in namespaces}
    delivered = 8 * (window_end.sent_bytes - window_start.sent_bytes) / (
        window_end.time - window_start.time) / 1e6
    elsewhere = {}
    for ns in namespaces:
        for dev, sample in after[ns].items():
            drops = sample.drops - before[ns].get(dev, sample).drops
            if drops and not (ns == port_ns and dev == port):
                elsewhere[f"{ns or 'root'}:{dev}"] = drops
    at_port = after[port_ns][port].drops - before[port_ns][port].drops
    return OverloadResult(port, 2 * load, mbps, delivered, at_port, elsewhere)


def as_dict(links: list[LinkClassResult], overload: OverloadResult | None) -> dict:
    """JSON-ready calibration report."""
    return {
        "links": [dict(asdict(r), error_pct=round(r.error_pct, 2), ok=r.ok) for r in links],
        "overload": None if overload is None else dict(
            asdict(overload), error_pct=round(overload.error_pct, 2), ok=overload.ok),
        "ok": all(r.ok for r in links) and (overload is None or overload.ok),
    }
